"""Signed identity claims in message metadata (the only trusted identity on REST).

The REST webhook is the public web chat, so anyone can put anything in
``metadata``. A channel connector (or the web chat page, after login) that knows
who the sender is signs ``sender|kind|value`` with the shared secret
(``CRM_IDENTITY_SECRET``, read by ``crm_settings``; callers pass it in, see
:func:`secret_value`); the actions trust a claim only if the signature matches. No
secret configured means no claim is trusted.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from crm_settings import Settings


def sign(secret: str, sender: str, kind: str, value: str) -> str:
    """Return the hex HMAC-SHA256 of ``f"{sender}|{kind}|{value}"`` under ``secret``."""
    message = f"{sender}|{kind}|{value}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def metadata_for(secret: str, sender: str, kind: str, value: str) -> dict[str, Any]:
    """Return message metadata carrying a signed identity claim."""
    return {
        "identity": {
            "kind": kind,
            "value": value,
            "sig": sign(secret, sender, kind, value),
        }
    }


def verified_identity(
    secret: str | None, sender: str, metadata: dict[str, Any] | None
) -> tuple[str, str] | None:
    """Return ``(kind, value)`` if ``metadata`` holds a valid claim for ``sender``."""
    if not secret or not isinstance(metadata, dict):
        return None
    claim = metadata.get("identity")
    if not isinstance(claim, dict):
        return None
    kind, value, sig = claim.get("kind"), claim.get("value"), claim.get("sig")
    if not all(isinstance(x, str) and x for x in (kind, value, sig)):
        return None
    expected = sign(secret, sender, kind, value)
    if not hmac.compare_digest(expected, sig):
        return None
    return kind, value


def secret_value(settings: Settings) -> str | None:
    """Return the signing secret of ``settings`` in clear, or None when unset."""
    secret = settings.identity_secret
    if secret is None:
        return None
    return secret.get_secret_value() or None
