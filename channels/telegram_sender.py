"""Sending through the Telegram Bot API with retries (python-telegram-bot, no Rasa).

Used by the Rasa channel (``channels.telegram``) and by the agent console's
courier, so this module must not import Rasa.

- **Bot.** ``telegram.Bot(token, base_url=f"{api_url}/bot")``: PTB appends the
  token, and each call posts to ``{api_url}/bot<token>/<method>``, so
  ``TELEGRAM_API_URL`` can point at a local fake Bot API in tests.
- **Text.** ``send_text`` splits an answer into messages of at most 4,096
  characters (at a paragraph, else a line, else a word boundary, else hard),
  then escapes each piece for ``MarkdownV2`` (``escape_markdown(version=2)``), so
  nothing a customer or agent wrote becomes formatting and no escape sequence is
  cut. The limit is applied to the *escaped* text, counting characters outside
  the Basic Multilingual Plane twice (Telegram counts UTF-16 units after entity
  parsing, so this is conservative). Buttons become an inline keyboard on the
  last piece, one button per row; ``callback_data`` is the payload when it fits
  Telegram's 64 bytes, else the title (cut to 64 bytes).
- **Retries.** ``RetryAfter`` (HTTP 429) waits ``retry_after`` seconds, unless that
  is longer than ``max_delay`` (then it gives up at once); ``NetworkError`` and
  ``TimedOut`` (connection errors, HTTP 5xx) back off ``base_delay * 2**n``
  capped at ``max_delay``; at most ``max_attempts`` calls in all. ``BadRequest``,
  ``Forbidden`` (the user blocked the bot), ``InvalidToken``, ``ChatMigrated``
  and ``Conflict`` are final. Giving up raises ``DeliveryFailed`` with a short
  reason without personal data (never the text; the token is scrubbed).
- **Event loops.** PTB's httpx client is bound to the event loop it first
  connects in: use one sender per event loop (the Rasa channel creates its
  sender lazily in the server's loop) and ``await aclose()`` in that loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    User,
    WebhookInfo,
)
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.helpers import escape_markdown
from telegram.request import HTTPXRequest

from channels.backoff import backoff_delay

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_API_URL = "https://api.telegram.org"
MAX_MESSAGE_CHARS = 4096
MAX_CALLBACK_DATA_BYTES = 64
# escape_markdown(version=2) puts a backslash before each of these.
MARKDOWN_V2_SPECIAL = frozenset("\\_*[]()~`>#+-=|{}.!")
BUTTONS_ONLY_TEXT = "Please choose:"
MAX_REASON = 200
FINAL_ERRORS = (BadRequest, Forbidden, InvalidToken, ChatMigrated, Conflict)


class DeliveryFailed(Exception):
    """A Bot API call that did not succeed after the retries (or could not).

    ``reason`` is short and holds no personal data (no text, no token).
    ``final``: Telegram refused for good (``BadRequest``, ``Forbidden``,
    ``InvalidToken``, ...): trying later will not help; False when the retries
    ran out on a temporary error (flood control, 5xx, network). ``sent`` lists
    the message ids of the pieces delivered before the failure.
    """

    def __init__(
        self, reason: str, *, final: bool = False, sent: Sequence[int] = ()
    ) -> None:
        """Remember the reason, whether it is final and what was delivered."""
        super().__init__(reason)
        self.reason = reason
        self.final = final
        self.sent = list(sent)


def _cost(char: str) -> int:
    """Telegram characters (UTF-16 units) ``char`` takes once escaped."""
    units = 2 if ord(char) > 0xFFFF else 1
    return units + 1 if char in MARKDOWN_V2_SPECIAL else units


def _fitting_prefix(text: str, limit: int) -> int:
    """Length of the longest prefix of ``text`` whose escaped cost is <= ``limit``."""
    total = 0
    for index, char in enumerate(text):
        total += _cost(char)
        if total > limit:
            return index
    return len(text)


def split_text(text: str, limit: int = MAX_MESSAGE_CHARS) -> list[str]:
    """Split ``text`` into pieces whose MarkdownV2-escaped form fits ``limit``.

    Cuts at the last paragraph break (blank line) in the window, else the last
    line break, else the last space, as long as that keeps at least half the
    window; otherwise hard at the limit. Pieces are stripped of surrounding
    whitespace; whitespace-only pieces are dropped (Telegram refuses empty
    messages), so a blank ``text`` gives ``[]``.

    Raises:
        ValueError: ``limit`` too small to hold any character.
    """
    if limit < 4:
        raise ValueError("the limit must be at least 4")
    pieces: list[str] = []
    rest = text.strip()
    while rest:
        end = _fitting_prefix(rest, limit)
        if end >= len(rest):
            pieces.append(rest)
            break
        cut = end
        for separator in ("\n\n", "\n", " "):
            index = rest.rfind(separator, 0, end)
            if index >= end // 2 and rest[:index].strip():
                cut = index
                break
        piece, rest = rest[:cut].rstrip(), rest[cut:].lstrip()
        if piece:
            pieces.append(piece)
    return pieces


def escape(text: str) -> str:
    """``text`` escaped for ``parse_mode=MarkdownV2`` (shown exactly as written)."""
    return escape_markdown(text, version=2)


def _cut_bytes(value: str, limit: int) -> str:
    """``value`` cut to at most ``limit`` UTF-8 bytes at a character boundary."""
    return value.encode("utf-8")[:limit].decode("utf-8", "ignore")


def callback_data(title: str, payload: str) -> str:
    """A button's ``callback_data``: the payload if it fits 64 bytes, else the title."""
    if payload and len(payload.encode("utf-8")) <= MAX_CALLBACK_DATA_BYTES:
        return payload
    return _cut_bytes(title or payload, MAX_CALLBACK_DATA_BYTES)


