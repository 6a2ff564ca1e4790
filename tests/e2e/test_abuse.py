"""Abuse against the real stack: payload messages, CSAT spam, handoff floods, replay.

Each test talks to the real Rasa and action servers over HTTP (``stack``) and
reads the store they write to.
"""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
import requests
from dialogue_support import Chat, conversation_of, email_of, pick_order
from sqlalchemy import func, select

from channels.identity_assertion import metadata_for
from crm_store.models import (
    Conversation,
    Customer,
    Handoff,
    Interaction,
    Order,
    UsedNonce,
    utcnow,
)

pytestmark = pytest.mark.slow


def csat_rows(stack: Any, sender: str) -> list[Interaction]:
    with stack.factory() as session:
        rows = session.execute(
            select(Interaction)
            .join(Conversation, Conversation.id == Interaction.conversation_id)
            .where(
                Conversation.tracker_key == f"rest:{sender}",
                Interaction.intent == "csat",
            )
        ).scalars()
        return list(rows)


def handoff_count(stack: Any, sender: str) -> int:
    with stack.factory() as session:
        return session.execute(
            select(func.count())
            .select_from(Handoff)
            .join(Conversation, Conversation.id == Handoff.conversation_id)
            .where(Conversation.tracker_key == f"rest:{sender}")
        ).scalar_one()


def payloads(answers: list[dict[str, Any]]) -> list[str]:
    return [b["payload"] for a in answers for b in a.get("buttons") or []]


# --- CSAT ----------------------------------------------------------------------


def test_unprompted_ratings_record_nothing(stack) -> None:
    chat = Chat(stack)
    for text in ('/rate{"rating":"1"}', '/rate{"rating": "1"}', "1", "I rate you 1"):
        assert chat.say(text), text  # a polite answer, never silence
    stack.eventually(lambda: conversation_of(stack, chat.sender))
    assert conversation_of(stack, chat.sender).csat is None
    assert csat_rows(stack, chat.sender) == []


def test_only_the_first_rating_after_the_prompt_counts(stack) -> None:
    order = pick_order(stack, Order.status == "delivered", offset=31)
    chat = Chat(stack, identity=("email", email_of(stack, order.customer_id)))
    chat.say(f"where is order {order.id}")
    answers = stack.send(chat.sender, "no, that's all", chat.metadata())
    offered = payloads(answers)
    assert '/rate{"rating": "2"}' in offered, offered
    thanks = stack.texts(chat.sender, '/rate{"rating": "2"}', chat.metadata())
    assert "Thank you for your feedback" in "\n".join(thanks)
    for text in ('/rate{"rating": "1"}', "5", "1 star", '/rate{"rating":"5"}'):
        assert stack.texts(chat.sender, text, chat.metadata()), text
    assert conversation_of(stack, chat.sender).csat == 2
    [row] = csat_rows(stack, chat.sender)
    assert row.meta["csat"] == 2


# --- handoff -------------------------------------------------------------------


def test_one_sender_flooding_gets_one_handoff(stack) -> None:
    chat = Chat(stack)
    first = chat.say("I want to talk to a human")
    assert "human agent" in first or "colleague" in first
    for text in ["/request_human"] * 3 + ["I want to talk to a human"] * 3:
        reply = chat.say(text)
        assert reply, text
    assert handoff_count(stack, chat.sender) == 1
    assert "already" in "\n".join(chat.replies[1:]) or "Our human agents" in first


def test_handoffs_per_sender_are_rate_limited(stack) -> None:
    chat = Chat(stack)
    for _ in range(3):  # the limit (CRM_HANDOFF_SENDER_LIMIT, default 3) per hour
        chat.say("I want to talk to a human")
        with stack.factory.begin() as session:  # an agent resolves each one
            for handoff in session.execute(
                select(Handoff)
                .join(Conversation, Conversation.id == Handoff.conversation_id)
                .where(Conversation.tracker_key == f"rest:{chat.sender}")
            ).scalars():
                handoff.status = "resolved"
    refused = chat.say("I want to talk to a human")
    assert "can't pass on more requests" in refused
    assert handoff_count(stack, chat.sender) == 3


def test_fresh_senders_get_one_handoff_each(stack) -> None:
    chats = [Chat(stack) for _ in range(4)]
    for _ in range(3):
        for chat in chats:
            chat.say("I want to talk to a human")
    assert [handoff_count(stack, chat.sender) for chat in chats] == [1, 1, 1, 1]


# --- payload messages ----------------------------------------------------------


def second_order(stack: Any, order: Order, number: str) -> str:
    """Give ``order``'s customer another cancellable order (the fixture has none)."""
    with stack.factory.begin() as session:
        session.add(
            Order(
                id=number,
                customer_id=order.customer_id,
                placed_at=utcnow(),
                status="placed",
                subtotal=Decimal("20.00"),
                shipping_fee=Decimal("4.95"),
                total=Decimal("24.95"),
                currency="EUR",
                delivery_postcode=order.delivery_postcode,
            )
        )
    return number


