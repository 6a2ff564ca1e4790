"""The SMS worker: outbox rows -> texts through the fake Twilio API (real HTTP).

The store is a real migrated database of each backend; the twilio SDK is the
real one; only Twilio is faked (``tests.fakes.twilio_api``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from channels.sms_worker import OPTED_OUT, SmsWorker
from channels.twilio_api import MAX_SMS_CHARS, TwilioSender
from crm_store.db import make_session_factory
from crm_store.models import OutboxMessage, utcnow
from crm_store.services import outbound
from crm_store.services.choices import choice_payload
from crm_store.services.consents import set_sms_consent
from crm_store.services.notifier import Notifier
from tests.fakes.twilio_api import FakeTwilioApi

FROM = "+3197010000000"
BUTTONS = [{"title": "Yes", "payload": "/affirm"}, {"title": "No", "payload": "/deny"}]


@pytest.fixture()
def api() -> Iterator[FakeTwilioApi]:
    with FakeTwilioApi() as fake:
        yield fake


@pytest.fixture()
def store(empty_engine: Engine) -> Iterator[sessionmaker]:
    """A new migrated database; its connections are closed after the test."""
    yield make_session_factory(empty_engine)
    empty_engine.dispose()


def worker_for(store: sessionmaker, api: FakeTwilioApi, **options: Any) -> SmsWorker:
    sender = TwilioSender(
        api.account_sid,
        api.auth_token,
        FROM,
        api.url,
        max_attempts=options.pop("sender_attempts", 2),
        base_delay=0.01,
        max_delay=0.05,
    )
    options = {"base_delay": 0.01, "max_delay": 0.02, **options}
    settings = SimpleNamespace(database_url="unused")
    return SmsWorker(settings, session_factory=store, sender=sender, **options)


def queue(store: sessionmaker, key: str, text: str, **extra: Any) -> int:
    channel = key.split(":", 1)[0]
    with store.begin() as session:
        return outbound.queue_address_message(
            session,
            tracker_key=key,
            channel=channel,
            recipient=key,
            text=text,
            author="agent",
            purpose="agent_reply",
            **extra,
        ).id


def code(store: sessionmaker, phone: str, body: str) -> int:
    with store.begin() as session:
        return (
            Notifier()
            .notify(
                session,
                customer_id=None,
                channel="sms",
                recipient=phone,
                purpose="login_code",
                subject=None,
                body=body,
            )
            .id
        )


def row(store: sessionmaker, message_id: int) -> OutboxMessage:
    with store() as session:
        found = session.get(OutboxMessage, message_id)
        assert found is not None
        return found


def come_due(store: sessionmaker, message_id: int) -> None:
    with store.begin() as session:
        session.get(OutboxMessage, message_id).next_attempt_at = None


def test_a_conversation_message_goes_out_with_numbered_choices(
    store: sessionmaker, api: FakeTwilioApi
) -> None:
    phone = "+31612345001"
    key = f"sms:{phone}"
    message_id = queue(store, key, "Shall I cancel order A10001?", buttons=BUTTONS)
    worker = worker_for(store, api)
    assert worker.deliver_due_now() == 1
    [sent] = api.messages(to=phone)
    assert sent["From"] == FROM
    assert sent["Body"] == (
        "Shall I cancel order A10001?\n\nReply with a number:\n1. Yes\n2. No"
    )
    assert row(store, message_id).status == "sent"
    with store() as session:  # the customer's "2" will be understood
        assert choice_payload(session, tracker_key=key, text="2") == "/deny"
    assert worker.deliver_due_now() == 0  # nothing is sent twice
    assert len(api.messages()) == 1


def test_a_one_time_code_of_the_notifier_is_delivered(
    store: sessionmaker, api: FakeTwilioApi
) -> None:
    phone = "+31612345002"
    entry = code(store, phone, "Your Northwind Goods code is 482913.")
    worker_for(store, api).deliver_due_now()
    [sent] = api.messages(to=phone)
    assert sent["Body"] == "Your Northwind Goods code is 482913."
    assert row(store, entry).status == "sent"


def test_an_opted_out_number_gets_nothing_while_others_do(
    store: sessionmaker, api: FakeTwilioApi
) -> None:
    stopped, other = "+31612345003", "+31612345004"
    with store.begin() as session:
        set_sms_consent(session, phone=stopped, granted=False, source="sms_stop")
    refused = code(store, stopped, "Your code is 111111.")
    agent = queue(store, f"sms:{stopped}", "An agent writes.")
    delivered = code(store, other, "Your code is 222222.")
    worker = worker_for(store, api)
    assert worker.deliver_due_now() == 1
    assert api.messages(to=stopped) == []
    assert [m["Body"] for m in api.messages(to=other)] == ["Your code is 222222."]
    for message_id in (refused, agent):
        failed = row(store, message_id)
        assert (failed.status, failed.last_error) == ("failed", OPTED_OUT)
    assert row(store, delivered).status == "sent"
    with store() as session:
        [shown] = outbound.failed_deliveries(session, tracker_key=f"sms:{stopped}")
    assert shown.id == agent
    # START again: texts flow.
    with store.begin() as session:
        set_sms_consent(session, phone=stopped, granted=True, source="sms_start")
    code(store, stopped, "Your code is 333333.")
    worker.deliver_due_now()
    assert [m["Body"] for m in api.messages(to=stopped)] == ["Your code is 333333."]


def test_server_errors_are_retried_with_back_off_then_failed_for_agents(
    store: sessionmaker, api: FakeTwilioApi
) -> None:
    phone = "+31612345005"
    key = f"sms:{phone}"
    message_id = queue(store, key, "Your refund is on its way.")
    api.fail_next(500, times=6)
    worker = worker_for(
        store, api, sender_attempts=2, max_attempts=3, base_delay=30, max_delay=60
    )
    assert worker.deliver_due_now() == 0
    first = row(store, message_id)
    assert first.status == "pending" and first.attempts == 1
    assert first.last_error == "HTTP 500, Twilio error 20500 (after 2 attempts)"
    assert first.next_attempt_at > utcnow() + dt.timedelta(seconds=20)
    assert worker.deliver_due_now() == 0  # not due before the back-off passed
    assert len(api.records()) == 2
    for _ in range(2):
        come_due(store, message_id)
        worker.deliver_due_now()
    final = row(store, message_id)
    assert final.status == "failed" and final.attempts == 3
    assert len(api.records()) == 6 and api.messages() == []
    with store() as session:
        [failed] = outbound.failed_deliveries(session, tracker_key=key)
    assert failed.id == message_id and "20500" in (failed.last_error or "")


def test_an_unsubscribed_recipient_at_twilio_is_final_at_once(
    store: sessionmaker, api: FakeTwilioApi
) -> None:
    message_id = code(store, "+31612345006", "Your code is 444444.")
    api.fail_next(400, code=21610)
    worker_for(store, api).deliver_due_now()
    final = row(store, message_id)
    assert final.status == "failed" and final.attempts == 1
    assert "21610" in final.last_error
    assert len(api.records()) == 1


def test_too_many_requests_is_retried(store: sessionmaker, api: FakeTwilioApi) -> None:
    phone = "+31612345007"
    message_id = code(store, phone, "Your code is 555555.")
    api.fail_next(429, retry_after=0)
    worker_for(store, api).deliver_due_now()
    assert [c.status for c in api.records()] == [429, 201]
    assert row(store, message_id).status == "sent"


def test_a_voice_callers_agent_reply_is_texted_without_choices(
    store: sessionmaker, api: FakeTwilioApi
) -> None:
    phone = "+31612345008"
    message_id = queue(store, f"voice:{phone}", "We'll call you back.", buttons=BUTTONS)
    worker_for(store, api).deliver_due_now()
    [sent] = api.messages(to=phone)
    assert sent["Body"] == "We'll call you back."
    assert row(store, message_id).status == "sent"


def test_a_long_message_goes_out_in_parts(
    store: sessionmaker, api: FakeTwilioApi
) -> None:
    phone = "+31612345009"
    text = "\n\n".join(["Here is what we know about your order. " * 20] * 5)
    message_id = queue(store, f"sms:{phone}", text[:4000])
    worker_for(store, api).deliver_due_now()
    bodies = [m["Body"] for m in api.messages(to=phone)]
    assert len(bodies) == 3 and all(len(b) <= MAX_SMS_CHARS for b in bodies)
    assert row(store, message_id).status == "sent"


def test_a_row_without_a_valid_number_fails_at_once(
    store: sessionmaker, api: FakeTwilioApi
) -> None:
    message_id = code(store, "not-a-number", "Your code is 666666.")
    worker_for(store, api).deliver_due_now()
    final = row(store, message_id)
    assert final.status == "failed" and final.last_error.startswith("not sendable")
    assert api.records() == []


def test_without_twilio_settings_texts_wait_in_the_outbox(
    store: sessionmaker,
) -> None:
    message_id = code(store, "+31612345010", "Your code is 777777.")
    settings = SimpleNamespace(
        database_url="unused",
        twilio_account_sid="AC" + "1" * 32,
        twilio_auth_token=SecretStr("token"),
        twilio_from_number=None,
        twilio_api_url="https://api.twilio.com",
    )
    worker = SmsWorker(settings, session_factory=store)
    assert worker.sender is None
    assert worker.deliver_due_now() == 0
    waiting = row(store, message_id)
    assert waiting.status == "pending" and waiting.attempts == 0


def test_the_settings_build_a_sender_on_the_configured_api(
    store: sessionmaker, api: FakeTwilioApi
) -> None:
    phone = "+31612345011"
    code(store, phone, "Your code is 888888.")
    settings = SimpleNamespace(
        database_url="unused",
        twilio_account_sid=api.account_sid,
        twilio_auth_token=SecretStr(api.auth_token),
        twilio_from_number=FROM,
        twilio_api_url=api.url,
    )
    assert SmsWorker(settings, session_factory=store).deliver_due_now() == 1
    assert [m["From"] for m in api.messages(to=phone)] == [FROM]


def test_two_workers_send_each_message_once(
    store: sessionmaker, api: FakeTwilioApi
) -> None:
    phone = "+31612345012"
    ids = [code(store, phone, f"message {i}") for i in range(10)]
    workers = [worker_for(store, api) for _ in range(2)]
    barrier = threading.Barrier(2)

    def run(worker: SmsWorker) -> None:
        barrier.wait()
        worker.deliver_due_now()

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(w.sent for w in workers) == 10
    assert sorted(m["Body"] for m in api.messages(to=phone)) == sorted(
        f"message {i}" for i in range(10)
    )
    assert all(row(store, i).status == "sent" for i in ids)


def test_wake_delivers_without_waiting_for_the_poll(
    store: sessionmaker, api: FakeTwilioApi
) -> None:
    phone = "+31612345013"
    worker = worker_for(store, api, poll_seconds=30)

    async def scenario() -> None:
        await worker.start()
        await asyncio.sleep(0.2)  # the first round found nothing
        code(store, phone, "Your code is 999999.")
        worker.wake()
        for _ in range(100):
            if api.messages(to=phone):
                break
            await asyncio.sleep(0.05)
        await worker.stop()

    asyncio.run(scenario())
    assert len(api.messages(to=phone)) == 1
