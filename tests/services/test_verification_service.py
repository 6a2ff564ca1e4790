"""Postcode checks with lock-outs and rate limits in the store (SQLite and PostgreSQL).

Every test runs in a session that is rolled back, on both backends.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput
from crm_store.models import Customer, Order, VerificationAttempt, utcnow
from crm_store.services.orders import verify_order_postcode
from crm_store.services.verification import (
    VerificationLimits,
    attempt_postcode,
    check_attempt,
    check_customer,
    check_order,
    check_sender,
    client_key_for,
    record_attempt,
)

LIMITS = VerificationLimits()  # 5 per order, 10 per customer/sender, 30 per client
WRONG = "9999 ZZ"
T0 = utcnow().replace(microsecond=0)


def key(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def no_order() -> str:
    """An order number no order has (it locks like a real one)."""
    return f"ZZ{uuid.uuid4().hex[:10].upper()}"


def order_of(session: Session, *, offset: int = 0, other_than: str = "") -> Order:
    return session.execute(
        select(Order)
        .where(Order.customer_id != other_than, Order.delivery_postcode.isnot(None))
        .order_by(Order.id)
        .offset(offset)
        .limit(1)
    ).scalar_one()


def attempt(
    session: Session,
    order_id: str,
    postcode: str,
    *,
    sender: str | None = None,
    client: str | None = None,
    at: dt.datetime = T0,
    limits: VerificationLimits = LIMITS,
):
    return attempt_postcode(
        session,
        order_number=order_id,
        postcode=postcode,
        sender_key=sender or key(),
        client_key=client,
        limits=limits,
        at=at,
    )


def fail(session: Session, order_id: str, times: int) -> None:
    for _ in range(times):
        assert not attempt(session, order_id, WRONG).verified


# --- delivery postcode ------------------------------------------------------------


def test_the_orders_delivery_postcode_is_compared_not_the_current_one(
    session: Session,
) -> None:
    order = order_of(session)
    customer = session.get(Customer, order.customer_id)
    assert order.delivery_postcode == customer.postcode  # seeded from the customer
    order.delivery_postcode = "1234 AB"
    session.flush()
    assert (
        verify_order_postcode(
            session, order_number=order.id, postcode=customer.postcode
        )
        is None
    )
    for spelled in ("1234 AB", "1234ab", " 12 34 aB "):
        assert (
            verify_order_postcode(session, order_number=order.id, postcode=spelled)
            == order.customer_id
        )
    check = attempt(session, order.id, customer.postcode)
    assert not check.verified
    check = attempt(session, order.id.lower(), "1234ab")
    assert check.verified and check.customer_id == order.customer_id


def test_bad_input_is_refused_or_fails_cleanly(session: Session) -> None:
    order = order_of(session)
    for postcode in ("", None, 5, {}, ["1234 AB"]):
        assert (
            verify_order_postcode(session, order_number=order.id, postcode=postcode)
            is None
        )
        assert not attempt(session, order.id, postcode).verified
    assert verify_order_postcode(session, order_number={}, postcode="1") is None
    with pytest.raises(InvalidInput):
        attempt(session, "A-1!0001", order.delivery_postcode)
    with pytest.raises(InvalidInput):
        attempt_postcode(
            session,
            order_number=order.id,
            postcode=order.delivery_postcode,
            sender_key="",
            client_key=None,
            limits=LIMITS,
        )
    with pytest.raises(InvalidInput):
        VerificationLimits(order_lock_failures=0)
    with pytest.raises(InvalidInput):
        VerificationLimits(window_minutes=0)


# --- order lock -------------------------------------------------------------------


def test_wrong_postcodes_from_fresh_senders_lock_the_order(session: Session) -> None:
    order = order_of(session, offset=3)
    lefts = [attempt(session, order.id, WRONG).failures_left for _ in range(5)]
    assert lefts == [4, 3, 2, 1, 0]
    verdict = check_order(session, order_id=order.id, limits=LIMITS, at=T0)
    assert (verdict.allowed, verdict.reason) == (False, "order_locked")
    assert verdict.retry_after == dt.timedelta(minutes=60)
    # The right postcode from yet another sender proves nothing while locked.
    check = attempt(session, order.id, order.delivery_postcode)
    assert not check.verified and check.customer_id is None
    assert check.verdict.reason == "order_locked"
    # Other customers' orders are not affected.
    other = order_of(session, offset=4, other_than=order.customer_id)
    assert attempt(session, other.id, other.delivery_postcode).verified


def test_a_missing_order_locks_exactly_like_a_real_one(session: Session) -> None:
    real, missing = order_of(session, offset=5), no_order()
    for number in (real.id, missing):
        lefts = [attempt(session, number, WRONG).failures_left for _ in range(5)]
        assert lefts == [4, 3, 2, 1, 0]
        check = attempt(session, number, WRONG)
        assert (check.verdict.reason, check.failures_left) == ("order_locked", 0)


def test_the_order_lock_expires_with_the_window(session: Session) -> None:
    order = order_of(session, offset=6)
    start = T0 - dt.timedelta(minutes=90)
    for minute in (0, 10, 20, 30, 40):
        attempt(session, order.id, WRONG, at=start + dt.timedelta(minutes=minute))
    at = start + dt.timedelta(minutes=45)
    verdict = check_order(session, order_id=order.id, limits=LIMITS, at=at)
    assert verdict.reason == "order_locked"
    # Lifts when the oldest of the 5 counted failures is 60 minutes old.
    assert verdict.retry_after == dt.timedelta(minutes=15)
    still = start + dt.timedelta(minutes=59, seconds=59)
    assert not check_order(session, order_id=order.id, limits=LIMITS, at=still).allowed
    after = start + dt.timedelta(minutes=60, seconds=1)
    assert check_order(session, order_id=order.id, limits=LIMITS, at=after).allowed
    check = attempt(session, order.id, order.delivery_postcode, at=after)
    assert check.verified


def test_a_success_does_not_reset_other_senders_failures(session: Session) -> None:
    order = order_of(session, offset=7)
    for _ in range(4):
        attempt(session, order.id, WRONG, sender=key("attacker"))
    owner = attempt(session, order.id, order.delivery_postcode, sender=key("owner"))
    assert owner.verified and owner.failures_left == 1
    attempt(session, order.id, WRONG, sender=key("attacker"))
    verdict = check_order(session, order_id=order.id, limits=LIMITS, at=T0)
    assert verdict.reason == "order_locked"
    assert not attempt(session, order.id, order.delivery_postcode).verified


def test_refused_attempts_count_as_failures(session: Session) -> None:
    order = order_of(session, offset=8)
    fail(session, order.id, 5)
    attempt(session, order.id, order.delivery_postcode)
    rows = session.execute(
        select(VerificationAttempt.succeeded, VerificationAttempt.customer_id).where(
            VerificationAttempt.order_id == order.id
        )
    ).all()
    assert len(rows) == 6
    assert all(not ok and owner == order.customer_id for ok, owner in rows)


# --- customer lock ----------------------------------------------------------------


def customer_with_orders(session: Session, count: int) -> tuple[str, list[Order]]:
    owner = session.execute(
        select(Order.customer_id)
        .group_by(Order.customer_id)
        .having(func.count() >= count)
        .order_by(Order.customer_id.desc())
        .limit(1)
    ).scalar_one()
    orders = list(
        session.execute(
            select(Order).where(Order.customer_id == owner).order_by(Order.id)
        ).scalars()
    )
    return owner, orders


def test_failures_over_a_customers_orders_lock_the_customer(session: Session) -> None:
    owner, orders = customer_with_orders(session, 3)
    first, second, third = orders[:3]
    fail(session, first.id, 4)
    fail(session, second.id, 4)
    assert check_customer(session, customer_id=owner, limits=LIMITS, at=T0).allowed
    fail(session, third.id, 2)
    verdict = check_customer(session, customer_id=owner, limits=LIMITS, at=T0)
    assert (verdict.allowed, verdict.reason) == (False, "customer_locked")
    # No single order is locked, yet the right postcode proves nothing.
    assert check_order(session, order_id=third.id, limits=LIMITS, at=T0).allowed
    check = attempt(session, third.id, third.delivery_postcode)
    assert not check.verified and check.verdict.reason == "customer_locked"
    other = order_of(session, offset=9, other_than=owner)
    assert attempt(session, other.id, other.delivery_postcode).verified


def test_customer_failures_recorded_directly_count(session: Session) -> None:
    owner, orders = customer_with_orders(session, 1)
    for _ in range(10):
        record_attempt(
            session,
            order_id=orders[0].id,
            customer_id=owner,
            sender_key=key(),
            client_key=None,
            succeeded=False,
            at=T0 - dt.timedelta(minutes=61),
        )
    assert check_customer(session, customer_id=owner, limits=LIMITS, at=T0).allowed
    earlier = T0 - dt.timedelta(minutes=30)
    verdict = check_customer(session, customer_id=owner, limits=LIMITS, at=earlier)
    assert verdict.reason == "customer_locked"
    assert verdict.retry_after == dt.timedelta(minutes=29)


# --- sender and client limits -----------------------------------------------------


def test_a_sender_is_limited_after_its_failures_on_any_orders(
    session: Session,
) -> None:
    sender = key("guesser")
    for _ in range(9):
        attempt(session, no_order(), WRONG, sender=sender)
    assert check_sender(
        session, sender_key=sender, client_key=None, limits=LIMITS, at=T0
    ).allowed
    attempt(session, no_order(), WRONG, sender=sender)
    verdict = check_sender(
        session, sender_key=sender, client_key=None, limits=LIMITS, at=T0
    )
    assert (verdict.allowed, verdict.reason) == (False, "sender_limited")
    order = order_of(session, offset=10)
    check = attempt(session, order.id, order.delivery_postcode, sender=sender)
    assert not check.verified and check.verdict.reason == "sender_limited"
    assert attempt(session, order.id, order.delivery_postcode).verified
    later = T0 + dt.timedelta(minutes=61)
    assert check_sender(
        session, sender_key=sender, client_key=None, limits=LIMITS, at=later
    ).allowed


def test_successes_do_not_count_towards_the_sender_limit(session: Session) -> None:
    sender = key("owner")
    order = order_of(session, offset=11)
    for _ in range(12):
        assert attempt(
            session, order.id, order.delivery_postcode, sender=sender
        ).verified


def test_a_client_address_is_limited_across_senders(session: Session) -> None:
    client = client_key_for(f"203.0.113.{uuid.uuid4().int % 250}")
    limits = VerificationLimits(client_limit=3)
    for _ in range(3):
        attempt(session, no_order(), WRONG, client=client, limits=limits)
    verdict = check_attempt(
        session,
        order_id=no_order(),
        sender_key=key(),
        client_key=client,
        limits=limits,
        at=T0,
    )
    assert (verdict.allowed, verdict.reason) == (False, "client_limited")
    order = order_of(session, offset=12)
    refused = attempt(
        session, order.id, order.delivery_postcode, client=client, limits=limits
    )
    assert refused.verdict.reason == "client_limited" and not refused.verified
    elsewhere = client_key_for("198.51.100.7")
    assert attempt(
        session, order.id, order.delivery_postcode, client=elsewhere, limits=limits
    ).verified


def test_client_keys_hash_the_address(session: Session) -> None:
    key_v4 = client_key_for(" 192.0.2.10 ")
    assert key_v4 == client_key_for("192.0.2.10") == client_key_for("::ffff:192.0.2.10")
    assert key_v4 != client_key_for("192.0.2.11")
    assert "192.0.2.10" not in key_v4 and len(key_v4) == 64
    # One IPv6 host owns a /64: all its addresses are one client.
    assert client_key_for("2001:db8:1:2::1") == client_key_for("2001:db8:1:2:ffff::9")
    assert client_key_for("2001:db8:1:2::1") != client_key_for("2001:db8:1:3::1")
    assert client_key_for("not-an-ip") == client_key_for("NOT-AN-IP")
    for absent in (None, "", "  ", 5, {}, ["192.0.2.10"]):
        assert client_key_for(absent) is None
    record_attempt(
        session,
        order_id=None,
        customer_id=None,
        sender_key=key(),
        client_key=key_v4,
        succeeded=False,
    )
    stored = session.execute(
        select(VerificationAttempt.client_key).where(
            VerificationAttempt.client_key == key_v4
        )
    ).scalar_one()
    assert stored == key_v4
