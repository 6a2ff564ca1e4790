"""One-time codes: 6 digits sent to an address to prove the customer controls it.

A code is returned in clear once, by :func:`issue_code`, for the caller to send
(through the ``Notifier``); the store keeps only ``salt$hash`` (scrypt, per-row
salt). A code expires after ``CODE_TTL``, allows ``MAX_TRIES`` wrong entries,
is consumed by the first right one, and issuing a new code for the same customer
and purpose invalidates the older ones. At most ``MAX_CODES_PER_HOUR`` codes per
customer, so the bot cannot be used to flood an address.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput, NotFound, StoreError
from crm_store.models import Customer, OneTimeCode, utcnow

CODE_TTL = dt.timedelta(minutes=10)
MAX_TRIES = 5
MAX_CODES_PER_HOUR = 5
CODE_RE = re.compile(r"[0-9]{6}")
# scrypt cost: ~16 MB and tens of milliseconds per hash, so a stolen table
# cannot be reversed quickly although a code has only a million values.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}

CodeStatus = Literal["ok", "wrong", "expired", "exhausted", "none"]


class TooManyCodes(StoreError):
    """The customer asked for too many codes in the last hour."""

    default_message = "Too many codes requested; please try again later."


@dataclass(frozen=True)
class CodeCheck:
    """The outcome of typing a code.

    ``ok``: right code, now consumed (``kind``/``value``: what it was sent to);
    ``wrong``: ``tries_left`` more attempts; ``expired``; ``exhausted`` (the
    last try failed, the code is void); ``none``: no code pending.
    """

    status: CodeStatus
    tries_left: int = 0
    kind: str | None = None
    value: str | None = None


def hash_code(code: str, *, salt: bytes | None = None) -> str:
    """Return ``salt$hash`` (hex) of ``code`` with a new random salt unless given."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(code.encode(), salt=salt, **_SCRYPT)
    return f"{salt.hex()}${digest.hex()}"


def code_matches(code: str, stored: str) -> bool:
    """Tell whether ``code`` hashes to ``stored`` (constant-time compare)."""
    salt_hex, _, _ = stored.partition("$")
    try:
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    return hmac.compare_digest(hash_code(code, salt=salt), stored)


def _text(name: str, value: object, max_len: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise InvalidInput(f"{name} must be a non-empty string of <= {max_len} chars")
    return value


def issue_code(
    session: Session,
    *,
    customer_id: str,
    purpose: str,
    kind: str,
    value: str,
    now: dt.datetime | None = None,
) -> str:
    """Create a code for ``customer_id`` and ``purpose``; return it in clear, once.

    ``kind``/``value`` say where the code goes (e.g. ``email``, the new address);
    :func:`check_code` hands them back when the right code is typed.

    Raises:
        InvalidInput: empty or over-long arguments.
        NotFound: unknown customer.
        TooManyCodes: ``MAX_CODES_PER_HOUR`` codes issued in the last hour.
    """
    _text("customer_id", customer_id, 32)
    _text("purpose", purpose, 32)
    _text("kind", kind, 16)
    _text("value", value, 254)
    if session.get(Customer, customer_id) is None:
        raise NotFound(f"customer {customer_id} not found")
    now = now or utcnow()
    recent = session.execute(
        select(func.count(OneTimeCode.id)).where(
            OneTimeCode.customer_id == customer_id,
            OneTimeCode.created_at > now - dt.timedelta(hours=1),
        )
    ).scalar_one()
    if recent >= MAX_CODES_PER_HOUR:
        raise TooManyCodes()
    for older in _pending(session, customer_id, purpose):
        older.consumed_at = now
    code = f"{secrets.randbelow(10**6):06d}"
    session.add(
        OneTimeCode(
            customer_id=customer_id,
            purpose=purpose,
            kind=kind,
            value=value,
            code_hash=hash_code(code),
            attempts=0,
            created_at=now,
            expires_at=now + CODE_TTL,
        )
    )
    session.flush()
    return code


def check_code(
    session: Session,
    *,
    customer_id: str,
    purpose: str,
    code: str,
    now: dt.datetime | None = None,
) -> CodeCheck:
    """Check a typed code against the customer's pending code for ``purpose``.

    A right code is consumed; a wrong one counts a try, the ``MAX_TRIES``-th
    voids the code. Expired codes are voided when checked.

    Raises:
        InvalidInput: ``code`` is not a string of exactly 6 digits (not counted
            as a try: the caller should have asked again), or bad ids.
    """
    _text("customer_id", customer_id, 32)
    _text("purpose", purpose, 32)
    if not isinstance(code, str) or not CODE_RE.fullmatch(code):
        raise InvalidInput("a code is 6 digits")
    now = now or utcnow()
    pending = _pending(session, customer_id, purpose, lock=True)
    if not pending:
        return CodeCheck("none")
    row = pending[0]
    if now >= row.expires_at:
        row.consumed_at = now
        session.flush()
        return CodeCheck("expired")
    if code_matches(code, row.code_hash):
        row.consumed_at = now
        session.flush()
        return CodeCheck("ok", MAX_TRIES - row.attempts, row.kind, row.value)
    row.attempts += 1
    if row.attempts >= MAX_TRIES:
        row.consumed_at = now
        session.flush()
        return CodeCheck("exhausted")
    session.flush()
    return CodeCheck("wrong", MAX_TRIES - row.attempts)


def _pending(
    session: Session, customer_id: str, purpose: str, *, lock: bool = False
) -> list[OneTimeCode]:
    """The customer's unconsumed codes for ``purpose``, newest first."""
    query = (
        select(OneTimeCode)
        .where(
            OneTimeCode.customer_id == customer_id,
            OneTimeCode.purpose == purpose,
            OneTimeCode.consumed_at.is_(None),
        )
        .order_by(OneTimeCode.created_at.desc(), OneTimeCode.id.desc())
    )
    if lock:
        query = query.with_for_update()
    return list(session.execute(query).scalars())
