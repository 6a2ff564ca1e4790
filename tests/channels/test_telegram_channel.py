"""The Telegram channel over real HTTP: Sanic on a free port, the fake Bot API, SQLite.

Rasa's agent is a recorder that answers through the output channel Rasa hands
it; the channel, Rasa's ``register``, Sanic, python-telegram-bot and the store
(receipts, failed deliveries) are the real ones; only Telegram is faked.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from rasa.core.channels.channel import UserMessage, register
from sanic import Sanic
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from channels.rest import TOO_LONG_NOTICE
from channels.telegram import (
    HELP_TEXT,
    PRIVACY_TEXT,
    SECRET_HEADER,
    UNSUPPORTED_TEXT,
    TelegramInput,
)
from channels.telegram_sender import MAX_MESSAGE_CHARS
from crm_store.db import make_session_factory
from crm_store.models import ChannelReceipt
from crm_store.services.outbound import failed_deliveries
from tests.fakes.telegram_api import (
    BOT_USERNAME,
    MEDIA,
    FakeTelegramApi,
    callback_update,
    media_update,
    message_update,
    text_update,
)

SECRET = "webhook_secret-0123456789"
MAX_CHARS = 200
MAX_REQUEST = 8192
GROUP = -100555
BUTTONS = [{"title": "Yes", "payload": "/affirm"}, {"title": "No", "payload": "/deny"}]
MARKDOWN = "Total: 9.99 (incl. VAT)! *Thanks* _a_ [b] ~c~ `d` >e #f +g -h =i |j {k} \\"
LONG = ("All our answers are short, this one is not. " * 20 + "\n\n") * 6
_ids = itertools.count(int(uuid.uuid4().int % 10**6) * 1000)


def new_id() -> int:
    """An update/user id not used by any other test on the shared store."""
    return next(_ids)


@dataclass
class RecordingAgent:
    """Stands in for Rasa's agent: keeps each message and answers through its output."""

    messages: list[UserMessage] = field(default_factory=list)

    async def handle_message(self, message: UserMessage) -> None:
        self.messages.append(message)
        out, to = message.output_channel, message.sender_id
        if message.text == "fail":
            raise RuntimeError("the turn failed")
        if message.text == "buttons":
            await out.send_text_with_buttons(to, "Pick one", BUTTONS)
        elif message.text == "markdown":
            await out.send_text_message(to, MARKDOWN)
        elif message.text == "long":
            await out.send_text_message(to, LONG)
        elif message.text == "two answers":
            await out.send_text_message(to, "first answer")
            await out.send_text_message(to, "second answer")
        else:
            await out.send_text_message(to, f"got {len(message.text)} characters")


