"""Signed identity assertions in message metadata (the only trusted identity on REST).

The REST webhook is the public web chat, so anyone can put anything in
``metadata``. A trusted backend that knows who the sender is (the web shop, after
login) signs an assertion with the shared secret (``CRM_IDENTITY_SECRET``, at
least 32 bytes; callers pass it in, see :func:`secret_value`) and hands it to
the chat widget, which sends it as ``metadata["identity"]``:

    {"v": 2, "sender": "<client sender id>", "kind": "email", "value": "a@b.nl",
     "iat": 1764590000, "exp": 1764590300, "nonce": "<32-64 hex>", "sig": "<hex>"}

- ``sig`` is the hex HMAC-SHA256 of the canonical JSON of every other field
  (sorted keys, no spaces, ASCII escapes), so no two field sets sign the same
  bytes (``sender="a|b", kind="c"`` and ``sender="a", kind="b|c"`` differ).
- ``sender`` is the sender id the *client* uses in the webhook body; the REST
  channel namespaces it (tracker key ``rest:<sender>``, ``channels.keys``), and the
  verifier accepts an assertion only on that sender's REST tracker, never on
  another channel's.
- ``iat``/``exp`` are Unix seconds; ``exp - iat`` is at most the configured TTL
  (``CRM_IDENTITY_ASSERTION_TTL_SECONDS``); an ``iat`` up to ``CLOCK_SKEW_SECONDS``
  in the future is tolerated, an expired one is not.
- ``nonce`` makes each assertion single-use: the verifier returns it and the
  caller consumes it in the store (``crm_store.services.nonces.consume_nonce``)
  before trusting the claim.

Anything malformed (wrong types, non-hex or non-ASCII signature, short key) is
refused with ``None``, never an exception. No secret configured means no claim
is trusted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from channels.keys import rest_sender
from crm_settings import Settings

VERSION = 2
MIN_KEY_BYTES = 32
DEFAULT_TTL_SECONDS = 300
CLOCK_SKEW_SECONDS = 30
MAX_FIELD_CHARS = 320
NONCE_BYTES = 16
_NONCE = re.compile(r"[0-9a-f]{32,64}")
_SIG = re.compile(r"[0-9a-f]{64}")
SIGNED_FIELDS = ("v", "sender", "kind", "value", "iat", "exp", "nonce")


@dataclass(frozen=True)
class Assertion:
    """A verified claim; trust it only once its nonce was consumed."""

    kind: str
    value: str
    nonce: str
    expires_at: dt.datetime  # naive UTC, as the store keeps timestamps


def _key(secret: str) -> bytes:
    key = secret.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the identity secret must be at least {MIN_KEY_BYTES} bytes")
    return key


def canonical(fields: dict[str, Any]) -> bytes:
    """The exact bytes that are signed: the signed fields as canonical JSON."""
    signed = {name: fields[name] for name in SIGNED_FIELDS}
    text = json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return text.encode("ascii")


def sign(secret: str, fields: dict[str, Any]) -> str:
    """Return the hex HMAC-SHA256 of ``canonical(fields)``.

    Raises:
        ValueError: the secret is shorter than ``MIN_KEY_BYTES``.
    """
    return hmac.new(_key(secret), canonical(fields), hashlib.sha256).hexdigest()


def metadata_for(
    secret: str,
    sender: str,
    kind: str,
    value: str,
    *,
    ttl: int = DEFAULT_TTL_SECONDS,
    now: float | None = None,
    nonce: str | None = None,
) -> dict[str, Any]:
    """Return message metadata carrying a fresh signed assertion for ``sender``.

    Args:
        secret: the shared secret (at least ``MIN_KEY_BYTES`` bytes).
        sender: the client's sender id (as in the REST webhook body).
        kind: the identity kind (``email``, ``phone``, ...).
        value: the identity, as registered on the customer.
        ttl: seconds until the assertion expires.
        now: issue time (Unix seconds), default the current time.
        nonce: hex nonce, default ``NONCE_BYTES`` random bytes.
    """
    iat = int(time.time() if now is None else now)
    fields: dict[str, Any] = {
        "v": VERSION,
        "sender": sender,
        "kind": kind,
        "value": value,
        "iat": iat,
        "exp": iat + int(ttl),
        "nonce": nonce or secrets.token_hex(NONCE_BYTES),
    }
    return {"identity": {**fields, "sig": sign(secret, fields)}}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_text(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_FIELD_CHARS


def _well_formed(claim: dict[str, Any]) -> bool:
    return (
        _is_int(claim.get("v"))
        and claim["v"] == VERSION
        and all(_is_text(claim.get(name)) for name in ("sender", "kind", "value"))
        and _is_int(claim.get("iat"))
        and _is_int(claim.get("exp"))
        and isinstance(claim.get("nonce"), str)
        and _NONCE.fullmatch(claim["nonce"]) is not None
        and isinstance(claim.get("sig"), str)
        and _SIG.fullmatch(claim["sig"]) is not None
    )


def verify_assertion(
    secret: str | None,
    tracker_key: str,
    metadata: object,
    *,
    max_ttl: int = DEFAULT_TTL_SECONDS,
    now: float | None = None,
) -> Assertion | None:
    """Return the assertion in ``metadata`` if it is valid now for ``tracker_key``.

    Checks format, signature, that the signed sender is the REST client of
    ``tracker_key``, the lifetime (``exp - iat <= max_ttl``) and the time window.
    The nonce is *not* consumed here (see the module docstring).
    """
    if not secret or len(secret.encode("utf-8")) < MIN_KEY_BYTES:
        return None
    if not isinstance(metadata, dict):
        return None
    claim = metadata.get("identity")
    if not isinstance(claim, dict) or not _well_formed(claim):
        return None
    if claim["sender"] != rest_sender(tracker_key):
        return None
    expected = sign(secret, claim)
    if not hmac.compare_digest(expected, claim["sig"]):
        return None
    now = time.time() if now is None else now
    iat, exp = claim["iat"], claim["exp"]
    if not 0 < exp - iat <= max_ttl:
        return None
    if iat > now + CLOCK_SKEW_SECONDS or now >= exp:
        return None
    expires_at = dt.datetime.fromtimestamp(exp, dt.timezone.utc).replace(tzinfo=None)
    return Assertion(claim["kind"], claim["value"], claim["nonce"], expires_at)


def secret_value(settings: Settings) -> str | None:
    """Return the signing secret of ``settings`` in clear, or None when unset."""
    secret = settings.identity_secret
    if secret is None:
        return None
    return secret.get_secret_value() or None
