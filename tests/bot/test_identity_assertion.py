"""Signed identity assertions v2: format, signature, sender binding, lifetime."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from typing import Any

import pytest

from channels.identity_assertion import (
    CLOCK_SKEW_SECONDS,
    Assertion,
    canonical,
    metadata_for,
    secret_value,
    sign,
    verify_assertion,
)
from crm_settings import Settings

KEY = "k" * 32
NOW = 1_764_590_000
NONCE = "0f" * 16
TRACKER = "rest:web-1"


def assertion(**changes: Any) -> dict[str, Any]:
    meta = metadata_for(KEY, "web-1", "email", "a@example.com", now=NOW, nonce=NONCE)
    return {"identity": {**meta["identity"], **changes}}


def verify(meta: object, *, key: str | None = KEY, at: float = NOW + 1, **kw: Any):
    return verify_assertion(key, kw.pop("tracker", TRACKER), meta, now=at, **kw)


def test_round_trip() -> None:
    found = verify(assertion())
    assert found == Assertion(
        "email",
        "a@example.com",
        NONCE,
        dt.datetime.fromtimestamp(NOW + 300, dt.timezone.utc).replace(tzinfo=None),
    )


def test_fresh_assertions_have_random_nonces_and_current_time() -> None:
    first = metadata_for(KEY, "web-1", "email", "a@example.com")["identity"]
    second = metadata_for(KEY, "web-1", "email", "a@example.com")["identity"]
    assert first["nonce"] != second["nonce"] and len(first["nonce"]) == 32
    assert verify_assertion(KEY, TRACKER, {"identity": first}) is not None


@pytest.mark.parametrize(
    "field",
    ["v", "sender", "kind", "value", "iat", "exp", "nonce", "sig"],
)
def test_tampering_with_any_field_is_refused(field: str) -> None:
    original = assertion()["identity"][field]
    if isinstance(original, int):
        changed: Any = original + 1
    elif field in ("nonce", "sig"):
        changed = ("1" if original[0] != "1" else "2") + original[1:]
    else:
        changed = original + "x"
    assert verify(assertion(**{field: changed})) is None


def test_signature_is_hmac_sha256_over_canonical_json() -> None:
    fields = assertion()["identity"]
    message = json.dumps(
        {k: fields[k] for k in ("v", "sender", "kind", "value", "iat", "exp", "nonce")},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    assert canonical(fields) == message
    expected = hmac.new(KEY.encode(), message, hashlib.sha256).hexdigest()
    assert sign(KEY, fields) == expected == fields["sig"]


def test_fields_are_not_ambiguous() -> None:
    one = metadata_for(KEY, "a|b", "c", "v", now=NOW, nonce=NONCE)["identity"]
    two = metadata_for(KEY, "a", "b|c", "v", now=NOW, nonce=NONCE)["identity"]
    assert one["sig"] != two["sig"]
    swapped = {**two, "sig": one["sig"]}
    assert verify({"identity": swapped}, tracker="rest:a") is None
    assert verify({"identity": one}, tracker="rest:a|b") is not None


def test_wrong_key_sender_or_channel_is_refused() -> None:
    meta = assertion()
    assert verify(meta, key="x" * 32) is None
    assert verify(meta, key=None) is None
    assert verify(meta, tracker="rest:web-2") is None
    assert verify(meta, tracker="web-1") is None  # not a REST tracker key
    assert verify(meta, tracker="telegram:web-1") is None
    assert verify(meta, tracker="rest:rest:web-1") is None
    assert verify(assertion(sender="web-2"), tracker="rest:web-2") is None


def test_expiry_and_not_yet_valid() -> None:
    meta = assertion()
    assert verify(meta, at=NOW + 299) is not None
    assert verify(meta, at=NOW + 300) is None
    assert verify(meta, at=NOW + 10_000) is None
    assert verify(meta, at=NOW - CLOCK_SKEW_SECONDS) is not None  # clock skew
    assert verify(meta, at=NOW - CLOCK_SKEW_SECONDS - 1) is None


def test_lifetime_is_capped_by_the_ttl() -> None:
    long = metadata_for(KEY, "web-1", "email", "a@b.nl", ttl=3600, now=NOW)
    assert verify(long) is None
    assert verify(long, max_ttl=3600) is not None
    backwards = metadata_for(KEY, "web-1", "email", "a@b.nl", ttl=-5, now=NOW)
    assert verify(backwards, at=NOW - 10) is None


@pytest.mark.parametrize(
    "changes",
    [
        {"sig": "é" * 64},  # non-ASCII
        {"sig": "g" * 64},  # not hex
        {"sig": "AB" * 32},  # upper case
        {"sig": "ab"},
        {"sig": 7},
        {"sig": None},
        {"nonce": "ab" * 8},  # 8 bytes: too short
        {"nonce": "zz" * 16},
        {"nonce": 12345},
        {"iat": "1764590000"},
        {"iat": True},
        {"exp": 1.5},
        {"v": 1},
        {"v": True},
        {"kind": ""},
        {"value": ["a@example.com"]},
        {"sender": {"id": "web-1"}},
        {"value": "x" * 10_000},
    ],
)
def test_malformed_claims_are_refused_without_an_exception(
    changes: dict[str, Any],
) -> None:
    assert verify(assertion(**changes)) is None


@pytest.mark.parametrize(
    "metadata",
    [None, "identity", [], {}, {"identity": "x"}, {"identity": []}, {"identity": {}}],
)
def test_malformed_metadata_is_refused(metadata: object) -> None:
    assert verify(metadata) is None


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        metadata_for("short", "web-1", "email", "a@example.com")
    meta = assertion()
    assert verify(meta, key="k" * 31) is None
    assert verify(meta, key="") is None


def test_secret_comes_from_the_settings_object() -> None:
    assert secret_value(Settings(identity_secret=KEY)) == KEY
    assert secret_value(Settings(identity_secret=None)) is None
    secret = secret_value(Settings(identity_secret=KEY))
    assert verify(assertion(), key=secret) is not None
