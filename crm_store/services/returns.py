"""Returns: eligibility by the products' return windows, and RMA creation."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.errors import StoreError
from crm_store.models import Order, Product, Ticket, utcnow
from crm_store.services.links import known_conversation_id
from crm_store.services.numbering import new_reference
from crm_store.services.orders import get_order_for_customer

DEFAULT_RETURN_WINDOW_DAYS = 30


@dataclass(frozen=True)
class ReturnEligibility:
    """Whether an order can be returned now, and the window that decides it.

    ``reason`` is None when eligible, else one of ``not_delivered``,
    ``window_closed``, ``already_returned``, ``cancelled``, ``already_requested``.
    """

    eligible: bool
    reason: str | None
    window_days: int
    deadline: dt.datetime | None
    rma_number: str | None = None


class NotReturnable(StoreError):
    """The order cannot be returned; ``eligibility`` explains why."""

    default_message = "This order cannot be returned."

    def __init__(self, eligibility: ReturnEligibility) -> None:
        super().__init__(f"not returnable: {eligibility.reason}")
        self.eligibility = eligibility


def return_window_days(session: Session, *, order: Order) -> int:
    """Return the shortest return window of the order's products (days)."""
    skus = [line.sku for line in order.lines]
    if not skus:
        return DEFAULT_RETURN_WINDOW_DAYS
    windows = session.execute(
        select(Product.return_window_days).where(Product.sku.in_(skus))
    ).scalars()
    return min(windows, default=DEFAULT_RETURN_WINDOW_DAYS)


def _open_return(session: Session, order_id: str) -> Ticket | None:
    return (
        session.execute(
            select(Ticket)
            .where(Ticket.order_id == order_id, Ticket.kind == "return")
            .order_by(Ticket.created_at.desc())
        )
        .scalars()
        .first()
    )


def return_eligibility(
    session: Session, *, order: Order, now: dt.datetime | None = None
) -> ReturnEligibility:
    """Tell whether ``order`` can be returned at ``now``.

    An order is returnable when delivered and ``now`` is within the shortest
    ``return_window_days`` of its products, counted from ``delivered_at``.
    """
    now = now or utcnow()
    window = return_window_days(session, order=order)
    deadline = (
        order.delivered_at + dt.timedelta(days=window) if order.delivered_at else None
    )
    if order.status == "returned":
        return ReturnEligibility(False, "already_returned", window, deadline)
    if order.status == "cancelled":
        return ReturnEligibility(False, "cancelled", window, deadline)
    if order.status != "delivered" or deadline is None:
        return ReturnEligibility(False, "not_delivered", window, deadline)
    existing = _open_return(session, order.id)
    if existing is not None:
        return ReturnEligibility(
            False, "already_requested", window, deadline, existing.rma_number
        )
    if now > deadline:
        return ReturnEligibility(False, "window_closed", window, deadline)
    return ReturnEligibility(True, None, window, deadline)


def start_return(
    session: Session,
    *,
    order_number: str,
    customer_id: str,
    reason: str | None = None,
    conversation_id: str | None = None,
    now: dt.datetime | None = None,
) -> Ticket:
    """Create a return ticket with a unique RMA number for an eligible order.

    Raises:
        NotFound: no such order, or it belongs to another customer.
        NotReturnable: not delivered, window closed, or a return already exists.
    """
    now = now or utcnow()
    order = get_order_for_customer(
        session, order_number=order_number, customer_id=customer_id
    )
    eligibility = return_eligibility(session, order=order, now=now)
    if not eligibility.eligible:
        raise NotReturnable(eligibility)
    ticket = Ticket(
        number=new_reference(session, prefix="T", column=Ticket.number),
        rma_number=new_reference(session, prefix="RMA", column=Ticket.rma_number),
        customer_id=customer_id,
        conversation_id=known_conversation_id(session, conversation_id),
        order_id=order.id,
        kind="return",
        subject=f"Return of order {order.id}",
        description=(reason or "").strip()[:2000] or None,
        status="open",
        created_at=now,
        updated_at=now,
    )
    session.add(ticket)
    session.flush()
    return ticket
