"""Optional links between records (tickets, returns, handoffs -> conversation)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from crm_store.models import Conversation
from crm_store.services.history import latest_conversation


def conversation_id_for(session: Session, tracker_key: str | None) -> str | None:
    """Return the id of the tracker key's current (newest) conversation, if stored.

    The contact history may not have written a conversation's first turn yet
    when an action asks: then there is none.
    """
    if not tracker_key:
        return None
    conversation = latest_conversation(session, tracker_key=tracker_key)
    return conversation.id if conversation is not None else None


def known_conversation_id(session: Session, conversation_id: str | None) -> str | None:
    """Return a stored conversation's id for a tracker key or a conversation id.

    Actions pass the tracker key (``tracker.sender_id``, e.g. ``rest:…``): it
    resolves to its current conversation. A stored conversation id is returned
    as is. Anything else gives None (the foreign key needs a stored row).
    """
    if not conversation_id:
        return None
    by_key = conversation_id_for(session, conversation_id)
    if by_key is not None:
        return by_key
    if session.get(Conversation, conversation_id) is not None:
        return conversation_id
    return None