@dataclass
class Hook:
    """Posts to the webhook of one running server."""

    url: str
    agent: RecordingAgent
    http: aiohttp.ClientSession

    async def post(
        self, body: Any, *, raw: bytes | None = None, secret: str | None = SECRET
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers[SECRET_HEADER] = secret
        data = raw if raw is not None else json.dumps(body).encode()
        async with self.http.post(
            f"{self.url}/webhooks/telegram/webhook", data=data, headers=headers
        ) as response:
            return response.status, await response.json(content_type=None)

    @property
    def texts(self) -> list[str]:
        return [m.text for m in self.agent.messages]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@asynccontextmanager
async def serving(channel: TelegramInput) -> AsyncIterator[Hook]:
    """Run ``channel`` in a Sanic app on a free port with a recording agent."""
    Sanic.test_mode = True
    app = Sanic(f"telegram_{uuid.uuid4().hex[:8]}")
    agent = RecordingAgent()
    app.ctx.agent = agent
    register([channel], app, route="/webhooks/")
    port = free_port()
    server = await app.create_server(
        host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False
    )
    await server.startup()
    await server.before_start()
    await server.after_start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Hook(f"http://127.0.0.1:{port}", agent, http)
    finally:
        await server.before_stop()
        await server.close()
        await server.after_stop()


@pytest.fixture(scope="module")
def store(scratch: Any) -> sessionmaker:
    """One migrated SQLite store for the module (tests use their own ids)."""
    return make_session_factory(scratch.engine("sqlite"))


@pytest.fixture()
def api() -> Iterator[FakeTelegramApi]:
    with FakeTelegramApi() as fake:
        yield fake


def make_channel(api: FakeTelegramApi, store: sessionmaker, **kwargs: Any) -> Any:
    options: dict[str, Any] = {
        "token": api.token,
        "secret": SECRET,
        "api_url": api.url,
        "session_factory": store,
        "max_message_chars": MAX_CHARS,
        "max_request_bytes": MAX_REQUEST,
        "max_attempts": 3,
        "base_delay": 0.01,
    }
    options.update(kwargs)
    return TelegramInput(**options)


@pytest.fixture()
async def hook(api: FakeTelegramApi, store: sessionmaker) -> AsyncIterator[Hook]:
    async with serving(make_channel(api, store)) as running:
        yield running


def receipts(store: sessionmaker, update_id: int) -> int:
    with store() as session:
        return session.execute(
            select(func.count())
            .select_from(ChannelReceipt)
            .where(
                ChannelReceipt.channel == "telegram",
                ChannelReceipt.external_id == str(update_id),
            )
        ).scalar_one()


# --- who may post -----------------------------------------------------------------


@pytest.mark.parametrize("secret", ["forged-secret-0123456789", None, ""])
async def test_wrong_or_missing_secret_is_403_and_leaves_no_trace(
    hook: Hook, api: FakeTelegramApi, store: sessionmaker, secret: str | None
) -> None:
    update_id = new_id()
    status, body = await hook.post(
        text_update(update_id, new_id(), "hello"), secret=secret
    )
    assert (status, body) == (403, {"error": "forbidden"})
    assert hook.agent.messages == []
    assert receipts(store, update_id) == 0
    assert api.calls() == []


async def test_secret_is_checked_before_the_body(hook: Hook) -> None:
    status, _ = await hook.post(None, raw=b"not json", secret="nope")
    assert status == 403
    status, _ = await hook.post(None, raw=b"x" * (MAX_REQUEST + 1), secret=None)
    assert status == 403


async def test_channel_off_without_token_or_secret_is_503(
    api: FakeTelegramApi, store: sessionmaker, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="channels.telegram"):
        channel = TelegramInput(token=None, secret=None, session_factory=None)
    assert "telegram: channel off" in caplog.text
    for off in (channel, make_channel(api, store, secret=None)):
        async with serving(off) as running:
            status, body = await running.post(text_update(new_id(), new_id(), "hi"))
            assert status == 503
            assert body == {"error": "the Telegram channel is not configured"}
            assert running.agent.messages == []
    assert api.calls() == []


def test_an_enabled_channel_needs_the_store(api: FakeTelegramApi) -> None:
    with pytest.raises(ValueError, match="store"):
        TelegramInput(token=api.token, secret=SECRET, session_factory=None)


# --- bad bodies -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"{not json", "JSON object"),
        (b"", "JSON object"),
        (b"[1, 2]", "JSON object"),
        (b'"hello"', "JSON object"),
        (b'{"message": {}}', "update_id"),
        (b'{"update_id": "5"}', "update_id"),
        (b'{"update_id": true}', "update_id"),
        (b'{"update_id": 1.5}', "update_id"),
        (b'{"update_id": -1}', "update_id"),
        (b'{"update_id": 7, "message": "hi"}', "Telegram update"),
        (b'{"update_id": 7, "message": {"text": "no chat"}}', "Telegram update"),
        (b"\xff\xfe", "JSON object"),
    ],
)
async def test_malformed_bodies_are_400_and_change_nothing(
    hook: Hook, api: FakeTelegramApi, raw: bytes, says: str
) -> None:
    status, body = await hook.post(None, raw=raw)
    assert status == 400
    assert says in body["error"]
    assert hook.agent.messages == [] and api.calls("sendMessage") == []


async def test_too_large_body_is_413(hook: Hook, api: FakeTelegramApi) -> None:
    update = text_update(new_id(), new_id(), "x" * MAX_REQUEST)
    status, body = await hook.post(update)
    assert status == 413 and "larger" in body["error"]
    assert hook.agent.messages == [] and api.calls() == []


async def test_unavailable_store_is_503_and_nothing_is_answered(
    api: FakeTelegramApi, tmp_path: Any
) -> None:
    from crm_store.db import make_engine

    broken = make_session_factory(make_engine(f"sqlite:///{tmp_path}/missing/x.db"))
    async with serving(make_channel(api, broken)) as running:
        status, body = await running.post(text_update(new_id(), new_id(), "hello"))
    assert status == 503 and body == {"error": "the store is unavailable"}
    assert running.agent.messages == [] and api.calls("sendMessage") == []