def test_payload_at_a_cancel_confirmation_cancels_nothing_else(stack) -> None:
    first, second = (
        pick_order(stack, Order.status == "paid", offset=n) for n in (5, 6)
    )
    sibling = second_order(stack, first, "A19901")
    placed = [pick_order(stack, Order.status == "placed", offset=n) for n in (4, 5, 6)]
    theirs = next(o for o in placed if o.customer_id != second.customer_id).id
    for mine, target in ((first, sibling), (second, theirs)):
        chat = Chat(stack)
        chat.say(f"I want to cancel order {mine.id}")
        postcode = mine.delivery_postcode or mine.customer.postcode
        answers = stack.send(chat.sender, postcode, None)
        assert "/affirm" in payloads(answers), answers
        reply = chat.say(f'/affirm{{"order_number":"{target}"}}')
        assert target not in reply
        with stack.factory() as session:
            assert session.get(Order, target).status == "placed", target
            assert session.get(Order, mine.id).status in ("paid", "cancelled")


@pytest.mark.parametrize(
    "text",
    [
        '/check_order_status{"order_number": {}}',
        '/check_order_status{"order_number": [1, 2], "postcode": 1234}',
        '/inform{"postcode": {"$gt": ""}}',
        '/affirm{"order_number": null}',
        "/restart",
        "/session_start",
        "/",
    ],
)
def test_malformed_payloads_get_an_answer(stack, text: str) -> None:
    chat = Chat(stack)
    chat.say("hi")
    answers = stack.send(chat.sender, text)  # raises on HTTP 5xx
    assert [a for a in answers if a.get("text")], answers
    assert chat.say("how much is shipping?")  # the conversation still works


# --- identity assertions -------------------------------------------------------


def first_name(stack: Any, customer_id: str) -> str:
    with stack.factory() as session:
        return session.get(Customer, customer_id).first_name


def test_expired_assertion_is_refused(stack) -> None:
    sender = f"e2e-abuse-{uuid.uuid4().hex[:12]}"
    email = email_of(stack, "C0003")
    stale = metadata_for(
        stack.identity_secret, sender, "email", email, now=time.time() - 400
    )
    reply = "\n".join(stack.texts(sender, "hi there", stale))
    assert first_name(stack, "C0003") not in reply
    fresh = metadata_for(stack.identity_secret, sender, "email", email)
    assert first_name(stack, "C0003") in "\n".join(stack.texts(sender, "hi", fresh))


def greet_call(sender: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """An action-server call as Rasa makes it: greet an unverified sender."""
    message = {
        "intent": {"name": "greet", "confidence": 0.99},
        "entities": [],
        "text": "hi",
        "metadata": metadata,
    }
    return {
        "next_action": "action_greet",
        "sender_id": f"rest:{sender}",
        "version": "3.6.21",
        "domain": {},
        "tracker": {
            "sender_id": f"rest:{sender}",
            "slots": {},
            "latest_message": message,
            "events": [
                {"event": "action", "name": "action_listen"},
                {"event": "user", "text": "hi", "parse_data": message},
            ],
            "paused": False,
            "followup_action": None,
            "active_loop": {},
            "latest_action_name": "action_listen",
        },
    }


def test_replayed_assertion_is_refused(stack) -> None:
    """The same assertion verifies once; sent again (e.g. in a new session) never."""
    sender = f"e2e-abuse-{uuid.uuid4().hex[:12]}"
    meta = metadata_for(
        stack.identity_secret, sender, "email", email_of(stack, "C0004")
    )
    name = first_name(stack, "C0004")
    assert name in "\n".join(stack.texts(sender, "hi", meta))
    with stack.factory() as session:
        assert session.get(UsedNonce, meta["identity"]["nonce"]) is not None
    # Rasa's tracker for the sender is verified now, so replay the same call to
    # the action server directly, as a fresh (unverified) session would send it.
    headers = {"Authorization": f"Bearer {stack.processes.action_token}"}
    answer = requests.post(
        stack.action_url,
        json=greet_call(sender, meta),
        headers=headers,
        timeout=30,
    )
    answer.raise_for_status()
    result = answer.json()
    verified = [e for e in result["events"] if e.get("name") == "verified"]
    assert verified == []
    assert [r.get("response") for r in result["responses"]] == ["utter_greet"]
    # A new assertion for the same sender still works.
    again = metadata_for(
        stack.identity_secret, sender, "email", email_of(stack, "C0004")
    )
    answer = requests.post(
        stack.action_url,
        json=greet_call(sender, again),
        headers=headers,
        timeout=30,
    )
    assert any(e.get("name") == "verified" for e in answer.json()["events"])
