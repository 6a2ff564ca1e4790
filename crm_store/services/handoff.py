"""Handoff to a human agent: a waiting queue entry with a typed context packet."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput
from crm_store.models import CHANNELS, Handoff, utcnow
from crm_store.services.links import known_conversation_id

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
# Human agents: Mon-Fri 08:00-20:00, Sat 09:00-17:00 (Europe/Amsterdam).
AGENT_HOURS = {d: (8, 20) for d in range(5)} | {5: (9, 17)}
REASONS = (
    "customer_request",
    "fallback",
    "verification_failed",
    "step_up_required",
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


@dataclass(frozen=True)
class HandoffResult:
    """The queued handoff, its position and whether agents are working now."""

    handoff_id: int
    position: int
    agents_available: bool


def agents_available(now: dt.datetime | None = None) -> bool:
    """Tell whether human agents work at ``now`` (naive UTC)."""
    now = now or utcnow()
    local = now.replace(tzinfo=dt.timezone.utc).astimezone(AMSTERDAM)
    hours = AGENT_HOURS.get(local.weekday())
    return hours is not None and hours[0] <= local.hour < hours[1]


def request_handoff(
    session: Session,
    *,
    conversation_id: str,
    packet: HandoffPacket,
    priority: int = 0,
    at: dt.datetime | None = None,
) -> HandoffResult:
    """Queue a conversation for a human; return its position among waiting ones.

    A conversation has at most one waiting handoff: asking again returns the
    existing entry. Queue order is priority (higher first), then waiting time.
    """
    if packet.channel not in CHANNELS:
        raise InvalidInput(f"unknown channel {packet.channel!r}")
    if packet.reason not in REASONS:
        raise InvalidInput(f"reason must be one of {REASONS}")
    at = at or utcnow()
    conv_id = known_conversation_id(session, conversation_id)
    handoff = None
    if conv_id is not None:
        handoff = session.execute(
            select(Handoff).where(
                Handoff.conversation_id == conv_id, Handoff.status == "waiting"
            )
        ).scalar_one_or_none()
    if handoff is None:
        data = asdict(packet) | {"conversation_id": conversation_id}
        handoff = Handoff(
            conversation_id=conv_id,
            customer_id=packet.customer_id,
            channel=packet.channel,
            reason=packet.reason,
            status="waiting",
            priority=priority,
            packet=data,
            created_at=at,
        )
        session.add(handoff)
        session.flush()
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
    return HandoffResult(handoff.id, ahead + 1, agents_available(at))
