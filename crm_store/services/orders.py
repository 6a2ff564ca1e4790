"""Orders: listing a customer's orders and reading one with an ownership check."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from crm_store.models import Order
from crm_store.services.errors import InvalidInput, NotFound, NotOwner

MAX_ORDERS_PAGE = 100
ORDER_NOT_FOUND = "order not found"


def normalize_order_number(order_number: str) -> str:
    """Return an order number in its stored form (``a10001 `` -> ``A10001``)."""
    value = (order_number or "").strip().upper().lstrip("#")
    if not value or len(value) > 32 or not value.isalnum():
        raise InvalidInput("an order number is letters and digits, e.g. A10001")
    return value


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


def count_orders(session: Session, *, customer_id: str) -> int:
    """Return how many orders the customer has placed."""
    return session.execute(
        select(func.count()).select_from(Order).where(Order.customer_id == customer_id)
    ).scalar_one()


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


def verify_order_postcode(
    session: Session, *, order_number: str, postcode: str
) -> str | None:
    """Return the customer id if ``postcode`` matches the order's customer, else None.

    Postcodes compare without spaces and case (``5500le`` == ``5500 LE``).
    """
    try:
        number = normalize_order_number(order_number)
    except InvalidInput:
        return None
    order = session.get(Order, number)
    if order is None or order.customer is None or not order.customer.postcode:
        return None

    def squash(value: str) -> str:
        return "".join((value or "").split()).upper()

    if squash(order.customer.postcode) == squash(postcode) and squash(postcode):
        return order.customer_id
    return None
