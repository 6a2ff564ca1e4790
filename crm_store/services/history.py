"""Contact-history bookkeeping for the bot's event broker.

A conversation belongs to a tracker key (the namespaced Rasa sender id,
``rest:…``, ``telegram:…``; see ``channels.keys``), kept in
``conversations.tracker_key``. Its id is issued here, opaque (``cv_`` + 32 hex
digits), never derived from the sender: once a conversation is closed, the
key's next message opens a new one with a new id, so staff see each visit
separately. Seeded fixture conversations keep their own ids and have no key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from crm_store.models import Conversation, Interaction, utcnow

ID_PREFIX = "cv_"
MAX_TRACKER_KEY = 255


def stored_tracker_key(tracker_key: str) -> str:
    """The key as stored: longer keys keep a prefix plus a SHA-256 of the whole."""
    if len(tracker_key) <= MAX_TRACKER_KEY:
        return tracker_key
    digest = hashlib.sha256(tracker_key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{tracker_key[: MAX_TRACKER_KEY - 65]}#{digest}"


def latest_conversation(
    session: Session, *, tracker_key: str | None = None, sender_id: str | None = None
) -> Conversation | None:
    """Return the key's most recent conversation (open or closed), if any.

    ``sender_id`` is the older name of ``tracker_key`` (the Rasa sender id).
    """
    key = tracker_key if tracker_key is not None else sender_id
    if not key:
        return None
    stmt = (
        select(Conversation)
        .where(Conversation.tracker_key == stored_tracker_key(key))
        .order_by(Conversation.started_at.desc(), Conversation.id.desc())
        .limit(1)
    )
    return session.execute(stmt).scalars().first()


def next_conversation_id(
    session: Session, *, tracker_key: str | None = None, sender_id: str | None = None
) -> str:
    """Issue a new, unused conversation id (the key does not shape it)."""
    del session, tracker_key, sender_id  # random ids: no lookup needed
    return f"{ID_PREFIX}{uuid.uuid4().hex}"


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
