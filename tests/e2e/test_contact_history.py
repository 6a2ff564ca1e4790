"""The broker records every turn of a real conversation in the contact history."""

from __future__ import annotations

import uuid

from dialogue_support import conversation_of, history_of

from channels.identity_assertion import metadata_for
from crm_store.services.interactions import timeline

CUSTOMER = "C0001"
CUSTOMER_EMAIL = "farah.dijkstra1@example.com"


def test_customer_timeline_holds_every_message_with_intent(stack) -> None:
    sender = f"e2e-history-{uuid.uuid4().hex[:8]}"
    identity = metadata_for(stack.identity_secret, sender, "email", CUSTOMER_EMAIL)
    sent = ["hello", "bye"]
    replies: list[str] = []
    for text in sent:
        replies += stack.texts(sender, text, identity)
    assert replies, "the bot answered nothing"
    expected = len(sent) + len(replies)

    def rows() -> list:
        found = history_of(stack, sender)
        return found if len(found) >= expected else []

    history = stack.eventually(rows)
    assert len(history) == expected
    incoming = [r for r in history if r.direction == "in"]
    outgoing = [r for r in history if r.direction == "out"]
    assert [r.text for r in incoming] == sent
    assert [r.text for r in outgoing] == replies
    assert all(r.author == "customer" and r.channel == "chat" for r in incoming)
    assert [r.intent for r in incoming] == ["greet", "goodbye"]
    assert all(0 < r.confidence <= 1 for r in incoming)
    assert all(r.author == "bot" and r.intent is None for r in outgoing)
    assert len({r.event_id for r in history}) == len(history)

    # Verified on the first message: the whole conversation is on the
    # customer's timeline, the first message included (backfilled).
    assert {r.customer_id for r in history} == {CUSTOMER}
    with stack.factory() as session:
        page = timeline(session, customer_id=CUSTOMER, limit=200)
        on_timeline = {r.event_id for r in page.items}
        assert {r.event_id for r in history} <= on_timeline
    conversation = conversation_of(stack, sender)
    # The store issued the id; the tracker key is the namespaced sender id.
    assert conversation.tracker_key == f"rest:{sender}"
    assert conversation.id.startswith("cv_") and sender not in conversation.id
    assert {r.conversation_id for r in history} == {conversation.id}
    assert conversation.customer_id == CUSTOMER
    assert conversation.channel == "chat"
    assert (conversation.status, conversation.outcome) == ("closed", "self_served")


def test_anonymous_conversation_is_recorded_without_customer(stack) -> None:
    sender = f"e2e-anon-{uuid.uuid4().hex[:8]}"
    replies = stack.texts(sender, "hello")

    def rows() -> list:
        found = history_of(stack, sender)
        return found if len(found) >= 1 + len(replies) else []

    history = stack.eventually(rows)
    assert [r.text for r in history] == ["hello", *replies]
    assert all(r.customer_id is None for r in history)
    conversation = conversation_of(stack, sender)
    assert conversation.tracker_key == f"rest:{sender}"
    assert (conversation.status, conversation.customer_id) == ("open", None)
