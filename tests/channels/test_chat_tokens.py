"""Web chat session tokens and the control token (pure functions, no mocks)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import pytest

from channels.chat_tokens import (
    SESSION_ID,
    InvalidChatToken,
    control_token,
    derive_key,
    issue_chat_token,
    token_expiry,
    verify_chat_token,
)

SECRET = "s" * 40
OTHER = "o" * 40
T0 = 1_800_000_000


def test_a_new_token_names_a_fresh_random_session() -> None:
    token, session = issue_chat_token(SECRET, now=T0)
    assert SESSION_ID.match(session) and len(session) == 22
    assert verify_chat_token(SECRET, token, now=T0 + 1) == session
    assert issue_chat_token(SECRET, now=T0)[1] != session


def test_a_session_can_be_reissued_with_a_new_expiry() -> None:
    first, session = issue_chat_token(SECRET, now=T0, ttl_seconds=60)
    second, same = issue_chat_token(SECRET, session, now=T0 + 50, ttl_seconds=60)
    assert same == session and second != first
    assert verify_chat_token(SECRET, second, now=T0 + 100) == session
    with pytest.raises(InvalidChatToken, match="expired"):
        verify_chat_token(SECRET, first, now=T0 + 100)


def test_expiry_is_exclusive_and_datetimes_are_utc() -> None:
    at = dt.datetime(2027, 1, 1, 12, 0)
    token, session = issue_chat_token(SECRET, now=at, ttl_seconds=10)
    assert (
        token_expiry(token) == int(at.replace(tzinfo=dt.timezone.utc).timestamp()) + 10
    )
    assert verify_chat_token(SECRET, token, now=at + dt.timedelta(seconds=9)) == session
    with pytest.raises(InvalidChatToken, match="expired"):
        verify_chat_token(SECRET, token, now=at + dt.timedelta(seconds=10))


def test_another_secret_or_a_changed_part_is_refused() -> None:
    token, session = issue_chat_token(SECRET, now=T0)
    with pytest.raises(InvalidChatToken, match="signature"):
        verify_chat_token(OTHER, token, now=T0)
    version, sid, expires, sig = token.split(".")
    other_session = ("A" if sid[0] != "A" else "B") + sid[1:]
    for forged in (
        f"{version}.{other_session}.{expires}.{sig}",
        f"{version}.{sid}.{int(expires) + 3600}.{sig}",
        f"{version}.{sid}.{expires}.{sig[:-1]}{'A' if sig[-1] != 'A' else 'B'}",
    ):
        with pytest.raises(InvalidChatToken):
            verify_chat_token(SECRET, forged, now=T0)


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        42,
        {"token": "x"},
        "v1.abc",
        "v2.AAAAAAAAAAAAAAAAAAAAAA.1900000000.sig",
        "v1.short.1900000000.sig",
        "v1.AAAAAAAAAAAAAAAAAAAAAA.-5.sig",
        "v1.AAAAAAAAAAAAAAAAAAAAAA.1900000000.sig.extra",
        "v1.AAAAAAAAAAAAAAAAAAAAAA.1900000000.\ud800",
        "v1.AAAAAAAAAAAAAAAAAAAAAA.1900000000.é",
        "x" * 5000,
    ],
)
def test_malformed_tokens_are_refused(token: object) -> None:
    with pytest.raises(InvalidChatToken):
        verify_chat_token(SECRET, token, now=T0)


def test_a_client_chosen_session_id_must_be_well_formed() -> None:
    for bad in ("", "short", "a" * 23, "a.b" + "c" * 19, "../" + "a" * 19):
        with pytest.raises(ValueError, match="22"):
            issue_chat_token(SECRET, bad)
    with pytest.raises(ValueError, match="ttl"):
        issue_chat_token(SECRET, ttl_seconds=0)


def test_keys_are_derived_per_purpose() -> None:
    chat = derive_key(SECRET, "chat-token")
    control = derive_key(SECRET, "control")
    assert chat != control and len(chat) == 32
    assert chat == hmac.new(SECRET.encode(), b"chat-token", hashlib.sha256).digest()
    assert control_token(SECRET) == control.hex()
    assert control_token(SECRET) != control_token(OTHER)
    with pytest.raises(ValueError):
        derive_key("", "control")


def test_a_control_token_is_not_a_chat_token() -> None:
    with pytest.raises(InvalidChatToken):
        verify_chat_token(SECRET, control_token(SECRET), now=T0)
