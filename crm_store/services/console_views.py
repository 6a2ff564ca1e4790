"""Reads the agent console needs that no other service offers, as plain values.

Everything here returns frozen dataclasses (safe after the session closes), so
the console never touches ORM rows. The two "watch" reads
(``queue_fingerprint``, ``handoff_state``, ``messages_after``) are what the
console's server-sent events poll every quarter second: each is one indexed
query.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput, NotFound
from crm_store.models import (
    Conversation,
    Customer,
    CustomerScore,
    Handoff,
    Interaction,
    StaffSession,
    StaffUser,
    Ticket,
    utcnow,
)
from crm_store.services.customers import search_customers
from crm_store.services.outbound import failed_deliveries

MAX_MESSAGES = 500
MAX_SEARCH = 100


def ping(session: Session) -> None:
    """Run the cheapest possible statement (health checks); raises when down."""
    session.execute(text("SELECT 1")).scalar_one()


@dataclass(frozen=True)
class MessageView:
    """One contact-history row as the console shows it."""

    id: int
    conversation_id: str | None
    channel: str
    direction: str
    author: str
    text: str | None
    intent: str | None
    confidence: float | None
    occurred_at: dt.datetime
    purpose: str | None = None  # outbox purpose of agent/system messages
    staff: str | None = None  # username of the agent who wrote it

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``occurred_at`` as ISO 8601, UTC)."""
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "channel": self.channel,
            "direction": self.direction,
            "author": self.author,
            "text": self.text,
            "intent": self.intent,
            "confidence": self.confidence,
            "occurred_at": self.occurred_at.isoformat() + "Z",
            "purpose": self.purpose,
            "staff": self.staff,
        }


def message_view(row: Any) -> MessageView:
    """Build a ``MessageView`` from an interaction row (e.g. of ``timeline``)."""
    meta = row.meta if isinstance(row.meta, dict) else {}
    purpose = meta.get("purpose")
    staff = meta.get("staff")
    return MessageView(
        id=row.id,
        conversation_id=row.conversation_id,
        channel=row.channel,
        direction=row.direction,
        author=row.author,
        text=row.text,
        intent=row.intent,
        confidence=row.confidence,
        occurred_at=row.occurred_at,
        purpose=purpose if isinstance(purpose, str) else None,
        staff=staff if isinstance(staff, str) else None,
    )


def messages_after(
    session: Session, *, conversation_id: str, after_id: int = 0, limit: int = 200
) -> list[MessageView]:
    """Interactions of a conversation with an id above ``after_id``, oldest first.

    Interaction ids grow with insertion, so this is what a live view has not
    shown yet (uses the ``(conversation_id, occurred_at, id)`` index).
    """
    if not 1 <= limit <= MAX_MESSAGES:
        raise InvalidInput(f"limit must be between 1 and {MAX_MESSAGES}")
    rows = session.execute(
        select(Interaction)
        .where(
            Interaction.conversation_id == conversation_id,
            Interaction.id > after_id,
        )
        .order_by(Interaction.id)
        .limit(limit)
    ).scalars()
    return [message_view(row) for row in rows]


@dataclass(frozen=True)
class UndeliveredView:
    """A message the customer's channel could not take (outbox ``failed``)."""

    id: int
    author: str
    text: str
    error: str | None
    attempts: int
    created_at: dt.datetime | None


@dataclass(frozen=True)
class ConversationView:
    """A conversation's record and its transcript (oldest first)."""

    id: str
    tracker_key: str | None
    channel: str
    customer_id: str | None
    status: str
    outcome: str | None
    started_at: dt.datetime
    last_activity_at: dt.datetime
    ended_at: dt.datetime | None
    csat: int | None
    messages: list[MessageView]
    # Messages that never reached the customer (their channel refused them).
    undelivered: list[UndeliveredView] = field(default_factory=list)


def conversation_view(session: Session, *, conversation_id: str) -> ConversationView:
    """Return a conversation with its whole transcript.

    Raises:
        NotFound: no such conversation.
    """
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        raise NotFound(f"conversation {conversation_id} not found")
    rows = session.execute(
        select(Interaction)
        .where(Interaction.conversation_id == conversation_id)
        .order_by(Interaction.occurred_at, Interaction.id)
    ).scalars()
    return ConversationView(
        id=conversation.id,
        tracker_key=conversation.tracker_key,
        channel=conversation.channel,
        customer_id=conversation.customer_id,
        status=conversation.status,
        outcome=conversation.outcome,
        started_at=conversation.started_at,
        last_activity_at=conversation.last_activity_at,
        ended_at=conversation.ended_at,
        csat=conversation.csat,
        messages=[message_view(row) for row in rows],
        undelivered=[
            UndeliveredView(
                id=m.id,
                author=m.author,
                text=m.text,
                error=m.last_error,
                attempts=m.attempts,
                created_at=m.created_at,
            )
            for m in failed_deliveries(session, conversation_id=conversation.id)
        ],
    )


@dataclass(frozen=True)
class QueueFingerprint:
    """Changes whenever the open queue changes (arrival, claim, resolution)."""

    waiting: int
    claimed: int
    newest_id: int
    newest_claim: dt.datetime | None


