"""A local fake of the Telegram Bot API: a real HTTP server that records calls.

Usage (sync or async code alike; the server runs on its own thread)::

    api = FakeTelegramApi().start()        # or: with FakeTelegramApi() as api:
    env["TELEGRAM_API_URL"] = api.url      # http://127.0.0.1:<port>
    env["TELEGRAM_BOT_TOKEN"] = api.token
    ...
    api.wait_for("sendMessage", 2)         # -> the parameters of the calls
    api.calls("sendMessage")[0]["text"]    # as sent (MarkdownV2-escaped)
    api.fail_next("sendMessage", 429, retry_after=1)
    api.stop()

Requests go to ``/bot<token>/<method>`` (POST or GET); a wrong token gets 401
``{"ok": false, "error_code": 401, "description": "Unauthorized"}`` and is not
recorded; an unknown method gets 404. Parameters are read from JSON bodies,
from ``application/x-www-form-urlencoded`` bodies (what python-telegram-bot
20.8's ``HTTPXRequest`` posts: strings as they are, every other value
JSON-encoded) and from the query string; ``reply_markup`` and the other
structured fields are JSON-decoded, ids and booleans converted.

Answered methods: ``getMe`` (``northwind_test_bot``, id 999000999),
``sendMessage`` (a ``Message`` with ``message_id``, ``chat``, ``date``, ``text``),
``answerCallbackQuery``, ``setWebhook``, ``deleteWebhook``, ``getWebhookInfo``.
Like Telegram, ``sendMessage`` refuses an empty text, a text longer than 4,096
characters after MarkdownV2 unescaping, and (with ``parse_mode=MarkdownV2``) an
unescaped reserved character ``>#+-=|{}.!``; ``setWebhook`` checks the
``secret_token`` characters. Unlike Telegram it accepts ``http://`` webhook
URLs, so tests can point Telegram-side behaviour (``deliver``) at a local server.

Every answered call is recorded, failed ones too (see ``records``), with its
HTTP status and the time it arrived.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

DEFAULT_TOKEN = "123456789:FAKE-token_for-tests"
BOT_ID = 999000999
BOT_USERNAME = "northwind_test_bot"
BOT_USER = {
    "id": BOT_ID,
    "is_bot": True,
    "first_name": "Northwind Goods",
    "username": BOT_USERNAME,
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_TEXT = 4096
METHODS = (
    "getMe",
    "sendMessage",
    "answerCallbackQuery",
    "setWebhook",
    "deleteWebhook",
    "getWebhookInfo",
)
JSON_FIELDS = frozenset(
    {
        "reply_markup",
        "allowed_updates",
        "entities",
        "caption_entities",
        "link_preview_options",
        "reply_parameters",
    }
)
INT_FIELDS = frozenset(
    {
        "chat_id",
        "message_id",
        "message_thread_id",
        "reply_to_message_id",
        "max_connections",
        "cache_time",
        "offset",
        "limit",
        "timeout",
    }
)
BOOL_FIELDS = frozenset(
    {
        "drop_pending_updates",
        "disable_notification",
        "disable_web_page_preview",
        "protect_content",
        "allow_sending_without_reply",
        "show_alert",
    }
)
ALWAYS_RESERVED = frozenset(">#+-=|{}.!")
SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Call:
    """One recorded API call: method, parsed parameters, answer status, arrival."""

    method: str
    params: dict[str, Any]
    status: int
    at: float


@dataclass
class _Failure:
    status: int
    retry_after: int | None
    description: str | None


@dataclass
class _State:
    calls: list[Call] = field(default_factory=list)
    failures: dict[str, deque[_Failure | None]] = field(
        default_factory=lambda: defaultdict(deque)
    )
    webhook: dict[str, Any] = field(default_factory=dict)
    webhook_extra: dict[str, Any] = field(default_factory=dict)
    unauthorized: int = 0


def unescape_markdown_v2(text: str) -> str:
    """``text`` as Telegram shows it after MarkdownV2 unescaping (``\\x`` -> ``x``)."""
    return re.sub(r"\\(.)", r"\1", text, flags=re.DOTALL)


def _unescaped_reserved(text: str) -> str | None:
    """The first reserved character of ``text`` not escaped by a backslash."""
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in ALWAYS_RESERVED:
            return char
    return None


def _telegram_length(text: str) -> int:
    """UTF-16 code units, as Telegram counts message length."""
    return len(text.encode("utf-16-le")) // 2


def _decode(name: str, value: Any) -> Any:
    """Convert one form/query value the way PTB encoded it."""
    if not isinstance(value, str):
        return value
    if name in JSON_FIELDS:
        try:
            return json.loads(value)
        except ValueError:
            return value
    if name in INT_FIELDS and re.fullmatch(r"-?\d+", value):
        return int(value)
    if name in BOOL_FIELDS and value in ("true", "false", "True", "False"):
        return value.lower() == "true"
    return value


class _ApiError(Exception):
    def __init__(
        self, status: int, description: str, parameters: dict | None = None
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


class FakeTelegramApi:
    """The fake Bot API server (see the module docstring).

    Thread-safe: the server answers on its own threads while tests query it.
    """

    bot_id = BOT_ID
    bot_username = BOT_USERNAME

    def __init__(
        self, token: str = DEFAULT_TOKEN, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.token = token
        self._host, self._port = host, port
        self._state = _State()
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- life cycle -----------------------------------------------------------

    def start(self) -> FakeTelegramApi:
        """Listen on ``host:port`` (0 = a free port) on a background thread."""
        if self._server is not None:
            return self
        api = self

        class Handler(_Handler):
            fake = api

        self._server = ThreadingHTTPServer((self._host, self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-telegram-api",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (waits for the server thread)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None

    def __enter__(self) -> FakeTelegramApi:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL to put in ``TELEGRAM_API_URL`` (no trailing slash)."""
        if self._server is None:
            raise RuntimeError("the fake Bot API is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- queries --------------------------------------------------------------

    def records(self, method: str | None = None) -> list[Call]:
        """Every recorded call (of ``method``), oldest first, failed ones too."""
        with self._cond:
            return [c for c in self._state.calls if method in (None, c.method)]

    def calls(self, method: str | None = None) -> list[dict[str, Any]]:
        """The parameters of every recorded call (of ``method``), oldest first.

        Calls answered with an error (``fail_next``, validation) are included;
        use ``delivered`` for the successful ones only.
        """
        return [c.params for c in self.records(method)]

    def delivered(self, method: str = "sendMessage") -> list[dict[str, Any]]:
        """The parameters of the calls of ``method`` answered with 200."""
        return [c.params for c in self.records(method) if c.status == 200]

    def texts(self) -> list[str]:
        """The texts of the delivered messages as the user sees them (unescaped)."""
        result = []
        for params in self.delivered("sendMessage"):
            text = str(params.get("text", ""))
            if params.get("parse_mode") == "MarkdownV2":
                text = unescape_markdown_v2(text)
            result.append(text)
        return result

    @property
    def unauthorized(self) -> int:
        """How many requests came with a wrong token (they are not recorded)."""
        with self._cond:
            return self._state.unauthorized

    def wait_for(
        self, method: str, count: int = 1, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Block until ``count`` calls of ``method`` were recorded; return them all.

        Do not call this from the event loop that serves the calls (it blocks);
        use ``wait_for_async`` there.

        Raises:
            TimeoutError: fewer calls after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [c.params for c in self._state.calls if c.method == method]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(found)} of {count} {method} calls after {timeout} s"
                    )
                self._cond.wait(left)

    async def wait_for_async(
        self, method: str, count: int = 1, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """``wait_for`` that yields to the running event loop while waiting.

        Raises:
            TimeoutError: fewer calls after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self.calls(method)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{len(found)} of {count} {method} calls after {timeout} s"
                )
            await asyncio.sleep(0.02)

    # --- behaviour ------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        status: int,
        *,
        retry_after: int | None = None,
        times: int = 1,
        description: str | None = None,
        after: int = 0,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with an error ``status``.

        ``after``: let that many calls of ``method`` through normally first.

        429 answers ``"Too Many Requests: retry after N"`` with
        ``parameters.retry_after`` N (``retry_after``, default 1); other statuses
        carry ``parameters.retry_after`` only when it is given. ``description``
        overrides the default text (e.g. 400 ``"Bad Request: chat not found"``).
        """
        if status == 429 and retry_after is None:
            retry_after = 1
        with self._cond:
            queue = self._state.failures[method]
            queue.extend([None] * after)
            queue.extend(
                _Failure(status, retry_after, description) for _ in range(times)
            )

    def set_webhook_info(self, **fields: Any) -> None:
        """Extra ``getWebhookInfo`` fields, e.g. ``pending_update_count=3``,
        ``last_error_message="Connection refused"``, ``last_error_date=...``.
        """
        with self._cond:
            self._state.webhook_extra.update(fields)

    @property
    def webhook(self) -> dict[str, Any]:
        """The webhook registered with ``setWebhook`` (``{}`` when none)."""
        with self._cond:
            return dict(self._state.webhook)

    def reset(self) -> None:
        """Forget calls, pending failures and the webhook."""
        with self._cond:
            self._state = _State()

    def deliver(
        self,
        update: dict[str, Any],
        *,
        url: str | None = None,
        secret: str | None = None,
    ) -> tuple[int, Any]:
        """POST ``update`` to the webhook as Telegram would; return (status, body).

        ``url`` and ``secret`` default to what ``setWebhook`` registered. Blocking
        (use ``asyncio.to_thread`` from a loop that serves the webhook).

        Raises:
            RuntimeError: no webhook URL given or registered.
        """
        webhook = self.webhook
        target = url or webhook.get("url")
        if not target:
            raise RuntimeError("no webhook registered")
        token = secret if secret is not None else webhook.get("secret_token")
        headers = {"Content-Type": "application/json"}
        if token:
            headers[SECRET_HEADER] = token
        request = urllib.request.Request(
            target, data=json.dumps(update).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw or b"null")
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    # --- the API (called on the server's threads) -------------------------------

    def _answer(
        self, token: str, name: str, params: dict[str, Any]
    ) -> tuple[int, dict]:
        if token != self.token:
            with self._cond:
                self._state.unauthorized += 1
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        method = next((m for m in METHODS if m.lower() == name.lower()), None)
        if method is None:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        with self._cond:
            queue = self._state.failures.get(method)
            failure = queue.popleft() if queue else None
        try:
            if failure is not None:
                raise self._failure_error(failure)
            result = getattr(self, f"_{method}")(params)
            status, body = 200, {"ok": True, "result": result}
        except _ApiError as error:
            status = error.status
            body = {"ok": False, "error_code": status, "description": error.description}
            if error.parameters:
                body["parameters"] = error.parameters
        with self._cond:
            self._state.calls.append(Call(method, params, status, time.monotonic()))
            self._cond.notify_all()
        return status, body

    @staticmethod
    def _failure_error(failure: _Failure) -> _ApiError:
        if failure.status == 429:
            description = f"Too Many Requests: retry after {failure.retry_after}"
        else:
            description = DESCRIPTIONS.get(failure.status, "Error")
        parameters = (
            {"retry_after": failure.retry_after}
            if failure.retry_after is not None
            else None
        )
        return _ApiError(failure.status, failure.description or description, parameters)

    def _getMe(self, params: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        return dict(BOT_USER)

    def _sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        chat_id = params.get("chat_id")
        if chat_id in (None, ""):
            raise _ApiError(400, "Bad Request: chat_id is empty")
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _ApiError(400, "Bad Request: message text is empty")
        shown = text
        if params.get("parse_mode") == "MarkdownV2":
            char = _unescaped_reserved(text)
            if char is not None:
                raise _ApiError(
                    400,
                    f"Bad Request: can't parse entities: Character '{char}' is "
                    "reserved and must be escaped with the preceding '\\'",
                )
            shown = unescape_markdown_v2(text)
        if _telegram_length(shown) > MAX_TEXT:
            raise _ApiError(400, "Bad Request: message is too long")
        chat_type = "private" if isinstance(chat_id, int) and chat_id > 0 else "group"
        message: dict[str, Any] = {
            "message_id": next(self._ids),
            "from": dict(BOT_USER),
            "chat": {"id": chat_id, "type": chat_type},
            "date": int(time.time()),
            "text": shown,
        }
        if isinstance(params.get("reply_markup"), dict):
            message["reply_markup"] = params["reply_markup"]
        return message

    def _answerCallbackQuery(self, params: dict[str, Any]) -> bool:  # noqa: N802
        if not params.get("callback_query_id"):
            raise _ApiError(400, "Bad Request: query ID is empty")
        return True

    def _setWebhook(self, params: dict[str, Any]) -> bool:  # noqa: N802
        url = params.get("url", "")
        if not isinstance(url, str):
            raise _ApiError(400, "Bad Request: bad webhook: invalid URL")
        secret = params.get("secret_token")
        if secret is not None and not SECRET_TOKEN.fullmatch(str(secret)):
            raise _ApiError(
                400, "Bad Request: secret token contains unallowed characters"
            )
        if url and urlsplit(url).scheme not in ("http", "https"):
            raise _ApiError(400, "Bad Request: bad webhook: invalid URL")
        with self._cond:
            self._state.webhook = dict(params) if url else {}
        return True

    def _deleteWebhook(self, params: dict[str, Any]) -> bool:  # noqa: N802
        with self._cond:
            self._state.webhook = {}
        return True

    def _getWebhookInfo(self, params: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        with self._cond:
            webhook = dict(self._state.webhook)
            extra = dict(self._state.webhook_extra)
        info: dict[str, Any] = {
            "url": webhook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": 0,
        }
        if webhook:
            info["max_connections"] = webhook.get("max_connections", 40)
            if webhook.get("allowed_updates") is not None:
                info["allowed_updates"] = webhook["allowed_updates"]
        info.update(extra)
        return info


class _Handler(BaseHTTPRequestHandler):
    """Parses a Bot API request and hands it to the fake."""

    fake: FakeTelegramApi
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet: tests read the recorded calls instead."""

    def do_GET(self) -> None:  # noqa: N802
        """GET with a query string."""
        self._handle(b"")

    def do_POST(self) -> None:  # noqa: N802
        """POST with a JSON, form or empty body."""
        length = int(self.headers.get("Content-Length") or 0)
        self._handle(self.rfile.read(length) if length > 0 else b"")

    def _handle(self, body: bytes) -> None:
        parts = urlsplit(self.path)
        match = re.fullmatch(r"/bot([^/]+)/([A-Za-z]+)/?", parts.path)
        if match is None:
            self._reply(
                404, {"ok": False, "error_code": 404, "description": "Not Found"}
            )
            return
        try:
            params = self._params(parts.query, body)
        except ValueError:
            self._reply(
                400,
                {
                    "ok": False,
                    "error_code": 400,
                    "description": "Bad Request: bad body",
                },
            )
            return
        status, answer = self.fake._answer(match.group(1), match.group(2), params)
        self._reply(status, answer)

    def _params(self, query: str, body: bytes) -> dict[str, Any]:
        raw: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if body and content_type == "application/json":
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("a JSON body must be an object")
            raw.update(data)
        elif body and content_type in ("application/x-www-form-urlencoded", ""):
            raw.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        elif body:
            raise ValueError(f"unsupported content type {content_type!r}")
        return {name: _decode(name, value) for name, value in raw.items()}

    def _reply(self, status: int, answer: dict[str, Any]) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


# --- updates as Telegram sends them (for tests, end-to-end runs, benchmarks) ---

MEDIA = {
    "sticker": {
        "file_id": "CAACAgIAAxk",
        "file_unique_id": "AgADsticker",
        "width": 512,
        "height": 512,
        "is_animated": False,
        "is_video": False,
        "type": "regular",
        "emoji": "\U0001f44d",
    },
    "photo": [
        {
            "file_id": "AgACAgQAAxk1",
            "file_unique_id": "AQADp1",
            "width": 90,
            "height": 60,
        },
        {
            "file_id": "AgACAgQAAxk2",
            "file_unique_id": "AQADp2",
            "width": 800,
            "height": 533,
        },
    ],
    "voice": {
        "file_id": "AwACAgQAAxk",
        "file_unique_id": "AgADvoice",
        "duration": 3,
        "mime_type": "audio/ogg",
    },
    "document": {
        "file_id": "BQACAgQAAxk",
        "file_unique_id": "AgADdoc",
        "file_name": "receipt.pdf",
        "mime_type": "application/pdf",
    },
    "location": {"latitude": 52.3676, "longitude": 4.9041},
    "contact": {"phone_number": "+31612345678", "first_name": "Alex"},
}
_ENTITY = re.compile(
    r"(?<![\w@/])(@[A-Za-z0-9_]{5,32}|/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{5,32})?)"
)


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def entities_of(text: str) -> list[dict[str, Any]]:
    """The ``mention`` and ``bot_command`` entities Telegram would attach to ``text``.

    Offsets and lengths in UTF-16 units, as Telegram counts them; a command
    counts only at the start of the text, as Telegram marks it.
    """
    found = []
    for match in _ENTITY.finditer(text):
        value = match.group(1)
        if value.startswith("/") and match.start() != 0:
            continue
        found.append(
            {
                "type": "mention" if value.startswith("@") else "bot_command",
                "offset": _utf16(text[: match.start()]),
                "length": _utf16(value),
            }
        )
    return found


def tg_user(user_id: int, first_name: str = "Alex") -> dict[str, Any]:
    """A Telegram ``User`` object of a person."""
    return {
        "id": user_id,
        "is_bot": False,
        "first_name": first_name,
        "language_code": "en",
    }


def tg_chat(chat_id: int, chat_type: str = "private") -> dict[str, Any]:
    """A Telegram ``Chat`` object (private chats are named after the user)."""
    if chat_type == "private":
        return {"id": chat_id, "type": "private", "first_name": "Alex"}
    return {"id": chat_id, "type": chat_type, "title": "Northwind fans"}


def message_update(
    update_id: int,
    user_id: int,
    *,
    text: str | None = None,
    chat_id: int | None = None,
    chat_type: str = "private",
    edited: bool = False,
    message_id: int | None = None,
    entities: list[dict[str, Any]] | None = None,
    reply_to_bot: bool = False,
    **content: Any,
) -> dict[str, Any]:
    """An update with a ``message`` (or ``edited_message``) from ``user_id``.

    ``text`` gets the entities Telegram would compute unless ``entities`` is
    given; other ``content`` (e.g. ``sticker=MEDIA["sticker"]``) is added as is.
    ``chat_id`` defaults to the user id (a private chat); ``reply_to_bot`` makes
    the message a reply to an earlier message of the bot.
    """
    message: dict[str, Any] = {
        "message_id": message_id if message_id is not None else update_id,
        "from": tg_user(user_id),
        "chat": tg_chat(chat_id if chat_id is not None else user_id, chat_type),
        "date": int(time.time()),
    }
    if text is not None:
        message["text"] = text
        found = entities_of(text) if entities is None else entities
        if found:
            message["entities"] = found
    message.update(content)
    if reply_to_bot:
        message["reply_to_message"] = {
            "message_id": 1,
            "from": dict(BOT_USER),
            "chat": message["chat"],
            "date": int(time.time()) - 60,
            "text": "Hello!",
        }
    if edited:
        message["edit_date"] = int(time.time())
    return {
        "update_id": update_id,
        ("edited_message" if edited else "message"): message,
    }


def text_update(
    update_id: int, user_id: int, text: str, **kwargs: Any
) -> dict[str, Any]:
    """An update with a text message (see ``message_update`` for the options)."""
    return message_update(update_id, user_id, text=text, **kwargs)


def media_update(
    update_id: int, user_id: int, kind: str, **kwargs: Any
) -> dict[str, Any]:
    """An update with a message of ``kind`` (a key of ``MEDIA``) and no text."""
    return message_update(update_id, user_id, **{kind: MEDIA[kind]}, **kwargs)


def callback_update(
    update_id: int,
    user_id: int,
    data: str | None,
    *,
    chat_id: int | None = None,
    chat_type: str = "private",
    query_id: str | None = None,
    with_message: bool = True,
) -> dict[str, Any]:
    """An update with a ``callback_query``: a press of an inline button.

    The message is the bot's message with the keyboard (left out when
    ``with_message`` is false, as for inline-mode messages).
    """
    query: dict[str, Any] = {
        "id": query_id or f"cq{update_id}",
        "from": tg_user(user_id),
        "chat_instance": "-1234567890",
    }
    if data is not None:
        query["data"] = data
    if with_message:
        query["message"] = {
            "message_id": 7,
            "from": dict(BOT_USER),
            "chat": tg_chat(chat_id if chat_id is not None else user_id, chat_type),
            "date": int(time.time()) - 10,
            "text": "Pick one",
        }
    return {"update_id": update_id, "callback_query": query}
