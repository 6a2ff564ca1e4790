"""Login codes: proof by e-mail when an order's postcode checks are paused.

A customer whose order is locked after too many wrong postcodes (or whose
sender is rate-limited) may ask for a one-time code (purpose ``login``) sent to
the e-mail address registered on the order's account. Neither function tells
its caller's customer whether the order exists or has an address: an unknown
order, an account without e-mail or a code limit sends nothing, and a code
typed for it is answered like a wrong one (same tries, same expiry). The same
scrypt work is done either way, so the answer time tells nothing either.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput
from crm_store.models import ChannelIdentity, Customer, utcnow
from crm_store.services.notifier import Notifier
from crm_store.services.one_time_codes import (
    CODE_RE,
    CODE_TTL,
    MAX_TRIES,
    CodeStatus,
    TooManyCodes,
    check_code,
    hash_code,
    issue_code,
)
from crm_store.services.orders import find_order

PURPOSE = "login"
OUTBOX_PURPOSE = "login_code"
METHOD = "code:login"


@dataclass(frozen=True)
class LoginCheck:
    """The outcome of a typed login code (see ``CodeCheck`` for ``status``).

    ``customer_id`` is set only when ``status`` is ``ok``.
    """

    status: CodeStatus
    tries_left: int = 0
    customer_id: str | None = None


def registered_email(session: Session, customer: Customer) -> str | None:
    """The customer's registered e-mail: a verified e-mail identity, else ``email``.

    A verified identity equal to ``customer.email`` is preferred; erased
    customers have none.
    """
    if customer.erased_at is not None:
        return None
    verified = list(
        session.execute(
            select(ChannelIdentity.value)
            .where(
                ChannelIdentity.customer_id == customer.id,
                ChannelIdentity.kind == "email",
                ChannelIdentity.verified.is_(True),
            )
            .order_by(ChannelIdentity.id)
        ).scalars()
    )
    if customer.email in verified or (not verified and customer.email):
        return customer.email
    return verified[0] if verified else None


def _owner(session: Session, order_number: object) -> Customer | None:
    """The customer of the order, or None for anything that is not an order."""
    order = find_order(session, order_number)
    return order.customer if order is not None else None


def send_login_code(
    session: Session,
    *,
    order_number: str,
    notifier: Notifier | None = None,
    now: dt.datetime | None = None,
) -> bool:
    """Send a login code for the order's customer to their registered e-mail.

    Returns whether a code was sent: the caller must answer the customer the
    same either way. Nothing is sent for an unknown order, a customer without
    e-mail, or one who had ``MAX_CODES_PER_HOUR`` codes in the last hour.
    """
    now = now or utcnow()
    customer = _owner(session, order_number)
    address = registered_email(session, customer) if customer is not None else None
    if customer is None or address is None:
        hash_code("000000")  # the work of issuing a code, so timing tells nothing
        return False
    try:
        code = issue_code(
            session,
            customer_id=customer.id,
            purpose=PURPOSE,
            kind="email",
            value=address,
            now=now,
        )
    except TooManyCodes:
        return False
    minutes = int(CODE_TTL.total_seconds() // 60)
    (notifier or Notifier()).notify(
        session,
        customer_id=customer.id,
        channel="email",
        recipient=address,
        purpose=OUTBOX_PURPOSE,
        subject="Your Northwind Goods login code",
        body=(
            f"Your Northwind Goods code is {code}. Type it in the chat to confirm "
            f"it's you. It expires in {minutes} minutes. If you didn't ask for "
            "this, ignore this message; nobody can see your details without it."
        ),
        now=now,
    )
    return True


def check_login_code(
    session: Session,
    *,
    order_number: str,
    code: str,
    requested_at: dt.datetime | None,
    wrong_before: int,
    now: dt.datetime | None = None,
) -> LoginCheck:
    """Check a code typed for the order's customer (see :func:`check_code`).

    Without a pending code (unknown order, nothing sent, code used up) the
    outcome mimics a real code: ``wrong`` with the tries left after
    ``wrong_before`` earlier wrong tries in this conversation, ``exhausted`` at
    the ``MAX_TRIES``-th, ``expired`` once ``CODE_TTL`` has passed since
    ``requested_at`` (naive UTC; None counts as expired).

    Raises:
        InvalidInput: ``code`` is not exactly 6 digits (not counted as a try).
    """
    if not isinstance(code, str) or not CODE_RE.fullmatch(code):
        raise InvalidInput("a code is 6 digits")
    now = now or utcnow()
    customer = _owner(session, order_number)
    if customer is not None:
        result = check_code(
            session, customer_id=customer.id, purpose=PURPOSE, code=code, now=now
        )
        if result.status == "ok":
            return LoginCheck("ok", result.tries_left, customer.id)
        if result.status != "none":
            return LoginCheck(result.status, result.tries_left)
    hash_code(code)  # the work of checking a real code, so timing tells nothing
    if requested_at is None or now >= requested_at + CODE_TTL:
        return LoginCheck("expired")
    tries = max(wrong_before, 0) + 1
    if tries >= MAX_TRIES:
        return LoginCheck("exhausted")
    return LoginCheck("wrong", MAX_TRIES - tries)