# --- text messages ----------------------------------------------------------------


async def test_text_message_runs_a_turn_and_the_answer_is_sent_escaped(
    hook: Hook, api: FakeTelegramApi, store: sessionmaker
) -> None:
    update_id, user = new_id(), new_id()
    status, body = await hook.post(text_update(update_id, user, "Where is my order?"))
    assert (status, body) == (200, {"status": "ok"})
    [message] = hook.agent.messages
    assert message.text == "Where is my order?"
    assert message.sender_id == f"telegram:{user}"
    assert message.input_channel == "telegram"
    assert message.message_id == f"telegram:{update_id}"
    assert message.metadata == {}
    [call] = api.calls("sendMessage")
    assert call["chat_id"] == user
    assert call["text"] == "got 18 characters"
    assert receipts(store, update_id) == 1


async def test_markdown_characters_arrive_escaped(
    hook: Hook, api: FakeTelegramApi
) -> None:
    await hook.post(text_update(new_id(), new_id(), "markdown"))
    [call] = api.calls("sendMessage")
    assert call["parse_mode"] == "MarkdownV2"
    for char in "_*[]()~`>#+-=|{}.!\\":
        assert f"\\{char}" in call["text"], char
    assert api.texts() == [MARKDOWN]


async def test_long_answer_is_split_within_telegrams_limit(
    hook: Hook, api: FakeTelegramApi
) -> None:
    assert len(LONG) > 5000
    await hook.post(text_update(new_id(), new_id(), "long"))
    calls = api.calls("sendMessage")
    assert len(calls) == 2
    assert all(len(c["text"]) <= MAX_MESSAGE_CHARS for c in calls)
    assert " ".join(api.texts()).split() == LONG.split()


async def test_edited_message_is_handled_as_a_new_message(hook: Hook) -> None:
    user = new_id()
    await hook.post(text_update(new_id(), user, "wehre is my order"))
    await hook.post(text_update(new_id(), user, "where is my order", edited=True))
    assert hook.texts == ["wehre is my order", "where is my order"]
    assert {m.sender_id for m in hook.agent.messages} == {f"telegram:{user}"}


async def test_overlong_text_is_cut_with_a_notice_first(
    hook: Hook, api: FakeTelegramApi
) -> None:
    await hook.post(text_update(new_id(), new_id(), "y" * (MAX_CHARS + 50)))
    assert hook.texts == ["y" * MAX_CHARS]
    assert api.texts() == [
        TOO_LONG_NOTICE.format(limit=MAX_CHARS),
        f"got {MAX_CHARS} characters",
    ]


async def test_text_of_control_characters_only_gets_the_polite_answer(
    hook: Hook, api: FakeTelegramApi
) -> None:
    await hook.post(text_update(new_id(), new_id(), "\x00\x01\x02"))
    assert hook.agent.messages == []
    assert api.texts() == [UNSUPPORTED_TEXT]


# --- commands ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["/start", "/start ref-campaign-7", f"/start@{BOT_USERNAME}", "/START"]
)
async def test_start_greets(hook: Hook, text: str) -> None:
    status, _ = await hook.post(text_update(new_id(), new_id(), text))
    assert status == 200
    assert hook.texts == ["/greet"]


@pytest.mark.parametrize("text", ["/help", f"/help@{BOT_USERNAME}"])
async def test_help_is_answered_by_the_channel(
    hook: Hook, api: FakeTelegramApi, text: str
) -> None:
    await hook.post(text_update(new_id(), new_id(), text))
    assert hook.agent.messages == []
    assert api.texts() == [HELP_TEXT]


@pytest.mark.parametrize(
    ("typed", "rasa_reads"),
    [
        ("/cancel_order", "cancel_order"),
        (
            '/cancel_order{"order_number": "N-1001"}',
            'cancel_order{"order_number": "N-1001"}',
        ),
        ("//affirm", "affirm"),
        ("  / /request_human", "request_human"),
        (f"/handed_back@{BOT_USERNAME}", f"handed_back@{BOT_USERNAME}"),
    ],
)
async def test_typed_intents_lose_their_slashes(
    hook: Hook, typed: str, rasa_reads: str
) -> None:
    await hook.post(text_update(new_id(), new_id(), typed))
    assert hook.texts == [rasa_reads]
    assert not hook.texts[0].strip().startswith("/")


# --- buttons ----------------------------------------------------------------------


