"""The broker records every turn of a real conversation in the contact history."""

from __future__ import annotations

import uuid

from crm_store.models import Conversation
from crm_store.services.interactions import transcript


def _sender(prefix: str) -> str:
    return f"e2e-{prefix}-{uuid.uuid4().hex[:8]}"


def test_every_user_and_bot_message_is_in_the_transcript(stack) -> None:
    sender = _sender("history")
    sent = ["hello", "bye"]
    replies: list[str] = []
    for text in sent:
        replies += stack.texts(sender, text)
    assert replies, "the bot answered nothing"
    expected = len(sent) + len(replies)

    def rows() -> list:
        with stack.factory() as session:
            found = transcript(session, conversation_id=sender)
            return found if len(found) >= expected else []

    history = stack.eventually(rows)
    incoming = [r for r in history if r.direction == "in"]
    outgoing = [r for r in history if r.direction == "out"]
    assert [r.text for r in incoming] == sent
    assert [r.text for r in outgoing] == replies
    assert all(r.author == "customer" and r.channel == "chat" for r in incoming)
    assert all(r.intent and 0 < r.confidence <= 1 for r in incoming)
    assert incoming[-1].intent == "goodbye"
    assert all(r.author == "bot" and r.intent is None for r in outgoing)
    assert len({r.event_id for r in history}) == len(history)

    with stack.factory() as session:
        conversation = session.get(Conversation, sender)
        assert conversation.channel == "chat"
        assert conversation.status == "closed"
        assert conversation.outcome == "self_served"
