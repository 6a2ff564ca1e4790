"""A local fake of the Twilio REST API (Messages) and a signed-webhook helper.

Usage (the server runs on its own thread, so sync and async tests alike)::

    api = FakeTwilioApi().start()           # or: with FakeTwilioApi() as api:
    env["TWILIO_API_URL"] = api.url         # http://127.0.0.1:<port>
    env["TWILIO_ACCOUNT_SID"] = api.account_sid
    env["TWILIO_AUTH_TOKEN"] = api.auth_token
    ...
    api.wait_for(1)                         # -> the delivered messages
    api.messages(to="+31612345678")[0]["Body"]
    api.fail_next(500, times=3)             # or 429 / 400 with code=21610
    api.stop()

``POST /2010-04-01/Accounts/{sid}/Messages.json`` takes form parameters
``To``, ``From``, ``Body`` with HTTP Basic auth ``sid:token``. Like Twilio it
answers 201 with a Message resource (``sid`` ``SM`` + 32 hex digits, ``status``
``queued``); a wrong account or token gets 401 (error 20003) and is not
recorded; a missing ``To`` 400/21604, a ``To`` not in E.164 form 400/21211, a
missing body 400/21602, a body over 1,600 characters 400/21617. Error answers
are Twilio's JSON (``code``, ``message``, ``more_info``, ``status``); 429
answers carry ``Retry-After`` when ``fail_next`` is given ``retry_after``.

``signed_post`` posts form parameters to a webhook with the ``X-Twilio-Signature``
Twilio would compute for the public URL (``channels.twilio_signature.sign``).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from channels.twilio_signature import SIGNATURE_HEADER, public_url, sign

DEFAULT_AUTH_TOKEN = "fake-twilio-auth-token-0123456789"
MAX_BODY = 1600
E164 = re.compile(r"\+[1-9]\d{6,14}")
MESSAGES_PATH = re.compile(r"/2010-04-01/Accounts/([^/]+)/Messages\.json")
ERRORS = {
    400: (21211, "Invalid 'To' Phone Number"),
    401: (20003, "Authenticate"),
    404: (20404, "The requested resource was not found"),
    429: (20429, "Too Many Requests"),
    500: (20500, "Internal Server Error"),
    502: (20500, "Bad Gateway"),
    503: (20503, "Service Unavailable"),
}
KNOWN_CODES = {
    21610: "Attempt to send to unsubscribed recipient",
    21211: "The 'To' number is not a valid phone number.",
    21614: "'To' number is not a valid mobile number",
}


def new_account_sid() -> str:
    """A random account SID as Twilio issues them (``AC`` + 32 hex digits)."""
    return "AC" + secrets.token_hex(16)


@dataclass(frozen=True)
class Call:
    """One recorded request: its form parameters, answer status and arrival time."""

    params: dict[str, str]
    status: int
    at: float
    sid: str | None = None


@dataclass
class _Failure:
    status: int
    code: int | None
    message: str | None
    retry_after: int | None


@dataclass
class _State:
    calls: list[Call] = field(default_factory=list)
    failures: deque[_Failure] = field(default_factory=deque)
    unauthorized: int = 0


class _ApiError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_body(status: int, code: int, message: str) -> dict[str, Any]:
    """Twilio's JSON error document."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


