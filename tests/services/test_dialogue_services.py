"""Services behind the bot's self-service skills (both backends, fixture times)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput, NotFound, NotOwner
from crm_store.models import (
    AuditLog,
    ChannelIdentity,
    Conversation,
    Customer,
    Handoff,
    Order,
    Ticket,
)
from crm_store.seeding import DEFAULT_AS_OF
from crm_store.services import (
    contact_details,
    handoff,
    order_changes,
    returns,
    shipping,
    tickets,
)

NOW = DEFAULT_AS_OF


def first_order(session: Session, *where) -> Order:
    return (
        session.execute(select(Order).where(*where).order_by(Order.id))
        .scalars()
        .first()
    )


def other_customer(session: Session, customer_id: str) -> str:
    return (
        session.execute(
            select(Customer.id).where(Customer.id != customer_id).order_by(Customer.id)
        )
        .scalars()
        .first()
    )


# --- shipping -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shipped", "earliest", "latest"),
    [
        (dt.datetime(2026, 10, 30, 17, 58), dt.date(2026, 11, 2), dt.date(2026, 11, 4)),
        (dt.datetime(2026, 11, 2, 9, 0), dt.date(2026, 11, 3), dt.date(2026, 11, 5)),
        (dt.datetime(2026, 11, 5, 9, 0), dt.date(2026, 11, 6), dt.date(2026, 11, 10)),
        (dt.datetime(2026, 11, 7, 9, 0), dt.date(2026, 11, 9), dt.date(2026, 11, 11)),
    ],
)
def test_expected_delivery_counts_business_days(shipped, earliest, latest) -> None:
    order = Order(status="shipped", shipped_at=shipped)
    window = shipping.expected_delivery(order)
    assert (window.earliest, window.latest) == (earliest, latest)


def test_no_expected_delivery_unless_shipped() -> None:
    assert shipping.expected_delivery(Order(status="paid")) is None


# --- cancellation ---------------------------------------------------------------


@pytest.mark.parametrize("status", ["placed", "paid"])
def test_cancel_placed_or_paid(session: Session, status: str) -> None:
    order = first_order(session, Order.status == status)
    done = order_changes.cancel_order(
        session, order_number=order.id.lower(), customer_id=order.customer_id, at=NOW
    )
    assert done.status == "cancelled" and done.cancelled_at == NOW
    audit = session.execute(
        select(AuditLog).where(AuditLog.entity_id == order.id)
    ).scalar_one()
    assert audit.action == "order.cancel" and audit.details["from"] == status


@pytest.mark.parametrize("status", ["shipped", "delivered", "cancelled", "returned"])
def test_cancel_refused_with_reason(session: Session, status: str) -> None:
    order = first_order(session, Order.status == status)
    with pytest.raises(order_changes.NotCancellable) as info:
        order_changes.cancel_order(
            session, order_number=order.id, customer_id=order.customer_id
        )
    assert info.value.status == status
    assert session.get(Order, order.id).status == status


def test_cancel_someone_elses_order_is_not_found(session: Session) -> None:
    order = first_order(session, Order.status == "paid")
    with pytest.raises(NotOwner):
        order_changes.cancel_order(
            session,
            order_number=order.id,
            customer_id=other_customer(session, order.customer_id),
        )
    with pytest.raises(NotFound):
        order_changes.cancel_order(session, order_number="A99999", customer_id="C0001")


# --- returns --------------------------------------------------------------------


def recent_delivery(session: Session, *, books: bool) -> Order:
    """A delivered order within its window, with or without a 14-day book."""
    orders = session.execute(
        select(Order)
        .where(Order.status == "delivered", Order.delivered_at > NOW - dt.timedelta(13))
        .order_by(Order.id)
    ).scalars()
    for order in orders:
        window = returns.return_window_days(session, order=order)
        if (window == 14) == books:
            return order
    pytest.fail(f"fixture has no recently delivered order (books={books}) to test with")


@pytest.mark.parametrize("books", [True, False])
def test_return_within_window_creates_rma(session: Session, books: bool) -> None:
    order = recent_delivery(session, books=books)
    eligibility = returns.return_eligibility(session, order=order, now=NOW)
    assert eligibility.eligible and eligibility.window_days == (14 if books else 30)
    ticket = returns.start_return(
        session,
        order_number=order.id,
        customer_id=order.customer_id,
        reason="too small",
        now=NOW,
    )
    assert ticket.kind == "return" and ticket.order_id == order.id
    assert ticket.rma_number.startswith("RMA-") and len(ticket.rma_number) == 10
    assert ticket.number.startswith("T-")
    again = returns.return_eligibility(session, order=order, now=NOW)
    assert again.reason == "already_requested"
    assert again.rma_number == ticket.rma_number


def test_return_window_closed_explains_deadline(session: Session) -> None:
    order = recent_delivery(session, books=True)
    late = order.delivered_at + dt.timedelta(days=15)
    with pytest.raises(returns.NotReturnable) as info:
        returns.start_return(
            session, order_number=order.id, customer_id=order.customer_id, now=late
        )
    assert info.value.eligibility.reason == "window_closed"
    assert info.value.eligibility.deadline == order.delivered_at + dt.timedelta(14)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("shipped", "not_delivered"),
        ("paid", "not_delivered"),
        ("returned", "already_returned"),
    ],
)
def test_return_not_possible(session: Session, status: str, reason: str) -> None:
    order = first_order(session, Order.status == status)
    assert returns.return_eligibility(session, order=order, now=NOW).reason == reason


# --- tickets --------------------------------------------------------------------


def test_open_ticket_and_status_for_owner_only(session: Session) -> None:
    ticket = tickets.open_ticket(
        session, customer_id="C0001", subject="Invoice copy", description="please"
    )
    assert ticket.number.startswith("T-") and ticket.status == "open"
    status = tickets.ticket_status(
        session, ticket_number=ticket.number.lower(), customer_id="C0001"
    )
    assert status.subject == "Invoice copy" and status.status == "open"
    with pytest.raises(NotOwner):
        tickets.ticket_status(session, ticket_number=ticket.number, customer_id="C0002")
    with pytest.raises(NotFound):
        tickets.ticket_status(session, ticket_number="T-ZZZZZZ", customer_id="C0001")
    with pytest.raises(InvalidInput):
        tickets.ticket_status(session, ticket_number="hello", customer_id="C0001")


def test_damage_report_within_30_days(session: Session) -> None:
    order = recent_delivery(session, books=False)
    ticket = tickets.report_damaged_item(
        session,
        order_number=order.id,
        customer_id=order.customer_id,
        description="screen cracked",
        now=NOW,
    )
    assert ticket.kind == "damage" and ticket.order_id == order.id
    late = order.delivered_at + dt.timedelta(days=31)
    with pytest.raises(tickets.NotReportable) as info:
        tickets.report_damaged_item(
            session,
            order_number=order.id,
            customer_id=order.customer_id,
            description="x",
            now=late,
        )
    assert info.value.reason == "too_late"
    shipped = first_order(session, Order.status == "shipped")
    with pytest.raises(tickets.NotReportable) as info:
        tickets.report_damaged_item(
            session,
            order_number=shipped.id,
            customer_id=shipped.customer_id,
            description="x",
        )
    assert info.value.reason == "not_delivered"


# --- contact details ------------------------------------------------------------


def test_update_email_moves_identity_and_audits(session: Session) -> None:
    customer = session.get(Customer, "C0003")
    old = customer.email
    contact_details.update_contact_detail(
        session,
        customer_id="C0003",
        field="email",
        value=" New.Address@Example.COM ",
        actor="bot",
        verification_method="order_postcode",
    )
    assert customer.email == "new.address@example.com"
    kinds = (
        session.execute(
            select(ChannelIdentity.value).where(
                ChannelIdentity.customer_id == "C0003", ChannelIdentity.kind == "email"
            )
        )
        .scalars()
        .all()
    )
    assert kinds == ["new.address@example.com"] and old not in kinds
    audit = session.execute(
        select(AuditLog).where(AuditLog.action == "customer.update_email")
    ).scalar_one()
    assert "new.address" not in str(audit.details)  # masked


def test_update_contact_rejections(session: Session) -> None:
    with pytest.raises(InvalidInput):
        contact_details.update_contact_detail(
            session, customer_id="C0003", field="email", value="nope", actor="bot"
        )
    taken = session.get(Customer, "C0004").phone
    with pytest.raises(contact_details.IdentityInUse):
        contact_details.update_contact_detail(
            session, customer_id="C0003", field="phone", value=taken, actor="bot"
        )
    with pytest.raises(contact_details.StepUpRequired):
        contact_details.update_contact_detail(
            session,
            customer_id="C0003",
            field="phone",
            value="+31612345678",
            actor="bot",
            verification_method="identity:phone",
        )


# --- handoff (CSAT: test_feedback_services.py) ---------------------------------


def test_handoff_queue_position_and_packet(session: Session) -> None:
    session.add(Conversation(id="svc-h-1", channel="chat"))
    session.add(Conversation(id="svc-h-2", channel="chat"))
    session.flush()
    packet = handoff.HandoffPacket(
        customer_id="C0001",
        verified=True,
        verification_method="order_postcode",
        channel="chat",
        reason="customer_request",
        last_intents=["check_order_status", "request_human"],
    )
    first = handoff.request_handoff(session, conversation_id="svc-h-1", packet=packet)
    again = handoff.request_handoff(session, conversation_id="svc-h-1", packet=packet)
    assert again.handoff_id == first.handoff_id
    assert (first.status, again.status) == ("queued", "already_queued")
    vip = handoff.request_handoff(
        session, conversation_id="svc-h-2", packet=packet, priority=30
    )
    assert (
        vip.position
        < handoff.request_handoff(
            session, conversation_id="svc-h-1", packet=packet
        ).position
    )
    row = session.get(Handoff, first.handoff_id)
    assert row.status == "waiting" and row.packet["last_intents"][-1] == "request_human"


@pytest.mark.parametrize(
    ("utc", "open_"),
    [
        (dt.datetime(2026, 11, 2, 7, 30), True),  # Mon 08:30 Amsterdam
        (dt.datetime(2026, 11, 2, 19, 30), False),  # Mon 20:30
        (dt.datetime(2026, 11, 7, 15, 59), True),  # Sat 16:59
        (dt.datetime(2026, 11, 8, 12, 0), False),  # Sunday
    ],
)
def test_agent_hours(utc: dt.datetime, open_: bool) -> None:
    assert handoff.agents_available(utc) is open_


def test_ticket_ids_unique(session: Session) -> None:
    numbers = {
        tickets.open_ticket(session, customer_id="C0005", subject=f"s{i}").number
        for i in range(20)
    }
    assert len(numbers) == 20
    assert session.execute(select(Ticket).where(Ticket.customer_id == "C0005")).first()
