"""The console's courier sends agent messages to Telegram (fake Bot API, real HTTP)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from console.courier import Courier
from crm_settings import Settings
from crm_store.db import make_session_factory
from crm_store.models import OutboxMessage
from crm_store.services import outbound
from crm_store.services.conversations import open_conversation
from tests.fakes.telegram_api import FakeTelegramApi

SECRET = "c" * 40
BUTTONS = [{"title": "Yes", "payload": "/affirm"}]


@pytest.fixture()
def api() -> Iterator[FakeTelegramApi]:
    fake = FakeTelegramApi().start()
    yield fake
    fake.stop()


@pytest.fixture()
def factory(empty_engine: Engine) -> sessionmaker:
    return make_session_factory(empty_engine)


def courier_for(api: FakeTelegramApi, factory: sessionmaker, **options) -> Courier:
    settings = Settings(
        rasa_internal_url="http://127.0.0.1:9",
        console_secret=SECRET,
        telegram_bot_token=api.token,
        telegram_api_url=api.url,
    )
    return Courier(settings, session_factory=factory, **options)


def telegram_conversation(factory: sessionmaker, user_id: int) -> str:
    with factory.begin() as session:
        return open_conversation(
            session,
            conversation_id=f"cv_{uuid.uuid4().hex}",
            channel="telegram",
            tracker_key=f"telegram:{user_id}",
        ).id


def queue(factory: sessionmaker, conversation_id: str, text: str, **kw) -> int:
    with factory.begin() as session:
        return outbound.queue_conversation_message(
            session,
            conversation_id=conversation_id,
            text=text,
            author="agent",
            purpose="agent_reply",
            **kw,
        ).id


def statuses(factory: sessionmaker, ids: list[int]) -> list[tuple[str, int]]:
    with factory() as session:
        rows = session.execute(
            select(OutboxMessage)
            .where(OutboxMessage.id.in_(ids))
            .order_by(OutboxMessage.id)
        ).scalars()
        return [(r.status, r.attempts) for r in rows]


async def test_agent_messages_reach_the_telegram_chat_once_in_order(
    api: FakeTelegramApi, factory: sessionmaker
) -> None:
    conversation = telegram_conversation(factory, 555101)
    ids = [
        queue(factory, conversation, "Hi, this is Sam (agent).", buttons=BUTTONS),
        queue(factory, conversation, "Your parcel_is *on* its way."),
    ]
    courier = courier_for(api, factory)
    try:
        assert await courier.deliver("telegram:555101") == 2
        assert await courier.deliver("telegram:555101") == 0
    finally:
        await courier.aclose()
    sent = api.delivered("sendMessage")
    assert [str(m["chat_id"]) for m in sent] == ["555101", "555101"]
    assert api.texts() == ["Hi, this is Sam (agent).", "Your parcel_is *on* its way."]
    keyboard = sent[0]["reply_markup"]["inline_keyboard"]
    assert keyboard == [[{"text": "Yes", "callback_data": "/affirm"}]]
    assert statuses(factory, ids) == [("sent", 0), ("sent", 0)]


async def test_a_blocked_bot_fails_at_once_and_keeps_the_rest(
    api: FakeTelegramApi, factory: sessionmaker
) -> None:
    conversation = telegram_conversation(factory, 555102)
    ids = [queue(factory, conversation, f"message {n}") for n in range(2)]
    api.fail_next(
        "sendMessage", 403, description="Forbidden: bot was blocked by the user"
    )
    courier = courier_for(api, factory)
    try:
        assert await courier.deliver("telegram:555102") == 0
    finally:
        await courier.aclose()
    # A final refusal gives up the messages it was given; nothing is resent.
    assert statuses(factory, ids) == [("failed", 1), ("failed", 1)]
    with factory() as session:
        [first, _] = outbound.failed_deliveries(session, conversation_id=conversation)
    assert "blocked" in (first.last_error or "")


async def test_server_errors_are_retried_with_back_off_until_delivered(
    api: FakeTelegramApi, factory: sessionmaker
) -> None:
    conversation = telegram_conversation(factory, 555103)
    [message] = [queue(factory, conversation, "Still there?")]
    # The sender's own tries (3) fail, then the courier's retry gets through.
    api.fail_next("sendMessage", 500, times=3)
    courier = courier_for(api, factory, base_delay=0.05, max_delay=0.1)
    try:
        assert await courier.deliver("telegram:555103") == 0
        assert statuses(factory, [message]) == [("pending", 1)]
        await courier.retries_done()
    finally:
        await courier.aclose()
    assert statuses(factory, [message]) == [("sent", 1)]
    assert api.texts() == ["Still there?"]


async def test_without_a_token_telegram_messages_fail_visibly_after_retries(
    factory: sessionmaker,
) -> None:
    conversation = telegram_conversation(factory, 555104)
    message = queue(factory, conversation, "Hello")
    settings = Settings(rasa_internal_url="http://127.0.0.1:9", console_secret=SECRET)
    courier = Courier(
        settings, session_factory=factory, max_attempts=2, base_delay=0.01
    )
    try:
        await courier.deliver("telegram:555104")
        await courier.retries_done()
    finally:
        await courier.aclose()
    assert statuses(factory, [message]) == [("failed", 2)]
    with factory() as session:
        [failed] = outbound.failed_deliveries(session, conversation_id=conversation)
    assert "TELEGRAM_BOT_TOKEN" in (failed.last_error or "")
