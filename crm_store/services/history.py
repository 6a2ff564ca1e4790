"""Contact-history bookkeeping for the bot's event broker.

Conversation ids follow the Rasa sender id: the first conversation of a sender
has exactly the sender id; once it is closed, the sender's next message opens
``<sender id>~<n>`` (n = 2, 3, ...), so staff see each visit separately.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import and_, case, func, select, update
from sqlalchemy.orm import Session

from crm_store.models import Conversation, Interaction, utcnow

SUFFIX_SEPARATOR = "~"
MAX_CONVERSATION_ID = 128


def base_id(sender_id: str) -> str:
    """The first conversation id of a sender (room left for the ``~n`` suffix)."""
    return sender_id[: MAX_CONVERSATION_ID - 8]


def _later_ids(sender_id: str):  # noqa: ANN202
    """Condition matching ``<sender>~<n>`` ids as a primary-key range (indexed)."""
    prefix = sender_id + SUFFIX_SEPARATOR
    # "~" is the last printable ASCII character: every id starting with the prefix
    # sorts between the prefix and the sender id followed by DEL (0x7f).
    return and_(Conversation.id > prefix, Conversation.id < sender_id + "\x7f")


def latest_conversation(session: Session, *, sender_id: str) -> Conversation | None:
    """Return the sender's most recent conversation (open or closed), if any."""
    sender_id = base_id(sender_id)
    first = session.get(Conversation, sender_id)
    if first is None or first.status == "open":
        return first
    stmt = (
        select(Conversation)
        .where(_later_ids(sender_id))
        .order_by(Conversation.started_at.desc(), Conversation.id.desc())
        .limit(1)
    )
    return session.execute(stmt).scalars().first() or first


def next_conversation_id(session: Session, *, sender_id: str) -> str:
    """Return the id for the sender's next conversation (see module docstring)."""
    base = base_id(sender_id)
    if session.get(Conversation, base) is None:
        return base
    count = session.execute(
        select(func.count()).select_from(Conversation).where(_later_ids(base))
    ).scalar_one()
    number = count + 2
    while session.get(Conversation, f"{base}{SUFFIX_SEPARATOR}{number}") is not None:
        number += 1
    return f"{base}{SUFFIX_SEPARATOR}{number}"


def conversations_by_id(session: Session, *, ids: set[str]) -> list[Conversation]:
    """Load several conversations in one query (missing ids are skipped)."""
    if not ids:
        return []
    stmt = select(Conversation).where(Conversation.id.in_(sorted(ids)))
    return list(session.execute(stmt).scalars())


def link_conversation_customer(
    session: Session, *, conversation_id: str, customer_id: str
) -> int:
    """Attach a conversation to a customer and backfill its earlier interactions.

    Interactions of the conversation that were stored before the customer was
    known get ``customer_id``; rows already attributed are left alone.
    Returns the number of interactions backfilled.
    """
    conversation = session.get(Conversation, conversation_id)
    if conversation is not None and conversation.customer_id != customer_id:
        conversation.customer_id = customer_id
    result = session.execute(
        update(Interaction)
        .where(
            Interaction.conversation_id == conversation_id,
            Interaction.customer_id.is_(None),
        )
        .values(customer_id=customer_id)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


def touch_open_conversation(
    session: Session, *, conversation_id: str, at: dt.datetime
) -> Conversation | None:
    """Move an open conversation's last activity forward to ``at``.

    A closed or missing conversation is left alone; an earlier ``at`` changes
    nothing. Returns the conversation if it exists and is open, else None.
    """
    conversation = session.get(Conversation, conversation_id)
    if conversation is None or conversation.status != "open":
        return None
    if at > conversation.last_activity_at:
        conversation.last_activity_at = at
    return conversation


def mark_escalated(session: Session, *, conversation_id: str) -> None:
    """Record that a conversation was handed to a human (it stays open)."""
    conversation = session.get(Conversation, conversation_id)
    if conversation is not None:
        conversation.outcome = "escalated"


def close_idle_conversations(
    session: Session, *, idle_for: dt.timedelta, now: dt.datetime | None = None
) -> int:
    """Close open conversations idle longer than ``idle_for``.

    The outcome is ``abandoned`` unless the conversation was already escalated.
    Returns the number of conversations closed.
    """
    cutoff = (now or utcnow()) - idle_for
    result = session.execute(
        update(Conversation)
        .where(Conversation.status == "open", Conversation.last_activity_at < cutoff)
        .values(
            status="closed",
            outcome=case(
                (Conversation.outcome == "escalated", "escalated"),
                else_="abandoned",
            ),
            ended_at=Conversation.last_activity_at,
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0
