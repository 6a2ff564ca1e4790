"""Twilio webhook signatures: ``X-Twilio-Signature`` against the public URL.

Twilio signs the full URL it called (scheme, host, path and query) plus the
sorted POST parameters with the account's auth token (HMAC-SHA1). Behind a
reverse proxy the Rasa server sees another host and scheme, so the URL is
rebuilt from ``TWILIO_PUBLIC_URL`` (the public base, e.g.
``https://bot.example.com``) plus the webhook path and the request's query
string. The check is the SDK's ``RequestValidator`` (constant-time compare).
"""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator

SIGNATURE_HEADER = "X-Twilio-Signature"


def public_url(public_base: str, path: str, query: str = "") -> str:
    """The URL Twilio called: public base + path (+ ``?query`` when given)."""
    url = public_base.rstrip("/") + "/" + path.lstrip("/")
    return f"{url}?{query}" if query else url


def signature_ok(
    auth_token: str, url: str, params: Mapping[str, str], signature: str | None
) -> bool:
    """True when ``signature`` is Twilio's for ``url`` and the form ``params``."""
    if not auth_token or not signature:
        return False
    return bool(RequestValidator(auth_token).validate(url, dict(params), signature))


def sign(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The signature Twilio would send (tests and the local fakes use it)."""
    return RequestValidator(auth_token).compute_signature(url, dict(params))
