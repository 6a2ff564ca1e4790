"""Conversation records: opened on first message, closed with an outcome."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput, NotFound
from crm_store.models import CHANNELS, Conversation, utcnow
from crm_store.services.history import stored_tracker_key

OUTCOMES = ("self_served", "escalated", "abandoned")


def open_conversation(
    session: Session,
    *,
    conversation_id: str,
    channel: str,
    customer_id: str | None = None,
    tracker_key: str | None = None,
    at: dt.datetime | None = None,
) -> Conversation:
    """Return the open conversation with this id, creating it on first message.

    Touches ``last_activity_at`` and fills in the customer once it is known.
    ``tracker_key`` (the namespaced Rasa sender id) is set on creation; ids come
    from ``crm_store.services.history.next_conversation_id``.
    """
    if channel not in CHANNELS:
        raise InvalidInput(f"unknown channel {channel!r}")
    at = at or utcnow()
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        try:
            with session.begin_nested():
                key = stored_tracker_key(tracker_key) if tracker_key else None
                conversation = Conversation(
                    id=conversation_id,
                    tracker_key=key,
                    channel=channel,
                    customer_id=customer_id,
                    started_at=at,
                    last_activity_at=at,
                    status="open",
                )
                session.add(conversation)
                session.flush()
            return conversation
        except IntegrityError:
            # Same id opened meanwhile, or another open conversation of the same
            # tracker key (one per key): continue that one.
            conversation = session.get(Conversation, conversation_id)
            if conversation is None and tracker_key:
                conversation = _open_for_key(session, stored_tracker_key(tracker_key))
            if conversation is None:
                raise
    if customer_id and not conversation.customer_id:
        conversation.customer_id = customer_id
    if at > conversation.last_activity_at:
        conversation.last_activity_at = at
    return conversation


def _open_for_key(session: Session, key: str) -> Conversation | None:
    stmt = select(Conversation).where(
        Conversation.tracker_key == key, Conversation.status == "open"
    )
    return session.execute(stmt).scalars().first()


def close_conversation(
    session: Session,
    *,
    conversation_id: str,
    outcome: str,
    at: dt.datetime | None = None,
) -> Conversation:
    """Close a conversation with an outcome (self_served, escalated, abandoned)."""
    if outcome not in OUTCOMES:
        raise InvalidInput(f"outcome must be one of {OUTCOMES}")
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        raise NotFound(f"conversation {conversation_id} not found")
    conversation.status = "closed"
    conversation.outcome = outcome
    conversation.ended_at = at or utcnow()
    return conversation


def close_inactive_conversations(
    session: Session, *, idle_for: dt.timedelta, now: dt.datetime | None = None
) -> int:
    """Close open conversations idle longer than ``idle_for`` as abandoned."""
    cutoff = (now or utcnow()) - idle_for
    result = session.execute(
        update(Conversation)
        .where(Conversation.status == "open", Conversation.last_activity_at < cutoff)
        .values(
            status="closed", outcome="abandoned", ended_at=Conversation.last_activity_at
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0
