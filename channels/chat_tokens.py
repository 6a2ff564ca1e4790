"""Signed web-chat session tokens and the console -> Rasa control token.

Both sides share ``CRM_CONSOLE_SECRET``; each use gets its own key derived
from it (``derive_key``), so a chat token can never serve as a control token
or the other way round.

A chat token is ``v1.<session id>.<expiry>.<signature>``: the session id is 22
URL-safe random characters issued by the console (a client never chooses it),
the expiry is a Unix time in seconds, and the signature is the URL-safe base64
HMAC-SHA256 of ``v1.<session id>.<expiry>`` under ``derive_key(secret,
"chat-token")``. The web chat channel accepts a socket only with a valid,
unexpired token and puts it in the room ``web:<session id>``.

No Rasa, FastAPI or store imports: the console and the Rasa server both use it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
import time

VERSION = "v1"
CHAT_PURPOSE = "chat-token"
CONTROL_PURPOSE = "control"
EMAIL_INGRESS_PURPOSE = "email-ingress"
DEFAULT_TTL_SECONDS = 86400 * 7
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")
MAX_TOKEN_CHARS = 128


class InvalidChatToken(ValueError):
    """A chat token that is malformed, forged or expired."""


def derive_key(secret: str, purpose: str) -> bytes:
    """Return the key for ``purpose``: HMAC-SHA256(secret, purpose).

    Raises:
        ValueError: the secret or the purpose is empty.
    """
    if not secret or not purpose:
        raise ValueError("derive_key needs a secret and a purpose")
    return hmac.new(
        secret.encode("utf-8"), purpose.encode("utf-8"), hashlib.sha256
    ).digest()


def control_token(secret: str) -> str:
    """The bearer token of the Rasa server's control routes (hex)."""
    return derive_key(secret, CONTROL_PURPOSE).hex()


def email_ingress_token(secret: str) -> str:
    """The bearer token the SMTP listener shows the Rasa server's e-mail route (hex)."""
    return derive_key(secret, EMAIL_INGRESS_PURPOSE).hex()


def new_session_id() -> str:
    """A fresh session id: 22 URL-safe random characters (128 bits)."""
    return secrets.token_urlsafe(16)


def _unix(now: dt.datetime | float | None) -> float:
    if now is None:
        return time.time()
    if isinstance(now, dt.datetime):
        if now.tzinfo is None:  # the store's convention: naive means UTC
            now = now.replace(tzinfo=dt.timezone.utc)
        return now.timestamp()
    return float(now)


def _signature(secret: str, body: str) -> str:
    digest = hmac.new(
        derive_key(secret, CHAT_PURPOSE), body.encode("ascii"), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def issue_chat_token(
    secret: str,
    session_id: str | None = None,
    *,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    now: dt.datetime | float | None = None,
) -> tuple[str, str]:
    """Return ``(token, session_id)``; a new session id unless one is given.

    Args:
        secret: the console secret.
        session_id: re-use this session (e.g. from a still valid cookie).
        ttl_seconds: lifetime of the token.
        now: the issue time (datetime, naive = UTC, or Unix seconds).

    Raises:
        ValueError: a malformed session id or a non-positive ttl.
    """
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    if session_id is None:
        session_id = new_session_id()
    elif not SESSION_ID.match(session_id):
        raise ValueError("a session id is 22 URL-safe characters")
    expires = int(_unix(now)) + int(ttl_seconds)
    body = f"{VERSION}.{session_id}.{expires}"
    return f"{body}.{_signature(secret, body)}", session_id


def token_expiry(token: str) -> int:
    """The Unix expiry written in a token (not verified: call ``verify`` first).

    Raises:
        InvalidChatToken: the token is malformed.
    """
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 4 or not parts[2].isdigit():
        raise InvalidChatToken("malformed chat token")
    return int(parts[2])


def verify_chat_token(
    secret: str, token: object, *, now: dt.datetime | float | None = None
) -> str:
    """Return the session id of a valid token.

    Raises:
        InvalidChatToken: not a string, malformed, wrong signature or expired.
    """
    if not isinstance(token, str) or not token:
        raise InvalidChatToken("missing chat token")
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise InvalidChatToken("malformed chat token")
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != VERSION:
        raise InvalidChatToken("malformed chat token")
    _, session_id, expires, signature = parts
    if not SESSION_ID.match(session_id) or not expires.isdigit():
        raise InvalidChatToken("malformed chat token")
    expected = _signature(secret, f"{VERSION}.{session_id}.{expires}")
    if not hmac.compare_digest(expected.encode(), signature.encode("ascii")):
        raise InvalidChatToken("chat token signature mismatch")
    if int(expires) <= _unix(now):
        raise InvalidChatToken("chat token expired")
    return session_id