async def test_buttons_become_an_inline_keyboard(
    hook: Hook, api: FakeTelegramApi
) -> None:
    await hook.post(text_update(new_id(), new_id(), "buttons"))
    [call] = api.calls("sendMessage")
    assert call["reply_markup"] == {
        "inline_keyboard": [
            [{"text": "Yes", "callback_data": "/affirm"}],
            [{"text": "No", "callback_data": "/deny"}],
        ]
    }


async def test_button_press_is_answered_then_runs_its_payload(
    hook: Hook, api: FakeTelegramApi
) -> None:
    user = new_id()
    status, _ = await hook.post(
        callback_update(new_id(), user, "/affirm", query_id="q1")
    )
    assert status == 200
    assert api.calls("answerCallbackQuery") == [{"callback_query_id": "q1"}]
    [message] = hook.agent.messages
    assert (message.text, message.sender_id) == ("/affirm", f"telegram:{user}")
    order = [r.method for r in api.records()]
    assert order == ["answerCallbackQuery", "sendMessage"]
    assert api.calls("sendMessage")[0]["chat_id"] == user


async def test_button_press_without_its_message_answers_the_user(
    hook: Hook, api: FakeTelegramApi
) -> None:
    user = new_id()
    await hook.post(callback_update(new_id(), user, "/deny", with_message=False))
    assert hook.texts == ["/deny"]
    assert api.calls("sendMessage")[0]["chat_id"] == user


async def test_stale_button_still_runs_the_turn(
    hook: Hook, api: FakeTelegramApi
) -> None:
    api.fail_next(
        "answerCallbackQuery",
        400,
        description="Bad Request: query is too old and response timeout expired",
    )
    await hook.post(callback_update(new_id(), new_id(), "/affirm"))
    assert len(api.calls("answerCallbackQuery")) == 1  # final: no retry
    assert hook.texts == ["/affirm"]


async def test_button_press_in_a_group_is_answered_and_ignored(
    hook: Hook, api: FakeTelegramApi
) -> None:
    update = callback_update(
        new_id(), new_id(), "/affirm", chat_id=GROUP, chat_type="supergroup"
    )
    await hook.post(update)
    assert len(api.calls("answerCallbackQuery")) == 1
    assert hook.agent.messages == [] and api.calls("sendMessage") == []


# --- re-deliveries ----------------------------------------------------------------


async def test_redelivered_update_is_answered_once_even_after_a_restart(
    api: FakeTelegramApi, store: sessionmaker
) -> None:
    update = text_update(new_id(), new_id(), "hello")
    async with serving(make_channel(api, store)) as first:
        assert await first.post(update) == (200, {"status": "ok"})
        assert await first.post(update) == (200, {"status": "duplicate"})
    async with serving(make_channel(api, store)) as restarted:
        assert await restarted.post(update) == (200, {"status": "duplicate"})
    assert len(first.agent.messages) == 1 and restarted.agent.messages == []
    assert len(api.calls("sendMessage")) == 1


async def test_concurrent_redeliveries_run_one_turn(
    hook: Hook, api: FakeTelegramApi
) -> None:
    update = text_update(new_id(), new_id(), "hello")
    results = await asyncio.gather(*(hook.post(update) for _ in range(4)))
    assert sorted(body["status"] for _, body in results) == [
        "duplicate",
        "duplicate",
        "duplicate",
        "ok",
    ]
    assert len(hook.agent.messages) == 1 and len(api.calls("sendMessage")) == 1


async def test_redelivered_button_press_is_not_answered_twice(
    hook: Hook, api: FakeTelegramApi
) -> None:
    update = callback_update(new_id(), new_id(), "/affirm")
    await hook.post(update)
    assert (await hook.post(update))[1] == {"status": "duplicate"}
    assert len(api.calls("answerCallbackQuery")) == 1 and len(hook.texts) == 1


