"""Customer feedback: the CSAT answer (1-5) at the end of a conversation.

A rating is accepted once per conversation, and only after the bot asked for
it: the asking action calls :func:`request_csat`, :func:`record_csat` refuses
anything else (``CsatOutcome``) and records nothing then.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import update
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput
from crm_store.models import Conversation, utcnow
from crm_store.services.interactions import NewInteraction, append_interaction

CSAT_MIN, CSAT_MAX = 1, 5


class CsatOutcome(str, enum.Enum):
    """What became of a rating."""

    RECORDED = "recorded"
    NOT_REQUESTED = "not_requested"  # the bot did not ask in this conversation
    ALREADY_ANSWERED = "already_answered"


def parse_csat(value: object) -> int:
    """Return a CSAT score 1-5 from ``value`` ("4", 4, "4 stars") or raise."""
    text = str(value or "").strip()
    digits = [c for c in text if c.isdigit()]
    if len(digits) != 1 or not CSAT_MIN <= int(digits[0]) <= CSAT_MAX:
        raise InvalidInput("a rating is a whole number from 1 to 5")
    return int(digits[0])


def request_csat(
    session: Session, *, conversation_id: str, at: dt.datetime | None = None
) -> bool:
    """Note that the bot asked for a rating in this conversation.

    Returns False (and changes nothing) when the conversation is unknown or was
    rated already; asking again keeps the first request time.
    """
    conversation = session.get(Conversation, conversation_id)
    if conversation is None or conversation.csat is not None:
        return False
    if conversation.csat_requested_at is None:
        conversation.csat_requested_at = at or utcnow()
        session.flush()
    return True


def record_csat(
    session: Session,
    *,
    conversation_id: str | None,
    score: int,
    customer_id: str | None = None,
    at: dt.datetime | None = None,
) -> CsatOutcome:
    """Store a requested CSAT answer on the conversation and in the contact history.

    Only the first answer after :func:`request_csat` counts (one conditional
    update decides, so concurrent answers cannot both win). The history row's
    event id is ``csat:<conversation_id>``.

    Raises:
        InvalidInput: the score is not 1-5.
    """
    if isinstance(score, bool) or not isinstance(score, int):
        raise InvalidInput("a rating is a whole number from 1 to 5")
    if not CSAT_MIN <= score <= CSAT_MAX:
        raise InvalidInput("a rating is a whole number from 1 to 5")
    if not conversation_id:
        return CsatOutcome.NOT_REQUESTED
    result = session.execute(
        update(Conversation)
        .where(
            Conversation.id == conversation_id,
            Conversation.csat_requested_at.isnot(None),
            Conversation.csat.is_(None),
        )
        .values(csat=score)
        .execution_options(synchronize_session="fetch")
    )
    conversation = session.get(Conversation, conversation_id)
    if (result.rowcount or 0) != 1:
        if conversation is None or conversation.csat_requested_at is None:
            return CsatOutcome.NOT_REQUESTED
        return CsatOutcome.ALREADY_ANSWERED
    if customer_id and not conversation.customer_id:
        conversation.customer_id = customer_id
    session.flush()
    append_interaction(
        session,
        item=NewInteraction(
            event_id=f"csat:{conversation_id}",
            channel=conversation.channel,
            direction="in",
            author="customer",
            text=f"CSAT {score}",
            customer_id=customer_id or conversation.customer_id,
            conversation_id=conversation_id,
            intent="csat",
            confidence=1.0,
            occurred_at=at or utcnow(),
            meta={"kind": "csat", "csat": score},
        ),
    )
    return CsatOutcome.RECORDED