def queue_fingerprint(session: Session) -> QueueFingerprint:
    """Summarize the open handoffs in one indexed aggregate.

    An arrival raises ``newest_id``/``waiting``, a claim moves one from waiting
    to claimed, a resolution lowers ``claimed``: every change of the queue page
    changes the fingerprint.
    """
    rows = session.execute(
        select(
            Handoff.status,
            func.count(),
            func.max(Handoff.id),
            func.max(Handoff.claimed_at),
        )
        .where(Handoff.status.in_(("waiting", "claimed")))
        .group_by(Handoff.status)
    ).all()
    by_status = {row[0]: row for row in rows}
    waiting = by_status.get("waiting")
    claimed = by_status.get("claimed")
    return QueueFingerprint(
        waiting=waiting[1] if waiting else 0,
        claimed=claimed[1] if claimed else 0,
        newest_id=max((row[2] or 0) for row in rows) if rows else 0,
        newest_claim=claimed[3] if claimed else None,
    )


@dataclass(frozen=True)
class HandoffState:
    """The mutable part of a handoff, for watching it."""

    id: int
    status: str
    claimed_by: int | None
    conversation_id: str | None


def handoff_state(session: Session, *, handoff_id: int) -> HandoffState | None:
    """Return a handoff's status and claimer (one primary-key read), or None."""
    row = session.execute(
        select(
            Handoff.id, Handoff.status, Handoff.claimed_by, Handoff.conversation_id
        ).where(Handoff.id == handoff_id)
    ).first()
    return None if row is None else HandoffState(*row)


@dataclass(frozen=True)
class TicketView:
    """A ticket as staff see it."""

    number: str
    kind: str
    subject: str
    status: str
    order_id: str | None
    conversation_id: str | None
    rma_number: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


def tickets_for_customer(
    session: Session, *, customer_id: str, limit: int = 50
) -> list[TicketView]:
    """Return the customer's tickets, newest first."""
    if not 1 <= limit <= 200:
        raise InvalidInput("limit must be between 1 and 200")
    rows = session.execute(
        select(Ticket)
        .where(Ticket.customer_id == customer_id)
        .order_by(Ticket.created_at.desc(), Ticket.id.desc())
        .limit(limit)
    ).scalars()
    return [
        TicketView(
            number=t.number,
            kind=t.kind,
            subject=t.subject,
            status=t.status,
            order_id=t.order_id,
            conversation_id=t.conversation_id,
            rma_number=t.rma_number,
            created_at=t.created_at,
            updated_at=t.updated_at,
        )
        for t in rows
    ]


@dataclass(frozen=True)
class CustomerMatch:
    """One row of a customer search."""

    id: str
    name: str
    email: str | None
    phone: str | None
    is_prospect: bool
    value_tier: str | None
    churn_band: str | None


def find_customers(
    session: Session, *, query: str, limit: int = 20
) -> list[CustomerMatch]:
    """Search customers by id, name, e-mail or phone, with their tier and churn band.

    Raises:
        InvalidInput: empty query or a bad limit.
    """
    if not query or not query.strip():
        raise InvalidInput("type part of a name, e-mail, phone number or customer id")
    if not 1 <= limit <= MAX_SEARCH:
        raise InvalidInput(f"limit must be between 1 and {MAX_SEARCH}")
    customers: list[Customer] = search_customers(session, query=query, limit=limit)
    scores = (
        {
            row.customer_id: row
            for row in session.execute(
                select(CustomerScore).where(
                    CustomerScore.customer_id.in_([c.id for c in customers])
                )
            ).scalars()
        }
        if customers
        else {}
    )
    return [
        CustomerMatch(
            id=c.id,
            name=c.display_name,
            email=c.email,
            phone=c.phone,
            is_prospect=c.is_prospect,
            value_tier=scores[c.id].value_tier if c.id in scores else None,
            churn_band=scores[c.id].churn_band if c.id in scores else None,
        )
        for c in customers
    ]


@dataclass(frozen=True)
class HandoffSummary:
    """A past or open handoff of a customer (for the customer page)."""

    id: int
    status: str
    reason: str
    channel: str
    conversation_id: str | None
    created_at: dt.datetime
    resolved_at: dt.datetime | None
    resolution_note: str | None


def handoffs_of_customer(
    session: Session, *, customer_id: str, limit: int = 20
) -> list[HandoffSummary]:
    """Return the customer's handoffs, newest first."""
    rows = session.execute(
        select(Handoff)
        .where(Handoff.customer_id == customer_id)
        .order_by(Handoff.created_at.desc(), Handoff.id.desc())
        .limit(limit)
    ).scalars()
    return [
        HandoffSummary(
            id=h.id,
            status=h.status,
            reason=h.reason,
            channel=h.channel,
            conversation_id=h.conversation_id,
            created_at=h.created_at,
            resolved_at=h.resolved_at,
            resolution_note=h.resolution_note,
        )
        for h in rows
    ]


@dataclass(frozen=True)
class StaffView:
    """A console user as the admin page lists them (never the hash)."""

    id: int
    username: str
    role: str
    active: bool
    created_at: dt.datetime
    last_login_at: dt.datetime | None
    open_sessions: int


def staff_list(session: Session, *, now: dt.datetime | None = None) -> list[StaffView]:
    """Return every console user with their count of unexpired sessions."""
    now = now or utcnow()
    open_sessions = (
        select(StaffSession.staff_id, func.count().label("n"))
        .where(StaffSession.expires_at > now)
        .group_by(StaffSession.staff_id)
        .subquery()
    )
    rows = session.execute(
        select(StaffUser, open_sessions.c.n)
        .outerjoin(open_sessions, open_sessions.c.staff_id == StaffUser.id)
        .order_by(StaffUser.username)
    ).all()
    return [
        StaffView(
            id=user.id,
            username=user.username,
            role=user.role,
            active=user.active,
            created_at=user.created_at,
            last_login_at=user.last_login_at,
            open_sessions=n or 0,
        )
        for user, n in rows
    ]
