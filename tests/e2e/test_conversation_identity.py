"""Issue 11: a REST sender named like another channel's identity reaches nothing else.

Tracker keys are ``rest:<sender>`` for every REST client (``channels.keys``);
contact-history conversation ids are issued by the store.
"""

from __future__ import annotations

import uuid

from dialogue_support import Chat, conversation_of, email_of, history_of
from sqlalchemy import select

from channels.identity_assertion import metadata_for
from crm_store.models import Conversation
from crm_store.services.orders import orders_for_customer

LOOK_ALIKES = ("telegram:123", "+3197010000001", "sms:+3197010000001", "rest:other")
CUSTOMER = "C0002"


def stored_keys(stack, keys: set[str]) -> list:
    with stack.factory() as session:
        return session.execute(
            select(Conversation.id, Conversation.tracker_key).where(
                Conversation.tracker_key.in_(keys)
            )
        ).all()


def test_look_alike_rest_senders_get_their_own_rest_conversations(stack) -> None:
    for sender in LOOK_ALIKES:
        answers = stack.send(sender, "hello")
        assert answers, sender
        assert {a["recipient_id"] for a in answers} == {sender}

    keys = {f"rest:{sender}" for sender in LOOK_ALIKES}

    def all_four() -> list:
        found = stored_keys(stack, keys)
        return found if len(found) == 4 else []

    rows = stack.eventually(all_four)
    assert {r.tracker_key for r in rows} == keys
    assert len({r.id for r in rows}) == 4
    assert all(r.id.startswith("cv_") for r in rows)
    # Nothing landed under the channel identities the senders imitate.
    assert stored_keys(stack, {*LOOK_ALIKES, "other"}) == []


def test_a_verified_conversation_is_invisible_to_look_alike_senders(stack) -> None:
    with stack.factory() as session:
        orders = [o.id for o in orders_for_customer(session, customer_id=CUSTOMER)]
    email = email_of(stack, CUSTOMER)
    victim = Chat(stack, identity=("email", email), sender=f"v-{uuid.uuid4().hex[:8]}")
    listed = victim.say("show me my recent orders")
    assert any(number in listed for number in orders), listed

    for look_alike in (f"rest:{victim.sender}", f"{victim.sender}~2", "web:x"):
        intruder = Chat(stack, sender=look_alike)
        reply = intruder.say("show me my recent orders")
        assert not any(number in reply for number in orders), (look_alike, reply)
        # Even with the victim's own signed assertion: it names another sender.
        stolen = metadata_for(stack.identity_secret, victim.sender, "email", email)
        answers = stack.send(look_alike, "show me my recent orders", stolen)
        texts = " ".join(a.get("text", "") for a in answers)
        assert not any(number in texts for number in orders), (look_alike, texts)

    victim.assert_history()
    conversation = conversation_of(stack, victim.sender)
    assert conversation.customer_id == CUSTOMER
    intruders = conversation_of(stack, f"rest:{victim.sender}")
    assert intruders.id != conversation.id and intruders.customer_id is None


def test_a_returning_sender_gets_a_new_store_issued_conversation(stack) -> None:
    """``<sender>~2`` was the second visit of ``<sender>``; now ids are opaque."""
    sender = f"visit-{uuid.uuid4().hex[:8]}"
    chat = Chat(stack, sender=sender)
    chat.say("hello")
    chat.say("bye")
    first = stack.eventually(
        lambda: (c := conversation_of(stack, sender)) and c.status == "closed" and c
    )
    imitator = Chat(stack, sender=f"{sender}~2")
    imitator.say("hello")
    chat.say("hello again")
    second = stack.eventually(
        lambda: (c := conversation_of(stack, sender)) and c.id != first.id and c
    )
    assert second.status == "open" and second.tracker_key == f"rest:{sender}"
    texts = [r.text for r in history_of(stack, sender)]
    assert texts[0] == "hello again"
    assert conversation_of(stack, f"{sender}~2").id not in (first.id, second.id)
