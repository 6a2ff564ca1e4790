"""Orders: listing a customer's orders and reading one with an ownership check."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from crm_store.errors import InvalidInput, NotFound, NotOwner
from crm_store.models import Order
from crm_store.services.references import find_postcode, normalize_order_number
from crm_store.services.shipping import DeliveryWindow, expected_delivery

MAX_ORDERS_PAGE = 100
ORDER_NOT_FOUND = "order not found"


def orders_for_customer(
    session: Session,
    *,
    customer_id: str,
    limit: int = 5,
    statuses: tuple[str, ...] = (),
) -> list[Order]:
    """Return the customer's most recent orders (newest first) with their lines."""
    if not 1 <= limit <= MAX_ORDERS_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_ORDERS_PAGE}")
    stmt = (
        select(Order)
        .where(Order.customer_id == customer_id)
        .options(selectinload(Order.lines))
        .order_by(Order.placed_at.desc(), Order.id.desc())
        .limit(limit)
    )
    if statuses:
        stmt = stmt.where(Order.status.in_(statuses))
    return list(session.execute(stmt).scalars())


def get_order_for_customer(
    session: Session, *, order_number: str, customer_id: str
) -> Order:
    """Return the order if it belongs to ``customer_id``.

    Raises:
        NotFound: no such order.
        NotOwner: the order belongs to someone else (a ``NotFound`` subclass, so a
            caller that shows "not found" discloses nothing).
    """
    order = session.execute(
        select(Order)
        .where(Order.id == normalize_order_number(order_number))
        .options(selectinload(Order.lines))
    ).scalar_one_or_none()
    if order is None:
        raise NotFound(ORDER_NOT_FOUND)
    if order.customer_id != customer_id:
        raise NotOwner(ORDER_NOT_FOUND)
    return order


def postcodes_match(expected: str | None, given: object) -> bool:
    """Compare postcodes in any typed form (``5500le``, ``5500-LE`` == ``5500 LE``).

    False when either is empty, ``given`` is not a string or holds no postcode.
    """
    if not isinstance(expected, str) or not isinstance(given, str):
        return False
    wanted = find_postcode(expected)
    return wanted is not None and wanted == find_postcode(given)


def find_order(session: Session, order_number: object) -> Order | None:
    """The order with this number in any accepted form; None for anything else.

    Never raises for bad input (wrong type, malformed number): callers that must
    not reveal why a lookup failed treat all of those as "no such order".
    """
    if not isinstance(order_number, str):
        return None
    try:
        number = normalize_order_number(order_number)
    except InvalidInput:
        return None
    return session.get(Order, number)


def verify_order_postcode(
    session: Session, *, order_number: str, postcode: str
) -> str | None:
    """Return the customer id if ``postcode`` is the order's delivery postcode.

    The postcode proven is where the order went (``orders.delivery_postcode``),
    not the customer's current address. Postcodes compare without spaces and
    case. This check records nothing: customer-facing checks go through
    ``crm_store.services.verification.attempt_postcode`` (lock-outs, limits).
    """
    order = find_order(session, order_number)
    if order is None or not postcodes_match(order.delivery_postcode, postcode):
        return None
    return order.customer_id


@dataclass(frozen=True)
class OrderSummary:
    """What a customer may be told about one of their orders, as plain values.

    Safe to use after the session closed (no lazy loads); ``delivery`` is the
    expected delivery window of a shipped order, else None.
    """

    id: str
    status: str
    total: Decimal
    currency: str
    placed_at: dt.datetime
    shipped_at: dt.datetime | None
    delivered_at: dt.datetime | None
    cancelled_at: dt.datetime | None
    updated_at: dt.datetime
    carrier: str | None
    tracking_number: str | None
    delivery: DeliveryWindow | None


def summarize_order(order: Order) -> OrderSummary:
    """Return the customer-facing summary of a loaded order."""
    return OrderSummary(
        id=order.id,
        status=order.status,
        total=order.total,
        currency=order.currency,
        placed_at=order.placed_at,
        shipped_at=order.shipped_at,
        delivered_at=order.delivered_at,
        cancelled_at=order.cancelled_at,
        updated_at=order.updated_at,
        carrier=order.carrier,
        tracking_number=order.tracking_number,
        delivery=expected_delivery(order),
    )


def order_summary(
    session: Session, *, order_number: str, customer_id: str
) -> OrderSummary:
    """Return the summary of the customer's order.

    Raises:
        NotFound: no such order, or (``NotOwner``) it belongs to someone else.
        InvalidInput: ``order_number`` is not an order number.
    """
    return summarize_order(
        get_order_for_customer(
            session, order_number=order_number, customer_id=customer_id
        )
    )


def recent_order_summaries(
    session: Session, *, customer_id: str, limit: int = 5
) -> list[OrderSummary]:
    """Return summaries of the customer's most recent orders, newest first."""
    return [
        summarize_order(order)
        for order in orders_for_customer(session, customer_id=customer_id, limit=limit)
    ]
