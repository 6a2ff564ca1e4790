"""The Bot API sender against the local fake Bot API (a real HTTP server).

python-telegram-bot and httpx are the real ones; only Telegram is faked.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from channels.telegram_sender import (
    BUTTONS_ONLY_TEXT,
    MAX_MESSAGE_CHARS,
    DeliveryFailed,
    TelegramSender,
    callback_data,
    escape,
    split_text,
)
from tests.fakes.telegram_api import (
    BOT_USERNAME,
    FakeTelegramApi,
    unescape_markdown_v2,
)

CHAT = 4242
SPECIAL = "_*[]()~`>#+-=|{}.!\\"


@pytest.fixture()
def api() -> Iterator[FakeTelegramApi]:
    with FakeTelegramApi() as fake:
        yield fake


@pytest.fixture()
async def sender(api: FakeTelegramApi) -> AsyncIterator[TelegramSender]:
    async with TelegramSender(
        api.token, api.url, max_attempts=3, base_delay=0.01, max_delay=2.0
    ) as made:
        yield made


def telegram_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# --- splitting and escaping (no network) ------------------------------------------


def test_short_text_is_one_piece_and_blank_text_none() -> None:
    assert split_text("  hello  ") == ["hello"]
    assert split_text(" \n\n ") == []
    assert split_text("") == []


def test_split_prefers_paragraph_then_line_then_word() -> None:
    paragraph = "a" * 3000 + "\n\n" + "b" * 3000
    assert split_text(paragraph) == ["a" * 3000, "b" * 3000]
    lines = "a" * 3000 + "\n" + "b" * 1500 + " " + "c" * 1500
    assert split_text(lines) == ["a" * 3000, "b" * 1500 + " " + "c" * 1500]
    words = " ".join(["word"] * 2000)  # 9,999 characters, no line breaks
    pieces = split_text(words)
    assert all(p.startswith("word") and p.endswith("word") for p in pieces)
    assert " ".join(pieces) == words


def test_split_without_boundaries_cuts_hard_and_loses_nothing() -> None:
    text = "x" * 10000
    pieces = split_text(text)
    assert [len(p) for p in pieces] == [4096, 4096, 1808]
    assert "".join(pieces) == text


@pytest.mark.parametrize(
    "text",
    [
        "." * 5000,  # every character doubles when escaped
        ("price 9.99 (incl. VAT)! " * 400),
        "\U0001f600" * 3000,  # two UTF-16 units each
        "\\" * 4097,
        ("a" * 2047 + "\n\n") * 4,  # a piece may end just before the break
    ],
)
def test_every_escaped_piece_fits_the_limit(text: str) -> None:
    pieces = split_text(text)
    assert len(pieces) >= 2
    for piece in pieces:
        assert telegram_length(escape(piece)) <= MAX_MESSAGE_CHARS
        assert unescape_markdown_v2(escape(piece)) == piece
    assert "".join("".join(pieces).split()) == "".join(text.split())


def test_escape_leaves_no_markdown_character_bare() -> None:
    escaped = escape(SPECIAL)
    assert escaped == "".join("\\" + c for c in SPECIAL)


def test_callback_data_is_the_payload_when_it_fits_64_bytes() -> None:
    assert callback_data("Yes", "/affirm") == "/affirm"
    long_payload = '/inform{"order_number":"' + "9" * 60 + '"}'
    assert callback_data("Order 99", long_payload) == "Order 99"
    title = "\u00e9" * 40  # 80 bytes: cut at a character boundary
    assert callback_data(title, "x" * 65) == "\u00e9" * 32


# --- over HTTP --------------------------------------------------------------------


async def test_send_text_escapes_and_returns_message_ids(
    api: FakeTelegramApi, sender: TelegramSender
) -> None:
    text = f"Order N-1001 costs 9.99 (incl. VAT)! {SPECIAL}"
    ids = await sender.send_text(CHAT, text)
    [call] = api.calls("sendMessage")
    assert call["chat_id"] == CHAT
    assert call["parse_mode"] == "MarkdownV2"
    assert call["text"] == escape(text)
    assert "\\." in call["text"] and "\\(" in call["text"] and "\\!" in call["text"]
    assert api.texts() == [text]
    assert len(ids) == 1 and isinstance(ids[0], int)


async def test_long_text_goes_as_several_messages_within_the_limit(
    api: FakeTelegramApi, sender: TelegramSender
) -> None:
    text = ("Line with a dot. " * 30 + "\n") * 10  # 5,110 characters
    ids = await sender.send_text(CHAT, text)
    calls = api.calls("sendMessage")
    assert len(ids) == len(calls) == 2
    for call in calls:
        assert telegram_length(call["text"]) <= MAX_MESSAGE_CHARS
    assert "\n".join(api.texts()).split() == text.split()


async def test_buttons_become_an_inline_keyboard_on_the_last_piece(
    api: FakeTelegramApi, sender: TelegramSender
) -> None:
    buttons = [
        {"title": "Yes", "payload": "/affirm"},
        {"title": "Order N-1001", "payload": '/inform{"x":"' + "1" * 70 + '"}'},
        "not a button",
        {"title": "Track", "url": "https://track.example/N-1001"},
    ]
    await sender.send_text(CHAT, "y" * 5000, buttons)
    first, last = api.calls("sendMessage")
    assert "reply_markup" not in first
    assert last["reply_markup"] == {
        "inline_keyboard": [
            [{"text": "Yes", "callback_data": "/affirm"}],
            [{"text": "Order N-1001", "callback_data": "Order N-1001"}],
            [{"text": "Track", "url": "https://track.example/N-1001"}],
        ]
    }


async def test_blank_text_sends_nothing_unless_there_are_buttons(
    api: FakeTelegramApi, sender: TelegramSender
) -> None:
    assert await sender.send_text(CHAT, "  ") == []
    assert api.calls() == []
    await sender.send_text(CHAT, "", [{"title": "OK", "payload": "/affirm"}])
    assert api.texts() == [BUTTONS_ONLY_TEXT]


async def test_429_waits_retry_after_then_delivers_once(
    api: FakeTelegramApi, sender: TelegramSender
) -> None:
    api.fail_next("sendMessage", 429, retry_after=1)
    await sender.send_text(CHAT, "hello")
    first, second = api.records("sendMessage")
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.9
    assert api.texts() == ["hello"]


async def test_5xx_is_retried_with_back_off(
    api: FakeTelegramApi, sender: TelegramSender
) -> None:
    api.fail_next("sendMessage", 502)
    api.fail_next("sendMessage", 500)
    await sender.send_text(CHAT, "hello")
    assert [r.status for r in api.records("sendMessage")] == [502, 500, 200]
    assert api.texts() == ["hello"]


async def test_500_every_time_fails_after_max_attempts(
    api: FakeTelegramApi, sender: TelegramSender
) -> None:
    api.fail_next("sendMessage", 500, times=10)
    with pytest.raises(DeliveryFailed) as caught:
        await sender.send_text(CHAT, "my order N-1001")
    assert len(api.calls("sendMessage")) == 3
    assert caught.value.final is False
    assert "500" in caught.value.reason and "3 attempts" in caught.value.reason
    assert "N-1001" not in caught.value.reason


async def test_forbidden_is_final_without_retry(
    api: FakeTelegramApi, sender: TelegramSender
) -> None:
    api.fail_next("sendMessage", 403)
    with pytest.raises(DeliveryFailed) as caught:
        await sender.send_text(CHAT, "hello")
    assert len(api.calls("sendMessage")) == 1
    assert caught.value.final is True
    assert "Forbidden: bot was blocked by the user" in caught.value.reason


async def test_bad_request_is_final_without_retry(
    api: FakeTelegramApi, sender: TelegramSender
) -> None:
    api.fail_next("sendMessage", 400, description="Bad Request: chat not found")
    with pytest.raises(DeliveryFailed, match="(?i)chat not found") as caught:
        await sender.send_text(CHAT, "hello")
    assert caught.value.final is True
    assert len(api.calls("sendMessage")) == 1


async def test_retry_after_longer_than_max_delay_gives_up_at_once(
    api: FakeTelegramApi, sender: TelegramSender
) -> None:
    api.fail_next("sendMessage", 429, retry_after=60)
    with pytest.raises(DeliveryFailed, match="retry after 60"):
        await sender.send_text(CHAT, "hello")
    assert len(api.calls("sendMessage")) == 1


async def test_a_failed_second_piece_reports_the_delivered_first(
    api: FakeTelegramApi, sender: TelegramSender
) -> None:
    api.fail_next("sendMessage", 403, after=1)
    with pytest.raises(DeliveryFailed) as caught:
        await sender.send_text(CHAT, "p" * 4000 + "\n\n" + "q" * 4000)
    assert len(caught.value.sent) == 1 and caught.value.final is True
    assert [r.status for r in api.records("sendMessage")] == [200, 403]
    assert api.texts() == ["p" * 4000]


async def test_wrong_token_is_final(api: FakeTelegramApi) -> None:
    async with TelegramSender("1:wrong", api.url, base_delay=0.01) as sender:
        with pytest.raises(DeliveryFailed) as caught:
            await sender.send_text(CHAT, "hello")
    assert caught.value.final is True
    assert "1:wrong" not in caught.value.reason
    assert api.unauthorized == 1 and api.calls() == []


async def test_unreachable_api_fails_after_the_attempts() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with TelegramSender(
        "1:token", f"http://127.0.0.1:{port}", max_attempts=2, base_delay=0.01
    ) as sender:
        with pytest.raises(DeliveryFailed) as caught:
            await sender.send_text(CHAT, "hello")
    assert caught.value.final is False and "2 attempts" in caught.value.reason


async def test_username_asks_get_me_once(
    api: FakeTelegramApi, sender: TelegramSender
) -> None:
    assert await sender.username() == BOT_USERNAME
    assert await sender.username() == BOT_USERNAME
    assert (await sender.me()).id == api.bot_id
    assert len(api.calls("getMe")) == 1


async def test_answer_callback_and_webhook_calls(
    api: FakeTelegramApi, sender: TelegramSender
) -> None:
    assert await sender.answer_callback("cq1") is True
    assert api.calls("answerCallbackQuery") == [{"callback_query_id": "cq1"}]
    assert await sender.set_webhook(
        "https://bot.example.com/webhooks/telegram/webhook",
        secret_token="s" * 20,
        allowed_updates=["message", "callback_query"],
    )
    info = await sender.webhook_info()
    assert info.url == "https://bot.example.com/webhooks/telegram/webhook"
    assert list(info.allowed_updates) == ["message", "callback_query"]
    assert api.webhook["secret_token"] == "s" * 20
