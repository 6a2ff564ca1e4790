"""Texts out through the Twilio REST API (the twilio SDK's ``Client``), with retries.

``TwilioSender.send_sms(to, body)`` creates one Message resource
(``POST {api_url}/2010-04-01/Accounts/{sid}/Messages.json``) and returns its
SID. The SDK's API domain is pointed at ``api_url`` (``client.api.base_url``;
``TWILIO_API_URL`` lets tests use a local fake that records calls), and the
requests go through a ``TwilioHttpClient`` with a timeout.

- **Retries.** HTTP 429 and 5xx answers and connection errors/timeouts are tried
  again, at most ``max_attempts`` calls in all, after ``base_delay * 2**n``
  seconds (capped at ``max_delay``); a ``Retry-After`` header is honoured (a
  wait longer than ``max_delay`` gives up at once). Then ``SmsFailed(reason,
  final=False)``: the caller may try again later.
- **Final.** Any other 4xx (21610 the recipient sent STOP, 21211 an invalid
  number, 21617 a body too long, 20003 bad credentials, ...) raises
  ``SmsFailed(reason, final=True)`` at once.
- **Reasons** are short and never hold the number or the text (Twilio's own
  messages quote the number, so only the status and error code are kept).
- **Blocking.** The SDK is synchronous: callers on an event loop run
  ``send_sms`` in a thread (``asyncio.to_thread``). One sender may be shared by
  threads. No Rasa import (the console and the SMS worker use this module).

``split_sms`` cuts a long text into parts of at most 1,600 characters (Twilio's
limit for one message body) at paragraph, line or word boundaries.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from channels.backoff import backoff_delay

logger = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.twilio.com"
MAX_SMS_CHARS = 1600
MAX_PARTS = 5
ELLIPSIS = "..."
MAX_REASON = 200
# Twilio error codes worth a word in a failure reason (no personal data).
KNOWN_ERRORS = {
    20003: "authentication failed",
    20404: "resource not found",
    21211: "invalid 'To' number",
    21408: "region not enabled",
    21602: "message body required",
    21606: "'From' number cannot send SMS",
    21610: "recipient unsubscribed (STOP)",
    21612: "'To' number not reachable",
    21614: "'To' number is not a mobile number",
    21617: "message body too long",
}


class SmsFailed(Exception):
    """A message Twilio did not accept after the retries (or refused for good).

    ``reason`` is short and holds no personal data. ``final``: Twilio refused
    (a 4xx other than 429), trying again will not help; False when the
    retries ran out on a temporary error (429, 5xx, network).
    """

    def __init__(self, reason: str, *, final: bool = False) -> None:
        """Remember the reason and whether the failure is final."""
        super().__init__(reason)
        self.reason = reason
        self.final = final


def _units(char: str) -> int:
    """UTF-16 units of ``char`` (how Twilio and phones count message length)."""
    return 2 if ord(char) > 0xFFFF else 1


def _fitting(text: str, limit: int) -> int:
    """Length of the longest prefix of ``text`` of at most ``limit`` UTF-16 units."""
    total = 0
    for index, char in enumerate(text):
        total += _units(char)
        if total > limit:
            return index
    return len(text)


def split_sms(
    text: str, limit: int = MAX_SMS_CHARS, max_parts: int = MAX_PARTS
) -> list[str]:
    """Split ``text`` into at most ``max_parts`` message bodies of ``limit`` units.

    Cuts at the last blank line in the window, else the last line break, else
    the last space, as long as that keeps at least half the window; otherwise
    hard at the limit. Parts are stripped; a blank ``text`` gives ``[]``. Text
    beyond ``max_parts`` parts is dropped and the last part ends with ``...``.

    Raises:
        ValueError: ``limit`` below 10 or ``max_parts`` below 1.
    """
    if limit < 10 or max_parts < 1:
        raise ValueError("limit must be at least 10 and max_parts at least 1")
    parts: list[str] = []
    rest = (text or "").strip()
    while rest:
        end = _fitting(rest, limit)
        if end >= len(rest):
            parts.append(rest)
            rest = ""
            break
        if len(parts) == max_parts - 1:  # the last allowed part: cut and mark
            end = _fitting(rest, limit - len(ELLIPSIS))
            space = rest.rfind(" ", 0, end + 1)
            cut = space if space >= end // 2 else end
            parts.append(rest[:cut].rstrip() + ELLIPSIS)
            rest = ""
            break
        cut = end
        for separator in ("\n\n", "\n", " "):
            index = rest.rfind(separator, 0, end)
            if index >= end // 2 and rest[:index].strip():
                cut = index
                break
        part, rest = rest[:cut].rstrip(), rest[cut:].lstrip()
        if part:
            parts.append(part)
    return parts


class _HttpClient(TwilioHttpClient):
    """The SDK's requests client; keeps the last response's headers per thread.

    The SDK's ``TwilioRestException`` does not carry the response headers,
    which ``Retry-After`` needs.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout=timeout, logger=logging.getLogger("twilio.http"))
        self._local = threading.local()

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        self._local.headers = None
        response = super().request(method, url, *args, **kwargs)
        self._local.headers = response.headers
        return response

    def last_headers(self) -> Any:
        """The headers of this thread's last response (None when there was none)."""
        return getattr(self._local, "headers", None)


