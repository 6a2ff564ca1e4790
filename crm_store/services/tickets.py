"""Support tickets: open one, report a damaged item, read status (owner only)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput, NotFound, NotOwner, StoreError
from crm_store.models import Customer, Ticket, utcnow
from crm_store.services.links import known_conversation_id
from crm_store.services.numbering import LENGTH as REFERENCE_LENGTH
from crm_store.services.numbering import new_reference
from crm_store.services.orders import get_order_for_customer

DAMAGE_REPORT_DAYS = 30
MAX_SUBJECT = 200
MAX_DESCRIPTION = 4000


class NotReportable(StoreError):
    """A damage report is not possible; ``reason`` is not_delivered or too_late."""

    default_message = "This order cannot be reported as damaged."

    def __init__(self, reason: str, deadline: dt.datetime | None = None) -> None:
        super().__init__(f"not reportable: {reason}")
        self.reason = reason
        self.deadline = deadline


def open_ticket(
    session: Session,
    *,
    customer_id: str,
    subject: str,
    description: str | None = None,
    kind: str = "general",
    order_id: str | None = None,
    conversation_id: str | None = None,
    at: dt.datetime | None = None,
) -> Ticket:
    """Open a ticket numbered ``T-XXXXXX`` for a customer."""
    subject = (subject or "").strip()
    if not subject:
        raise InvalidInput("a ticket needs a subject")
    if session.get(Customer, customer_id) is None:
        raise NotFound(f"customer {customer_id} not found")
    at = at or utcnow()
    ticket = Ticket(
        number=new_reference(session, prefix="T", column=Ticket.number),
        customer_id=customer_id,
        conversation_id=known_conversation_id(session, conversation_id),
        order_id=order_id,
        kind=kind,
        subject=subject[:MAX_SUBJECT],
        description=(description or "").strip()[:MAX_DESCRIPTION] or None,
        status="open",
        created_at=at,
        updated_at=at,
    )
    session.add(ticket)
    session.flush()
    return ticket


def damage_deadline(order_delivered_at: dt.datetime) -> dt.datetime:
    """Return the last moment a damaged item of a delivery can be reported."""
    return order_delivered_at + dt.timedelta(days=DAMAGE_REPORT_DAYS)


def check_damage_reportable(order, *, now: dt.datetime | None = None) -> None:  # noqa: ANN001
    """Raise ``NotReportable`` unless delivered within the last 30 days."""
    now = now or utcnow()
    if order.delivered_at is None or order.status not in ("delivered", "returned"):
        raise NotReportable("not_delivered")
    deadline = damage_deadline(order.delivered_at)
    if now > deadline:
        raise NotReportable("too_late", deadline)


def report_damaged_item(
    session: Session,
    *,
    order_number: str,
    customer_id: str,
    description: str,
    conversation_id: str | None = None,
    now: dt.datetime | None = None,
) -> Ticket:
    """Open a ``damage`` ticket for a delivered order within 30 days of delivery.

    Raises:
        NotFound: no such order, or it belongs to another customer.
        NotReportable: not delivered yet, or reported too late.
    """
    now = now or utcnow()
    order = get_order_for_customer(
        session, order_number=order_number, customer_id=customer_id
    )
    check_damage_reportable(order, now=now)
    return open_ticket(
        session,
        customer_id=customer_id,
        subject=f"Damaged or faulty item in order {order.id}",
        description=description,
        kind="damage",
        order_id=order.id,
        conversation_id=conversation_id,
        at=now,
    )


@dataclass(frozen=True)
class TicketStatus:
    """What a customer may see about their ticket."""

    number: str
    kind: str
    subject: str
    status: str
    order_id: str | None
    rma_number: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


def normalize_ticket_number(value: str) -> str:
    """Return a ticket number in stored form (``t-abc234`` -> ``T-ABC234``)."""
    number = (value or "").strip().upper().replace(" ", "")
    if number and not number.startswith("T-") and number.startswith("T"):
        # Without the dash only the issued form counts (``TABC234``: 6 characters
        # with a digit), so words such as "the" or "tickets" are no ticket number.
        code = number[1:]
        if len(code) != REFERENCE_LENGTH or not any(c.isdigit() for c in code):
            raise InvalidInput("a ticket number looks like T-ABC234")
        number = "T-" + code
    if not number.startswith("T-") or not number[2:].isalnum() or len(number) > 32:
        raise InvalidInput("a ticket number looks like T-ABC234")
    return number


def ticket_status(
    session: Session, *, ticket_number: str, customer_id: str
) -> TicketStatus:
    """Return the status of a ticket owned by ``customer_id``.

    Raises:
        InvalidInput: malformed ticket number.
        NotFound: no such ticket; ``NotOwner`` when it is someone else's.
    """
    number = normalize_ticket_number(ticket_number)
    ticket = session.execute(
        select(Ticket).where(Ticket.number == number)
    ).scalar_one_or_none()
    if ticket is None:
        raise NotFound("ticket not found")
    if ticket.customer_id != customer_id:
        raise NotOwner()
    return TicketStatus(
        ticket.number,
        ticket.kind,
        ticket.subject,
        ticket.status,
        ticket.order_id,
        ticket.rma_number,
        ticket.created_at,
        ticket.updated_at,
    )
