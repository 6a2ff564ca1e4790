"""Customer feedback: the CSAT answer (1-5) at the end of a conversation."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput
from crm_store.models import Conversation, utcnow
from crm_store.services.interactions import NewInteraction, append_interaction

CSAT_MIN, CSAT_MAX = 1, 5


def parse_csat(value: object) -> int:
    """Return a CSAT score 1-5 from ``value`` ("4", 4, "4 stars") or raise."""
    text = str(value or "").strip()
    digits = [c for c in text if c.isdigit()]
    if len(digits) != 1 or not CSAT_MIN <= int(digits[0]) <= CSAT_MAX:
        raise InvalidInput("a rating is a whole number from 1 to 5")
    return int(digits[0])


def record_csat(
    session: Session,
    *,
    conversation_id: str,
    score: int,
    channel: str = "chat",
    customer_id: str | None = None,
    at: dt.datetime | None = None,
) -> bool:
    """Store a CSAT answer on the conversation and in the contact history.

    The conversation row is created when the broker has not written it yet.
    Idempotent per conversation: the history row's event id is
    ``csat:<conversation_id>``; a second answer updates the score only.
    Returns True when the history row was new.
    """
    if not CSAT_MIN <= int(score) <= CSAT_MAX:
        raise InvalidInput("a rating is a whole number from 1 to 5")
    at = at or utcnow()
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        conversation = Conversation(
            id=conversation_id,
            channel=channel,
            customer_id=customer_id,
            started_at=at,
            last_activity_at=at,
            status="open",
        )
        session.add(conversation)
    conversation.csat = int(score)
    if customer_id and not conversation.customer_id:
        conversation.customer_id = customer_id
    session.flush()
    return append_interaction(
        session,
        item=NewInteraction(
            event_id=f"csat:{conversation_id}",
            channel=conversation.channel,
            direction="in",
            author="customer",
            text=f"CSAT {int(score)}",
            customer_id=customer_id or conversation.customer_id,
            conversation_id=conversation_id,
            intent="csat",
            confidence=1.0,
            occurred_at=at,
            meta={"kind": "csat", "csat": int(score)},
        ),
    )
