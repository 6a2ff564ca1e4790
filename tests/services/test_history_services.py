"""Contact-history services the recorder calls (both backends)."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy.orm import Session

from crm_store.models import Conversation
from crm_store.services.conversations import close_conversation, open_conversation
from crm_store.services.history import touch_open_conversation

START = dt.datetime(2024, 5, 1, 9, 0)


def new_conversation(session: Session) -> str:
    conversation_id = f"touch-{uuid.uuid4().hex[:10]}"
    open_conversation(
        session, conversation_id=conversation_id, channel="chat", at=START
    )
    session.flush()
    return conversation_id


def test_touch_moves_an_open_conversations_activity_forward(session: Session) -> None:
    conversation_id = new_conversation(session)
    later = START + dt.timedelta(minutes=5)

    touched = touch_open_conversation(
        session, conversation_id=conversation_id, at=later
    )

    assert touched is not None and touched.id == conversation_id
    session.flush()
    session.expire_all()
    assert session.get(Conversation, conversation_id).last_activity_at == later


def test_touch_never_moves_activity_back(session: Session) -> None:
    conversation_id = new_conversation(session)
    earlier = START - dt.timedelta(minutes=5)

    touched = touch_open_conversation(
        session, conversation_id=conversation_id, at=earlier
    )

    assert touched is not None
    session.flush()
    session.expire_all()
    assert session.get(Conversation, conversation_id).last_activity_at == START


def test_touch_leaves_closed_and_missing_conversations_alone(session: Session) -> None:
    conversation_id = new_conversation(session)
    ended = START + dt.timedelta(minutes=1)
    close_conversation(
        session, conversation_id=conversation_id, outcome="self_served", at=ended
    )
    session.flush()

    later = START + dt.timedelta(hours=1)
    assert (
        touch_open_conversation(session, conversation_id=conversation_id, at=later)
        is None
    )
    assert touch_open_conversation(session, conversation_id="no-such", at=later) is None
    session.flush()
    session.expire_all()
    closed = session.get(Conversation, conversation_id)
    assert (closed.status, closed.last_activity_at) == ("closed", START)
