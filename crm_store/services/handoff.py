"""Handoff to a human agent: a waiting queue entry with a typed context packet."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Literal
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput
from crm_store.models import CHANNELS, Conversation, Handoff, utcnow
from crm_store.services.conversations import open_conversation
from crm_store.services.history import next_conversation_id
from crm_store.services.links import conversation_id_for

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
# Human agents: Mon-Fri 08:00-20:00, Sat 09:00-17:00 (Europe/Amsterdam).
AGENT_HOURS = {d: (8, 20) for d in range(5)} | {5: (9, 17)}
REASONS = (
    "customer_request",
    "fallback",
    "verification_failed",
    "step_up_required",
    "complaint",
    "form_stuck",
    "other",
)


@dataclass(frozen=True)
class HandoffPacket:
    """Context an agent needs to take over without asking again."""

    customer_id: str | None
    verified: bool
    verification_method: str | None
    channel: str
    reason: str
    last_intents: list[str] = field(default_factory=list)
    last_messages: list[str] = field(default_factory=list)
    summary: str | None = None
    value_tier: str | None = None
    churn_band: str | None = None


HandoffStatus = Literal["queued", "already_queued", "already_claimed", "limited"]
OPEN_STATUSES = ("waiting", "claimed")
SENDER_WINDOW = dt.timedelta(hours=1)


@dataclass(frozen=True)
class HandoffResult:
    """What became of a request, and whether agents are working now.

    ``status``: ``queued`` (a new entry), ``already_queued`` / ``already_claimed``
    (the conversation's open entry, nothing new recorded), ``limited`` (the
    sender reached its hourly limit: nothing recorded, no id, no position).
    ``position`` is the place among waiting entries, None unless waiting.
    """

    handoff_id: int | None
    position: int | None
    agents_available: bool
    status: HandoffStatus = "queued"


def agents_available(now: dt.datetime | None = None) -> bool:
    """Tell whether human agents work at ``now`` (naive UTC)."""
    now = now or utcnow()
    local = now.replace(tzinfo=dt.timezone.utc).astimezone(AMSTERDAM)
    hours = AGENT_HOURS.get(local.weekday())
    return hours is not None and hours[0] <= local.hour < hours[1]


def current_conversation_id(
    session: Session,
    *,
    tracker_key: str,
    channel: str,
    customer_id: str | None = None,
    at: dt.datetime | None = None,
) -> str:
    """Return the tracker key's current conversation id, opening one if none.

    An action may run before the contact-history writer has stored the
    conversation's first turn; the writer then continues the one opened here.
    """
    found = conversation_id_for(session, tracker_key)
    if found is not None:
        return found
    conversation = open_conversation(
        session,
        conversation_id=next_conversation_id(session, tracker_key=tracker_key),
        channel=channel,
        customer_id=customer_id,
        tracker_key=tracker_key,
        at=at,
    )
    return conversation.id


def _open_handoff(session: Session, conversation_id: str) -> Handoff | None:
    return (
        session.execute(
            select(Handoff)
            .where(
                Handoff.conversation_id == conversation_id,
                Handoff.status.in_(OPEN_STATUSES),
            )
            .order_by(Handoff.created_at)
            .limit(1)
        )
        .scalars()
        .first()
    )


def sender_handoffs(session: Session, *, tracker_key: str, since: dt.datetime) -> int:
    """Count the handoffs of every conversation of ``tracker_key`` since ``since``."""
    return session.execute(
        select(func.count())
        .select_from(Handoff)
        .join(Conversation, Conversation.id == Handoff.conversation_id)
        .where(Conversation.tracker_key == tracker_key, Handoff.created_at >= since)
    ).scalar_one()


def _position(session: Session, handoff: Handoff) -> int:
    ahead = session.execute(
        select(func.count())
        .select_from(Handoff)
        .where(
            Handoff.status == "waiting",
            Handoff.id != handoff.id,
            or_(
                Handoff.priority > handoff.priority,
                (Handoff.priority == handoff.priority)
                & (Handoff.created_at <= handoff.created_at),
            ),
        )
    ).scalar_one()
    return ahead + 1


def request_handoff(
    session: Session,
    *,
    conversation_id: str | None,
    packet: HandoffPacket,
    priority: int = 0,
    sender_limit: int | None = None,
    at: dt.datetime | None = None,
) -> HandoffResult:
    """Queue a conversation for a human; return its status and queue position.

    De-duplicated per conversation: while it has a waiting or claimed entry,
    asking again returns that entry and records nothing. Rate-limited per
    sender: at most ``sender_limit`` handoffs per hour over all conversations
    of the conversation's tracker key (None: no limit); beyond that nothing is
    recorded. Queue order is priority (higher first), then waiting time. An
    unknown ``conversation_id`` queues a handoff without a conversation.
    """
    if packet.channel not in CHANNELS:
        raise InvalidInput(f"unknown channel {packet.channel!r}")
    if packet.reason not in REASONS:
        raise InvalidInput(f"reason must be one of {REASONS}")
    at = at or utcnow()
    available = agents_available(at)
    conversation = (
        session.get(Conversation, conversation_id) if conversation_id else None
    )
    if conversation is not None:
        existing = _open_handoff(session, conversation.id)
        if existing is not None and existing.status == "waiting":
            position = _position(session, existing)
            return HandoffResult(existing.id, position, available, "already_queued")
        if existing is not None:
            return HandoffResult(existing.id, None, available, "already_claimed")
        if (
            sender_limit is not None
            and conversation.tracker_key
            and sender_handoffs(
                session, tracker_key=conversation.tracker_key, since=at - SENDER_WINDOW
            )
            >= sender_limit
        ):
            return HandoffResult(None, None, available, "limited")
    conv_id = conversation.id if conversation is not None else None
    key = conversation.tracker_key if conversation is not None else None
    handoff = Handoff(
        conversation_id=conv_id,
        customer_id=packet.customer_id,
        channel=packet.channel,
        reason=packet.reason,
        status="waiting",
        priority=priority,
        packet=asdict(packet) | {"conversation_id": conv_id, "tracker_key": key},
        created_at=at,
    )
    session.add(handoff)
    session.flush()
    return HandoffResult(handoff.id, _position(session, handoff), available)
