"""Order changes a customer may make themselves: cancellation while not yet shipped."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from crm_store.errors import StoreError
from crm_store.models import AuditLog, Order, utcnow
from crm_store.services.orders import get_order_for_customer

CANCELLABLE_STATUSES = ("placed", "paid")


class NotCancellable(StoreError):
    """The order's status does not allow cancellation; ``status`` says why."""

    default_message = "This order can no longer be cancelled."

    def __init__(self, status: str, message: str | None = None) -> None:
        super().__init__(message)
        self.status = status


def check_cancellable(order: Order) -> None:
    """Raise ``NotCancellable`` unless the order is placed or paid."""
    if order.status not in CANCELLABLE_STATUSES:
        raise NotCancellable(order.status, f"order is {order.status}")


def cancel_order(
    session: Session,
    *,
    order_number: str,
    customer_id: str,
    actor: str = "bot",
    at: dt.datetime | None = None,
) -> Order:
    """Cancel the customer's order if it is placed or paid.

    Raises:
        NotFound: no such order, or it belongs to another customer.
        NotCancellable: shipped, delivered, cancelled or returned already.
    """
    order = get_order_for_customer(
        session, order_number=order_number, customer_id=customer_id
    )
    check_cancellable(order)
    at = at or utcnow()
    previous = order.status
    order.status = "cancelled"
    order.cancelled_at = at
    order.updated_at = at
    session.add(
        AuditLog(
            occurred_at=at,
            actor=actor,
            action="order.cancel",
            entity_type="order",
            entity_id=order.id,
            details={"from": previous, "customer_id": customer_id},
        )
    )
    session.flush()
    return order
