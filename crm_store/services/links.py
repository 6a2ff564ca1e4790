"""Optional links between records (tickets, returns, handoffs -> conversation)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from crm_store.models import Conversation


def known_conversation_id(session: Session, conversation_id: str | None) -> str | None:
    """Return the id if that conversation is stored (the FK needs it), else None."""
    if conversation_id and session.get(Conversation, conversation_id) is not None:
        return conversation_id
    return None
