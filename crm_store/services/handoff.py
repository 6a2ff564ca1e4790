"""Handoff to a human agent: a waiting queue entry with a typed context packet."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput
from crm_store.models import CHANNELS, Conversation, Handoff, utcnow
from crm_store.services.agent_hours import DEFAULT_HOURS, AgentHours
from crm_store.services.conversations import open_conversation
from crm_store.services.history import next_conversation_id
from crm_store.services.links import conversation_id_for
from crm_store.services.queue import (
    REASONS,
    QueueWeights,
    default_weights,
    expected_wait,
    position_of,
    priority_points,
    queue_at_for,
)

__all__ = [
    "REASONS",
    "PACKET_VERSION",
    "HandoffPacket",
    "HandoffResult",
    "agents_available",
    "current_conversation_id",
    "request_handoff",
    "sender_handoffs",
]


PACKET_VERSION = 2


@dataclass(frozen=True)
class HandoffPacket:
    """Context an agent needs to take over without asking again (schema v2).

    The action server fills what the conversation knows (verification, intents,
    slots, actions, last messages); ``handoff_packet.enrich_packet`` adds what the
    store knows (identities, scores, open orders and tickets).
    """

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
    version: int = PACKET_VERSION
    conversation_id: str | None = None
    tracker_key: str | None = None
    customer_name: str | None = None
    identities: list[dict] = field(
        default_factory=list
    )  # {kind, value (masked), verified}
    clv: str | None = None  # Decimal as string
    churn_risk: float | None = None
    churn_drivers: list[str] = field(default_factory=list)
    slots: dict = field(default_factory=dict)  # non-empty, non-personal task slots
    actions: list[str] = field(default_factory=list)  # recent bot actions, oldest first
    open_orders: list[dict] = field(
        default_factory=list
    )  # {order_id, status, placed_at, total}
    open_tickets: list[dict] = field(default_factory=list)  # {number, subject, status}


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
    ``expected_wait`` (while waiting): ``queue.expected_wait`` for the position,
    plus the time until agents start when they are off now.
    """

    handoff_id: int | None
    position: int | None
    agents_available: bool
    status: HandoffStatus = "queued"
    expected_wait: dt.timedelta | None = None


def agents_available(
    now: dt.datetime | None = None, hours: AgentHours | None = None
) -> bool:
    """Tell whether human agents work at ``now`` (naive UTC).

    ``hours``: parsed ``CRM_AGENT_HOURS`` (``agent_hours.parse_agent_hours``);
    None means the hours of the policies (Mon-Fri 08-20, Sat 09-17, Amsterdam).
    """
    return (hours or DEFAULT_HOURS).is_open(now or utcnow())


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


def open_handoff_for_key(session: Session, *, tracker_key: str) -> int | None:
    """The id of the open (waiting or claimed) handoff of the key's conversation.

    The voice channel asks after each turn: a handoff the turn queued is put
    through to the agent line. None when the key has no open handoff.
    """
    found = conversation_id_for(session, tracker_key)
    if found is None:
        return None
    handoff = _open_handoff(session, found)
    return handoff.id if handoff is not None else None


def sender_handoffs(session: Session, *, tracker_key: str, since: dt.datetime) -> int:
    """Count the handoffs of every conversation of ``tracker_key`` since ``since``."""
    return session.execute(
        select(func.count())
        .select_from(Handoff)
        .join(Conversation, Conversation.id == Handoff.conversation_id)
        .where(Conversation.tracker_key == tracker_key, Handoff.created_at >= since)
    ).scalar_one()


def _waiting_result(
    session: Session,
    handoff: Handoff,
    *,
    at: dt.datetime,
    hours: AgentHours,
    weights: QueueWeights,
    status: HandoffStatus,
) -> HandoffResult:
    """Result for a waiting entry; the customer is told this position now."""
    position = position_of(session, handoff)
    handoff.told_position = position
    available = hours.is_open(at)
    wait = expected_wait(session, position, now=at, weights=weights)
    if not available:
        opening = hours.next_opening(at)
        if opening is not None:
            wait += opening - at
    return HandoffResult(handoff.id, position, available, status, wait)


def request_handoff(
    session: Session,
    *,
    conversation_id: str | None,
    packet: HandoffPacket,
    priority: int = 0,
    sender_limit: int | None = None,
    at: dt.datetime | None = None,
    weights: QueueWeights | None = None,
    hours: AgentHours | None = None,
) -> HandoffResult:
    """Queue a conversation for a human; return its status and queue position.

    De-duplicated per conversation: while it has a waiting or claimed entry,
    asking again returns that entry and records nothing new. Rate-limited per
    sender: at most ``sender_limit`` handoffs per hour over all conversations
    of the conversation's tracker key (None: no limit); beyond that nothing is
    recorded. Queue order (``crm_store.services.queue``): points for value
    tier, churn band and reason (``weights``, default ``config/queue.yml``)
    plus ``priority`` (the treatment boost), worth ``points /
    points_per_minute_waiting`` minutes of waiting. ``hours``: agent hours
    (default: the policies'). An unknown ``conversation_id`` queues a handoff
    without a conversation.
    """
    if packet.channel not in CHANNELS:
        raise InvalidInput(f"unknown channel {packet.channel!r}")
    if packet.reason not in REASONS:
        raise InvalidInput(f"reason must be one of {REASONS}")
    at = at or utcnow()
    weights = weights or default_weights()
    hours = hours or DEFAULT_HOURS
    available = hours.is_open(at)
    conversation = (
        session.get(Conversation, conversation_id) if conversation_id else None
    )
    if conversation is not None:
        existing = _open_handoff(session, conversation.id)
        if existing is not None and existing.status == "waiting":
            return _waiting_result(
                session,
                existing,
                at=at,
                hours=hours,
                weights=weights,
                status="already_queued",
            )
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
    points = priority_points(
        weights,
        value_tier=packet.value_tier,
        churn_band=packet.churn_band,
        reason=packet.reason,
        boost=priority,
    )
    handoff = Handoff(
        conversation_id=conv_id,
        customer_id=packet.customer_id,
        channel=packet.channel,
        reason=packet.reason,
        status="waiting",
        priority=points,
        packet=asdict(packet) | {"conversation_id": conv_id, "tracker_key": key},
        created_at=at,
        queue_at=queue_at_for(at, points, weights),
    )
    session.add(handoff)
    session.flush()
    return _waiting_result(
        session, handoff, at=at, hours=hours, weights=weights, status="queued"
    )