def inline_keyboard(buttons: Sequence[dict[str, Any]]) -> InlineKeyboardMarkup | None:
    """An inline keyboard of Rasa buttons (``title``, ``payload`` or ``url``).

    One button per row. Entries that are not dicts or have no title and no
    payload are skipped; None when nothing is left.
    """
    rows = []
    for button in buttons or ():
        if not isinstance(button, dict):
            continue
        title = str(button.get("title") or "").strip()
        payload = str(button.get("payload") or "").strip()
        url = button.get("url")
        if not title and not payload:
            continue
        label = title or payload
        if isinstance(url, str) and url.startswith(("https://", "http://", "tg://")):
            rows.append([InlineKeyboardButton(label, url=url)])
        else:
            rows.append(
                [
                    InlineKeyboardButton(
                        label, callback_data=callback_data(title, payload)
                    )
                ]
            )
    return InlineKeyboardMarkup(rows) if rows else None


def _seconds(value: int | float | dt.timedelta) -> float:
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return float(value)


class TelegramSender:
    """Bot API calls with retries and back-off (see the module docstring).

    One sender per event loop; close it with ``aclose`` in that loop.
    """

    def __init__(
        self,
        token: str,
        api_url: str = DEFAULT_API_URL,
        *,
        max_attempts: int = 5,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        timeout: float = 10.0,
        pool_size: int = 16,
    ) -> None:
        """Build the PTB bot on ``{api_url}/bot<token>``; no network call yet.

        Raises:
            ValueError: an empty token or a non-positive attempt count.
        """
        if not token:
            raise ValueError("a Telegram bot token is required")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._token = token
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._request = HTTPXRequest(
            connection_pool_size=pool_size,
            connect_timeout=timeout,
            read_timeout=timeout,
            write_timeout=timeout,
            pool_timeout=timeout,
        )
        self._updates_request = HTTPXRequest(connection_pool_size=1)
        base = (api_url or DEFAULT_API_URL).rstrip("/")
        self.bot = Bot(
            token,
            base_url=f"{base}/bot",
            base_file_url=f"{base}/file/bot",
            request=self._request,
            get_updates_request=self._updates_request,
        )
        self._me: User | None = None
        self._me_lock: asyncio.Lock | None = None

    async def send_text(
        self,
        chat_id: int | str,
        text: str,
        buttons: Sequence[dict[str, Any]] | None = None,
    ) -> list[int]:
        """Send ``text`` (split, escaped) to ``chat_id``; return the message ids.

        Buttons go on the last piece as an inline keyboard; buttons with a blank
        text are sent under ``BUTTONS_ONLY_TEXT``. A blank text without buttons
        sends nothing.

        Raises:
            DeliveryFailed: a piece could not be delivered (``sent`` lists the
                pieces that were).
        """
        pieces = split_text(text or "")
        markup = inline_keyboard(buttons) if buttons else None
        if not pieces:
            if markup is None:
                return []
            pieces = [BUTTONS_ONLY_TEXT]
        sent: list[int] = []
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            escaped = escape(piece)

            def call(escaped: str = escaped, last: bool = last) -> Awaitable[Message]:
                return self.bot.send_message(
                    chat_id=chat_id,
                    text=escaped,
                    parse_mode=ParseMode.MARKDOWN_V2,
                    reply_markup=markup if last else None,
                )

            try:
                message = await self._call("sendMessage", call)
            except DeliveryFailed as error:
                raise DeliveryFailed(
                    error.reason, final=error.final, sent=sent
                ) from error
            sent.append(message.message_id)
        return sent

    async def answer_callback(self, callback_query_id: str) -> bool:
        """Answer a button press so the client stops its progress indicator.

        Raises:
            DeliveryFailed: the call failed (e.g. the query is too old).
        """
        return await self._call(
            "answerCallbackQuery",
            lambda: self.bot.answer_callback_query(callback_query_id),
        )

    async def me(self) -> User:
        """The bot's own user (``getMe``), fetched once and cached.

        Raises:
            DeliveryFailed: ``getMe`` failed.
        """
        if self._me is not None:
            return self._me
        if self._me_lock is None:
            self._me_lock = asyncio.Lock()
        async with self._me_lock:
            if self._me is None:
                self._me = await self._call("getMe", self.bot.get_me)
        return self._me

    async def username(self) -> str:
        """The bot's username without ``@`` (``getMe``, cached).

        Raises:
            DeliveryFailed: ``getMe`` failed.
        """
        return (await self.me()).username or ""

    async def set_webhook(
        self,
        url: str,
        *,
        secret_token: str,
        allowed_updates: Sequence[str] | None = None,
        drop_pending_updates: bool = False,
    ) -> bool:
        """Register the webhook ``url`` with Telegram (``setWebhook``).

        Raises:
            DeliveryFailed: Telegram refused or could not be reached.
        """
        return await self._call(
            "setWebhook",
            lambda: self.bot.set_webhook(
                url,
                secret_token=secret_token,
                allowed_updates=list(allowed_updates or []) or None,
                drop_pending_updates=drop_pending_updates,
            ),
        )

    async def webhook_info(self) -> WebhookInfo:
        """The webhook Telegram has registered (``getWebhookInfo``).

        Raises:
            DeliveryFailed: the call failed.
        """
        return await self._call("getWebhookInfo", self.bot.get_webhook_info)

    async def aclose(self) -> None:
        """Close the HTTP connections (in the loop the sender was used in)."""
        for request in (self._request, self._updates_request):
            try:
                await request.shutdown()
            except Exception:  # noqa: BLE001 - closing must not fail the caller
                logger.debug("telegram: closing an HTTP client failed", exc_info=True)

    async def __aenter__(self) -> TelegramSender:
        """Use as ``async with TelegramSender(...) as sender``."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the connections."""
        await self.aclose()

    def _reason(self, error: TelegramError, method: str, attempts: int) -> str:
        """A short description of ``error`` without the token, for logs and rows."""
        detail = str(getattr(error, "message", "") or error)
        lines = detail.replace(self._token, "<token>").splitlines()
        text = f"{method}: {type(error).__name__}: {lines[0] if lines else ''}"
        if attempts > 1:
            text += f" (after {attempts} attempts)"
        return text[:MAX_REASON]

    async def _call(self, method: str, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make()`` with the retry rules of the module docstring.

        Raises:
            DeliveryFailed: a final error, or the attempts are used up.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return await make()
            except RetryAfter as error:
                wait = _seconds(error.retry_after)
                if wait > self.max_delay or attempt >= self.max_attempts:
                    raise DeliveryFailed(
                        f"{method}: flood control, retry after {wait:g} s"
                        f" (after {attempt} attempts)"
                    ) from error
            except FINAL_ERRORS as error:
                raise DeliveryFailed(
                    self._reason(error, method, attempt), final=True
                ) from error
            except NetworkError as error:  # includes TimedOut and HTTP 5xx
                if attempt >= self.max_attempts:
                    raise DeliveryFailed(
                        self._reason(error, method, attempt)
                    ) from error
                wait = backoff_delay(attempt, self.base_delay, self.max_delay)
            except TelegramError as error:
                raise DeliveryFailed(
                    self._reason(error, method, attempt), final=True
                ) from error
            logger.warning(
                "telegram: %s failed, attempt %d of %d, retrying in %.2f s",
                method,
                attempt,
                self.max_attempts,
                wait,
            )
            await asyncio.sleep(wait)