def retry_after(headers: Any) -> float | None:
    """Seconds of a ``Retry-After`` header given in seconds, else None."""
    if not headers:
        return None
    value = headers.get("Retry-After")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None


class TwilioSender:
    """Sends SMS through the Twilio REST API with retries (see the module docstring)."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_number: str,
        api_url: str = DEFAULT_API_URL,
        *,
        max_attempts: int = 5,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        timeout: float = 10.0,
    ) -> None:
        """Build the SDK client on ``api_url``; no network call yet.

        Raises:
            ValueError: an empty account SID, token or sender number, or a
                non-positive attempt count or timeout.
        """
        if not account_sid or not auth_token or not from_number:
            raise ValueError("a Twilio account SID, auth token and number are required")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.account_sid = account_sid
        self.from_number = from_number
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._http = _HttpClient(timeout)
        self.client = Client(account_sid, auth_token, http_client=self._http)
        # TWILIO_EDGE / TWILIO_REGION in the environment would rewrite the host.
        self.client.edge = None
        self.client.region = None
        self.client.api.base_url = (api_url or DEFAULT_API_URL).rstrip("/")

    def send_sms(self, to: str, body: str) -> str:
        """Send ``body`` to the E.164 number ``to``; return the Message SID.

        Raises:
            SmsFailed: refused (``final``) or not accepted after the retries.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                message = self.client.messages.create(
                    to=to, from_=self.from_number, body=body
                )
                return str(message.sid)
            except TwilioRestException as error:
                wait = self._retry_wait(error, attempt)
            except requests.RequestException as error:  # connection, timeout
                if attempt >= self.max_attempts:
                    raise SmsFailed(
                        self._reason(f"network error ({type(error).__name__})", attempt)
                    ) from error
                wait = self._backoff(attempt)
            except (TwilioException, ValueError) as error:  # not a Twilio answer
                if attempt >= self.max_attempts:
                    raise SmsFailed(
                        self._reason("unreadable answer from Twilio", attempt)
                    ) from error
                wait = self._backoff(attempt)
            logger.warning(
                "twilio: sending an SMS failed, attempt %d of %d, retrying in %.2f s",
                attempt,
                self.max_attempts,
                wait,
            )
            time.sleep(wait)

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self.base_delay, self.max_delay)

    def _retry_wait(self, error: TwilioRestException, attempt: int) -> float:
        """Seconds to wait before trying again after ``error``.

        Raises:
            SmsFailed: a final refusal, or no retry left / allowed.
        """
        status = int(error.status or 0)
        description = describe(error)
        if status != 429 and not 500 <= status < 600:
            raise SmsFailed(self._reason(description, attempt), final=True) from error
        if attempt >= self.max_attempts:
            raise SmsFailed(self._reason(description, attempt)) from error
        wait = retry_after(self._http.last_headers()) if status == 429 else None
        if wait is None:
            return self._backoff(attempt)
        if wait > self.max_delay:
            raise SmsFailed(
                self._reason(f"{description}, retry after {wait:g} s", attempt)
            ) from error
        return wait

    @staticmethod
    def _reason(text: str, attempts: int) -> str:
        if attempts > 1:
            text += f" (after {attempts} attempts)"
        return text[:MAX_REASON]


def describe(error: TwilioRestException) -> str:
    """``HTTP 400, Twilio error 21610 (recipient unsubscribed (STOP))``, no data."""
    status = int(error.status or 0)
    code = error.code if isinstance(error.code, int) else None
    text = f"HTTP {status}"
    if code is not None and code != status:
        text += f", Twilio error {code}"
        if code in KNOWN_ERRORS:
            text += f" ({KNOWN_ERRORS[code]})"
    return text
