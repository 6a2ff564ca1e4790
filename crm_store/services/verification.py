"""Order-number + postcode checks: attempts, lock-outs and rate limits in the store.

Every attempt is a ``verification_attempts`` row, so the counters hold across
conversations, sender ids and channels (a fresh sender id resets nothing).
Within the window (``VerificationLimits.window_minutes``, default 60):

- an **order** is locked once it has ``order_lock_failures`` failed attempts
  (from anyone); a number that is no order locks the same way, so a lock never
  tells whether an order exists;
- a **customer** is locked once their orders together have
  ``customer_lock_failures`` failures;
- a **sender** (tracker key) is limited after ``sender_limit`` failures, a
  **client** (hashed client address) after ``client_limit`` failures.

An attempt refused by a lock or limit is recorded as a failure too, so hammering
keeps the lock in place (back-off); a success resets nothing. Locks lift by
themselves when enough failures leave the window (``retry_after``). Two attempts
racing on the same order may both pass the check: the limit can be overshot by
the number of concurrent attempts, never more.

Client keys: ``client_key_for`` stores a salted SHA-256 of the client address,
never the address. The salt is the constant ``CLIENT_KEY_SALT`` (not a secret,
the same on every database), so keys are comparable across processes and
databases; it stops casual reading of addresses, not a determined brute force of
the IPv4 space. IPv6 addresses count per /64 network (one host owns a whole /64).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import InstrumentedAttribute

from crm_store.errors import InvalidInput
from crm_store.models import Order, VerificationAttempt, utcnow
from crm_store.services.orders import postcodes_match
from crm_store.services.references import normalize_order_number

CLIENT_KEY_SALT = "northwind-crm/verification-client/v1:"
MAX_SENDER_KEY = 255

Reason = Literal[
    "ok", "order_locked", "customer_locked", "sender_limited", "client_limited"
]


@dataclass(frozen=True)
class VerificationLimits:
    """Lock-out thresholds (the action server passes its settings)."""

    order_lock_failures: int = 5
    customer_lock_failures: int = 10
    sender_limit: int = 10
    client_limit: int = 30
    window_minutes: float = 60

    def __post_init__(self) -> None:
        counts = (
            self.order_lock_failures,
            self.customer_lock_failures,
            self.sender_limit,
            self.client_limit,
        )
        if min(counts) < 1 or self.window_minutes <= 0:
            raise InvalidInput("verification limits must be positive")

    @property
    def window(self) -> dt.timedelta:
        """The period over which failures count."""
        return dt.timedelta(minutes=self.window_minutes)


@dataclass(frozen=True)
class VerificationVerdict:
    """Whether a postcode check may run now; if not, why and for how long."""

    allowed: bool
    reason: Reason = "ok"
    retry_after: dt.timedelta | None = None


ALLOWED = VerificationVerdict(True)


@dataclass(frozen=True)
class PostcodeCheck:
    """The outcome of one recorded attempt.

    ``customer_id`` is set only when the postcode matched and nothing was
    locked; ``failures_left`` is how many more failures lock the order.
    """

    verdict: VerificationVerdict
    customer_id: str | None
    failures_left: int

    @property
    def verified(self) -> bool:
        """True when the attempt proved the customer."""
        return self.customer_id is not None


def client_key_for(client_ip: object, *, salt: str = CLIENT_KEY_SALT) -> str | None:
    """Return the salted hash stored for a client address, or None without one."""
    if not isinstance(client_ip, str) or not client_ip.strip():
        return None
    raw = client_ip.strip()[:64].lower()
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        canonical = raw
    else:
        if address.version == 6:
            mapped = address.ipv4_mapped  # type: ignore[union-attr]
            canonical = (
                str(mapped)
                if mapped
                else str(ipaddress.ip_network(f"{address}/64", strict=False))
            )
        else:
            canonical = str(address)
    return hashlib.sha256((salt + canonical).encode("utf-8")).hexdigest()


def _utc(at: dt.datetime | None) -> dt.datetime:
    if at is None:
        return utcnow()
    if at.tzinfo is not None:
        return at.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return at


def _sender(sender_key: str) -> str:
    if not isinstance(sender_key, str) or not sender_key:
        raise InvalidInput("a sender key is required")
    return sender_key[:MAX_SENDER_KEY]


def record_attempt(
    session: Session,
    *,
    order_id: str | None,
    customer_id: str | None,
    sender_key: str,
    client_key: str | None,
    succeeded: bool,
    at: dt.datetime | None = None,
) -> None:
    """Record one postcode check (``customer_id``: the order's owner, if any)."""
    session.add(
        VerificationAttempt(
            order_id=(order_id or None) and order_id[:32],
            customer_id=customer_id,
            sender_key=_sender(sender_key),
            client_key=client_key,
            succeeded=bool(succeeded),
            occurred_at=_utc(at),
        )
    )
    session.flush()


def _blocked_until(
    session: Session,
    column: InstrumentedAttribute,
    value: str,
    threshold: int,
    limits: VerificationLimits,
    at: dt.datetime,
) -> dt.timedelta | None:
    """Return the time left when ``threshold`` failures are in the window, else None.

    The lock lifts when the ``threshold``-th newest failure leaves the window.
    """
    nth = session.execute(
        select(VerificationAttempt.occurred_at)
        .where(
            column == value,
            VerificationAttempt.succeeded.is_(False),
            VerificationAttempt.occurred_at > at - limits.window,
            VerificationAttempt.occurred_at <= at,
        )
        .order_by(VerificationAttempt.occurred_at.desc())
        .offset(threshold - 1)
        .limit(1)
    ).scalar_one_or_none()
    if nth is None:
        return None
    return max(nth + limits.window - at, dt.timedelta(0))


def _verdict(
    session: Session,
    column: InstrumentedAttribute,
    value: str,
    threshold: int,
    limits: VerificationLimits,
    at: dt.datetime,
    reason: Reason,
) -> VerificationVerdict:
    """``ALLOWED``, or refused with ``reason`` while ``value`` is over its limit."""
    wait = _blocked_until(session, column, value, threshold, limits, at)
    if wait is None:
        return ALLOWED
    return VerificationVerdict(False, reason, wait)


def check_sender(
    session: Session,
    *,
    sender_key: str,
    client_key: str | None,
    limits: VerificationLimits,
    at: dt.datetime | None = None,
) -> VerificationVerdict:
    """Check the per-sender and per-client limits (before any order is named)."""
    now = _utc(at)
    verdict = _verdict(
        session,
        VerificationAttempt.sender_key,
        _sender(sender_key),
        limits.sender_limit,
        limits,
        now,
        "sender_limited",
    )
    if not verdict.allowed or not client_key:
        return verdict
    return _verdict(
        session,
        VerificationAttempt.client_key,
        client_key,
        limits.client_limit,
        limits,
        now,
        "client_limited",
    )


def check_order(
    session: Session,
    *,
    order_id: str,
    limits: VerificationLimits,
    at: dt.datetime | None = None,
) -> VerificationVerdict:
    """Check the order lock (any order number, existing or not)."""
    return _verdict(
        session,
        VerificationAttempt.order_id,
        normalize_order_number(order_id),
        limits.order_lock_failures,
        limits,
        _utc(at),
        "order_locked",
    )


def check_customer(
    session: Session,
    *,
    customer_id: str,
    limits: VerificationLimits,
    at: dt.datetime | None = None,
) -> VerificationVerdict:
    """Check the lock over all orders of one customer."""
    return _verdict(
        session,
        VerificationAttempt.customer_id,
        customer_id,
        limits.customer_lock_failures,
        limits,
        _utc(at),
        "customer_locked",
    )


def check_attempt(
    session: Session,
    *,
    order_id: str,
    sender_key: str,
    client_key: str | None,
    limits: VerificationLimits,
    at: dt.datetime | None = None,
) -> VerificationVerdict:
    """Check sender, client, order and (for an existing order) customer, in order."""
    verdict = check_sender(
        session, sender_key=sender_key, client_key=client_key, limits=limits, at=at
    )
    if not verdict.allowed:
        return verdict
    verdict = check_order(session, order_id=order_id, limits=limits, at=at)
    if not verdict.allowed:
        return verdict
    owner = _owner(session, normalize_order_number(order_id))
    if owner is None:
        return ALLOWED
    return check_customer(session, customer_id=owner, limits=limits, at=at)


def check_order_number(
    session: Session,
    *,
    order_id: str,
    sender_key: str,
    client_key: str | None,
    limits: VerificationLimits,
    at: dt.datetime | None = None,
) -> VerificationVerdict:
    """Check what may be told when an order number is named, before any postcode.

    Sender, client and order only: the customer lock is not checked here, since
    it would tell that the number is an existing order (``attempt_postcode``
    applies it, and a refused attempt looks like a wrong postcode).
    """
    verdict = check_sender(
        session, sender_key=sender_key, client_key=client_key, limits=limits, at=at
    )
    if not verdict.allowed:
        return verdict
    return check_order(session, order_id=order_id, limits=limits, at=at)


def _owner(session: Session, order_id: str) -> str | None:
    return session.execute(
        select(Order.customer_id).where(Order.id == order_id)
    ).scalar_one_or_none()


def _failures(
    session: Session, order_id: str, limits: VerificationLimits, at: dt.datetime
) -> int:
    return session.execute(
        select(func.count())
        .select_from(VerificationAttempt)
        .where(
            VerificationAttempt.order_id == order_id,
            VerificationAttempt.succeeded.is_(False),
            VerificationAttempt.occurred_at > at - limits.window,
            VerificationAttempt.occurred_at <= at,
        )
    ).scalar_one()


def attempt_postcode(
    session: Session,
    *,
    order_number: str,
    postcode: str,
    sender_key: str,
    client_key: str | None,
    limits: VerificationLimits,
    at: dt.datetime | None = None,
) -> PostcodeCheck:
    """Check ``postcode`` against the order's delivery postcode, within the limits.

    The postcode is compared only when no lock or limit applies; either way the
    attempt is recorded (refused attempts as failures).

    Raises:
        InvalidInput: ``order_number`` is not an order number, or no sender key.
    """
    now = _utc(at)
    number = normalize_order_number(order_number)
    verdict = check_attempt(
        session,
        order_id=number,
        sender_key=sender_key,
        client_key=client_key,
        limits=limits,
        at=now,
    )
    order = session.get(Order, number)
    owner = order.customer_id if order is not None else None
    matched = (
        verdict.allowed
        and order is not None
        and postcodes_match(order.delivery_postcode, postcode)
    )
    record_attempt(
        session,
        order_id=number,
        customer_id=owner,
        sender_key=sender_key,
        client_key=client_key,
        succeeded=matched,
        at=now,
    )
    left = max(limits.order_lock_failures - _failures(session, number, limits, now), 0)
    return PostcodeCheck(verdict, owner if matched else None, left)