class FakeTwilioApi:
    """The fake Messages API server (see the module docstring); thread-safe."""

    def __init__(
        self,
        account_sid: str | None = None,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.account_sid = account_sid or new_account_sid()
        self.auth_token = auth_token
        self._host, self._port = host, port
        self._state = _State()
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- life cycle -----------------------------------------------------------

    def start(self) -> FakeTwilioApi:
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
            name="fake-twilio-api",
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

    def __enter__(self) -> FakeTwilioApi:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL for ``TWILIO_API_URL`` (no trailing slash)."""
        if self._server is None:
            raise RuntimeError("the fake Twilio API is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- queries --------------------------------------------------------------

    def records(self) -> list[Call]:
        """Every authenticated request, oldest first, refused ones too."""
        with self._cond:
            return list(self._state.calls)

    def messages(self, to: str | None = None) -> list[dict[str, str]]:
        """The accepted messages (to ``to``), oldest first: form params + ``sid``."""
        return [
            {**c.params, "sid": c.sid or ""}
            for c in self.records()
            if c.status == 201 and to in (None, c.params.get("To"))
        ]

    @property
    def unauthorized(self) -> int:
        """How many requests had a wrong account or token (not recorded)."""
        with self._cond:
            return self._state.unauthorized

    def wait_for(
        self, count: int = 1, timeout: float = 5.0, *, to: str | None = None
    ) -> list[dict[str, str]]:
        """Block until ``count`` messages (to ``to``) were accepted; return them.

        Raises:
            TimeoutError: fewer after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [
                    {**c.params, "sid": c.sid or ""}
                    for c in self._state.calls
                    if c.status == 201 and to in (None, c.params.get("To"))
                ]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(found)} of {count} messages after {timeout} s"
                    )
                self._cond.wait(left)

    # --- behaviour ------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        code: int | None = None,
        message: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next ``times`` authenticated requests with error ``status``.

        ``code``/``message``: the Twilio error (default by status, e.g. 20429 for
        429, 20500 for 500; 400 with ``code=21610`` is "unsubscribed
        recipient"). ``retry_after``: a ``Retry-After`` header in seconds.
        """
        with self._cond:
            self._state.failures.extend(
                _Failure(status, code, message, retry_after) for _ in range(times)
            )

    def reset(self) -> None:
        """Forget calls and pending failures."""
        with self._cond:
            self._state = _State()

    # --- the API (on the server's threads) ---------------------------------------

    def _authorized(self, sid: str, header: str | None) -> bool:
        if sid != self.account_sid or not header or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return False
        return secrets.compare_digest(
            decoded.encode(), f"{self.account_sid}:{self.auth_token}".encode()
        )

    def _answer(
        self, sid: str, auth: str | None, params: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if not self._authorized(sid, auth):
            with self._cond:
                self._state.unauthorized += 1
            return 401, error_body(401, 20003, "Authenticate"), {}
        with self._cond:
            failure = self._state.failures.popleft() if self._state.failures else None
        headers: dict[str, str] = {}
        message_sid = None
        try:
            if failure is not None:
                default_code, default_message = ERRORS.get(
                    failure.status, (failure.status, "Error")
                )
                code = failure.code if failure.code is not None else default_code
                text = failure.message or KNOWN_CODES.get(code) or default_message
                if failure.retry_after is not None:
                    headers["Retry-After"] = str(failure.retry_after)
                raise _ApiError(failure.status, code, text)
            message_sid = "SM" + secrets.token_hex(16)
            status, body = 201, self._message(message_sid, params)
        except _ApiError as error:
            status = error.status
            body = error_body(error.status, error.code, error.message)
        with self._cond:
            self._state.calls.append(
                Call(
                    params,
                    status,
                    time.monotonic(),
                    message_sid if status == 201 else None,
                )
            )
            self._cond.notify_all()
        return status, body, headers

    def _message(self, message_sid: str, params: dict[str, str]) -> dict[str, Any]:
        to, sender, body = params.get("To"), params.get("From"), params.get("Body")
        if not to:
            raise _ApiError(400, 21604, "A 'To' phone number is required.")
        if not E164.fullmatch(to):
            raise _ApiError(
                400, 21211, f"The 'To' number {to} is not a valid phone number."
            )
        if not sender:
            raise _ApiError(400, 21603, "A 'From' phone number is required.")
        if not body:
            raise _ApiError(400, 21602, "Message body is required.")
        if len(body.encode("utf-16-le")) // 2 > MAX_BODY:
            raise _ApiError(
                400,
                21617,
                "The concatenated message body exceeds the 1600 character limit.",
            )
        now = format_datetime(dt.datetime.now(dt.timezone.utc), usegmt=True)
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{message_sid}.json"
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": str(max(1, -(-len(body) // 153))),
            "price": None,
            "price_unit": "USD",
            "sid": message_sid,
            "status": "queued",
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": to,
            "uri": uri,
        }


class _Handler(BaseHTTPRequestHandler):
    """Parses a request and hands it to the fake."""

    fake: FakeTwilioApi
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet: tests read the recorded calls instead."""

    def do_GET(self) -> None:  # noqa: N802
        """Only message creation is faked."""
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._reply(404, error_body(404, 20404, ERRORS[404][1]))

    def do_POST(self) -> None:  # noqa: N802
        """Create a message."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        match = MESSAGES_PATH.fullmatch(urlsplit(self.path).path)
        if match is None:
            self._reply(404, error_body(404, 20404, ERRORS[404][1]))
            return
        try:
            params = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            self._reply(400, error_body(400, 20001, "Bad request body"))
            return
        status, body, headers = self.fake._answer(
            match.group(1), self.headers.get("Authorization"), params
        )
        self._reply(status, body, headers)

    def _reply(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


# --- webhooks as Twilio calls them (tests, end-to-end runs) ---------------------


@dataclass(frozen=True)
class WebhookReply:
    """What a webhook answered: status, body text and headers (lower-case names)."""

    status: int
    text: str
    headers: dict[str, str]


def signed_post(
    url_base: str,
    path: str,
    params: Mapping[str, str],
    auth_token: str,
    *,
    public_base: str | None = None,
    signature: str | None = None,
    timeout: float = 30.0,
) -> WebhookReply:
    """POST form ``params`` to ``url_base + path`` signed as Twilio would.

    The signature is over ``public_url(public_base or url_base, path)`` (``path``
    may carry a ``?query``) and the params, with ``auth_token``; ``signature``
    overrides it (``""``: no header at all). Blocking: from an event loop that
    serves the webhook, call it through ``asyncio.to_thread``.
    """
    target = url_base.rstrip("/") + "/" + path.lstrip("/")
    if signature is None:
        signature = sign(auth_token, public_url(public_base or url_base, path), params)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature:
        headers[SIGNATURE_HEADER] = signature
    request = urllib.request.Request(
        target, data=urlencode(dict(params)).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw, got = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, raw, got = error.code, error.read(), error.headers
    headers = {name.lower(): value for name, value in got.items()}
    return WebhookReply(status, raw.decode("utf-8", "replace"), headers)
