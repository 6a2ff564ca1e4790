"""Canonical forms of channel identity values, so lookups match however typed."""

from __future__ import annotations

import re

from crm_store.errors import InvalidInput
from crm_store.models import IDENTITY_KINDS

_PHONE_STRIP = re.compile(r"[\s\-().]")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize_identity(kind: str, value: str) -> str:
    """Return the canonical value of a channel identity or raise ``InvalidInput``.

    Emails are lower-cased, phone numbers reduced to E.164 (``00`` -> ``+``),
    Telegram ids must be digits, web chat session ids are kept as given.
    """
    if kind not in IDENTITY_KINDS:
        raise InvalidInput(f"unknown identity kind {kind!r}")
    value = (value or "").strip()
    if not value:
        raise InvalidInput(f"empty {kind} identity")
    if kind == "email":
        value = value.lower()
        if not _EMAIL.match(value):
            raise InvalidInput("not an email address")
    elif kind == "phone":
        value = _PHONE_STRIP.sub("", value)
        if value.startswith("00"):
            value = "+" + value[2:]
        if not _E164.match(value):
            raise InvalidInput("not a phone number in international (E.164) form")
    elif kind == "telegram":
        if not value.isdigit():
            raise InvalidInput("a Telegram user id is a number")
    return value


def mask(kind: str, value: str) -> str:
    """Mask an identity for logs: ``f***@example.com``, ``+31******0001``."""
    if kind == "email" and "@" in value:
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    if kind == "phone" and len(value) > 6:
        return value[:3] + "*" * (len(value) - 7) + value[-4:]
    return value[:2] + "***"