# --- what the bot cannot read ---------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MEDIA))
async def test_non_text_messages_get_the_polite_answer(
    hook: Hook,
    api: FakeTelegramApi,
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    update_id, user = new_id(), new_id()
    with caplog.at_level(logging.DEBUG, logger="channels.telegram"):
        status, _ = await hook.post(media_update(update_id, user, kind))
    assert status == 200
    assert hook.agent.messages == []
    assert api.texts() == [UNSUPPORTED_TEXT]
    assert api.calls("sendMessage")[0]["chat_id"] == user
    assert f"telegram: update {update_id}: unsupported {kind}" in caplog.text


async def test_photo_with_a_caption_is_still_unsupported(
    hook: Hook, api: FakeTelegramApi
) -> None:
    update = media_update(new_id(), new_id(), "photo", caption="is this damaged?")
    await hook.post(update)
    assert hook.agent.messages == [] and api.texts() == [UNSUPPORTED_TEXT]


@pytest.mark.parametrize(
    "update",
    [
        {
            "update_id": 1,
            "channel_post": {
                "message_id": 1,
                "date": 0,
                "text": "news",
                "chat": {"id": -1001, "type": "channel"},
            },
        },
        {
            "update_id": 1,
            "my_chat_member": {
                "chat": {"id": 5, "type": "private", "first_name": "A"},
                "from": {"id": 5, "is_bot": False, "first_name": "A"},
                "date": 0,
                "old_chat_member": {
                    "status": "member",
                    "user": {"id": 9, "is_bot": True, "first_name": "B"},
                },
                "new_chat_member": {
                    "status": "kicked",
                    "until_date": 0,
                    "user": {"id": 9, "is_bot": True, "first_name": "B"},
                },
            },
        },
        {"update_id": 1},
    ],
)
async def test_other_update_kinds_are_ignored(
    hook: Hook, api: FakeTelegramApi, store: sessionmaker, update: dict
) -> None:
    update = {**update, "update_id": new_id()}
    assert await hook.post(update) == (200, {"status": "ignored"})
    assert hook.agent.messages == [] and api.calls() == []
    assert receipts(store, update["update_id"]) == 0


# --- groups -----------------------------------------------------------------------


async def test_group_chatter_is_ignored(
    hook: Hook, api: FakeTelegramApi, store: sessionmaker
) -> None:
    update_id = new_id()
    update = text_update(
        update_id,
        new_id(),
        "anyone tried @other_shop_bot?",
        chat_id=GROUP,
        chat_type="group",
    )
    assert await hook.post(update) == (200, {"status": "ignored"})
    sticker = media_update(
        new_id(), new_id(), "sticker", chat_id=GROUP, chat_type="group"
    )
    assert await hook.post(sticker) == (200, {"status": "ignored"})
    assert hook.agent.messages == [] and api.calls("sendMessage") == []
    assert receipts(store, update_id) == 0


@pytest.mark.parametrize(
    "options",
    [
        {"text": f"@{BOT_USERNAME} where is my order N-1001?"},
        {"text": f"hey @{BOT_USERNAME.upper()} help"},
        {"text": f"/start@{BOT_USERNAME}"},
        {"text": "and my refund?", "reply_to_bot": True},
    ],
)
async def test_addressed_in_a_group_answers_with_the_privacy_notice(
    hook: Hook, api: FakeTelegramApi, options: dict
) -> None:
    update = message_update(
        new_id(), new_id(), chat_id=GROUP, chat_type="supergroup", **options
    )
    assert (await hook.post(update))[0] == 200
    assert hook.agent.messages == []
    [call] = api.calls("sendMessage")
    assert call["chat_id"] == GROUP
    assert api.texts() == [PRIVACY_TEXT.format(username=BOT_USERNAME)]
    assert len(api.calls("getMe")) == 1


async def test_get_me_is_asked_once_for_many_group_messages(
    hook: Hook, api: FakeTelegramApi
) -> None:
    for _ in range(3):
        update = text_update(
            new_id(), new_id(), "hi all", chat_id=GROUP, chat_type="group"
        )
        await hook.post(update)
    assert len(api.calls("getMe")) == 1


async def test_group_message_while_get_me_fails_is_503_and_retried(
    hook: Hook, api: FakeTelegramApi, store: sessionmaker
) -> None:
    api.fail_next("getMe", 500, times=3)
    update_id = new_id()
    update = text_update(
        update_id, new_id(), f"@{BOT_USERNAME} hi", chat_id=GROUP, chat_type="group"
    )
    status, _ = await hook.post(update)
    assert status == 503 and receipts(store, update_id) == 0
    assert (await hook.post(update))[1] == {"status": "ok"}  # Telegram's retry
    assert api.texts() == [PRIVACY_TEXT.format(username=BOT_USERNAME)]


# --- failures ---------------------------------------------------------------------


async def test_failed_delivery_is_recorded_for_agents(
    hook: Hook, api: FakeTelegramApi, store: sessionmaker
) -> None:
    user = new_id()
    api.fail_next("sendMessage", 500, times=10)
    status, _ = await hook.post(text_update(new_id(), user, "two answers"))
    assert status == 200
    assert len(api.calls("sendMessage")) == 3  # max_attempts; the 2nd not tried
    with store() as session:
        failed = failed_deliveries(session, tracker_key=f"telegram:{user}")
    assert [m.text for m in failed] == ["first answer", "second answer"]
    assert all(m.status == "failed" and m.channel == "telegram" for m in failed)
    assert "500" in failed[0].last_error and "3 attempts" in failed[0].last_error


async def test_blocked_bot_is_not_retried_and_recorded(
    hook: Hook, api: FakeTelegramApi, store: sessionmaker
) -> None:
    user = new_id()
    api.fail_next("sendMessage", 403)
    await hook.post(text_update(new_id(), user, "buttons"))
    assert len(api.calls("sendMessage")) == 1
    with store() as session:
        [failed] = failed_deliveries(session, tracker_key=f"telegram:{user}")
    assert failed.buttons == BUTTONS
    assert "bot was blocked by the user" in failed.last_error


async def test_a_failing_turn_is_logged_without_text_and_still_200(
    hook: Hook, api: FakeTelegramApi, caplog: pytest.LogCaptureFixture
) -> None:
    update_id = new_id()
    with caplog.at_level(logging.INFO):
        status, body = await hook.post(text_update(update_id, new_id(), "fail"))
        secret_text = "my address is 12 Secret Lane"
        await hook.post(text_update(new_id(), new_id(), secret_text))
    assert (status, body) == (200, {"status": "ok"})
    assert f"the turn of update {update_id} failed" in caplog.text
    assert secret_text not in caplog.text


async def test_health_route(hook: Hook) -> None:
    async with hook.http.get(f"{hook.url}/webhooks/telegram/") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok", "enabled": True}


def test_from_credentials_reads_the_environment_not_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from crm_settings import get_settings

    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:from-env")
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("TELEGRAM_API_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("CRM_DATABASE_URL", f"sqlite:///{tmp_path}/crm.db")
    monkeypatch.setenv("CRM_MAX_MESSAGE_CHARS", "321")
    get_settings.cache_clear()
    try:
        on = TelegramInput.from_credentials({"token": "from-file", "secret": "x"})
        monkeypatch.delenv("TELEGRAM_BOT_TOKEN")
        get_settings.cache_clear()
        off = TelegramInput.from_credentials(None)
    finally:
        get_settings.cache_clear()
    assert (on.token, on.secret, on.api_url) == (
        "123:from-env",
        SECRET,
        "http://127.0.0.1:9",
    )
    assert on.enabled and on.session_factory is not None
    assert on.max_message_chars == 321
    assert not off.enabled and off.token is None


async def test_the_fake_delivers_updates_like_telegram(
    hook: Hook, api: FakeTelegramApi
) -> None:
    url = f"{hook.url}/webhooks/telegram/webhook"
    update = text_update(new_id(), new_id(), "hello")
    forged = await asyncio.to_thread(api.deliver, update, url=url, secret="x" * 20)
    assert forged == (403, {"error": "forbidden"})
    delivered = await asyncio.to_thread(api.deliver, update, url=url, secret=SECRET)
    assert delivered == (200, {"status": "ok"})
    assert hook.texts == ["hello"]


async def test_a_sticker_and_help_land_on_the_timeline(
    hook: Hook, store: sessionmaker
) -> None:
    from sqlalchemy import select

    from crm_store.models import Conversation, Interaction

    user = new_id()
    await hook.post(media_update(new_id(), user, "sticker"))
    await hook.post(text_update(new_id(), user, "/help"))
    with store() as session:
        conversation = session.execute(
            select(Conversation).where(Conversation.tracker_key == f"telegram:{user}")
        ).scalar_one()
        rows = (
            session.execute(
                select(Interaction)
                .where(Interaction.conversation_id == conversation.id)
                .order_by(Interaction.occurred_at, Interaction.id)
            )
            .scalars()
            .all()
        )
    assert conversation.channel == "telegram" and conversation.customer_id
    assert [(r.direction, r.text) for r in rows] == [
        ("in", "[sticker]"),
        ("out", UNSUPPORTED_TEXT),
        ("in", "/help"),
        ("out", HELP_TEXT),
    ]
