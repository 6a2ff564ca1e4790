"""Verification: nothing personal for unverified senders; lockout after 5 misses."""

from __future__ import annotations

import uuid

import pytest
from dialogue_support import Chat, pick_order
from sqlalchemy import select

from crm_store.models import Customer, Handoff, Order

pytestmark = pytest.mark.slow


def personal_facts(order: Order) -> list[str]:
    facts = [order.customer.postcode, order.customer.email, order.customer.last_name]
    facts += [order.tracking_number or "", order.carrier or "", str(order.total)]
    return [f for f in facts if f]


def test_someone_elses_order_gets_the_same_answer_as_a_missing_one(stack) -> None:
    order = pick_order(stack, Order.status == "shipped", offset=5)
    wrong_postcode = "1111 ZZ" if order.customer.postcode != "1111 ZZ" else "2222 YY"

    def attempt(number: str) -> list[str]:
        chat = Chat(stack)
        replies = [chat.say(f"where is my order {number}?"), chat.say(wrong_postcode)]
        chat.assert_history()
        return [r.replace(number, "<order>") for r in replies]

    theirs = attempt(order.id)
    # A number no order has (the demo orders end at A18008); fresh per run, so
    # earlier runs on a shared store cannot have locked it.
    missing = attempt(f"A9{uuid.uuid4().int % 10000:04d}")
    assert theirs == missing
    for fact in personal_facts(order):
        assert all(fact not in reply for reply in theirs), fact


def test_five_wrong_postcodes_lock_the_order_and_offer_a_human(stack) -> None:
    order = pick_order(stack, Order.status == "shipped", offset=6)
    chat = Chat(stack)
    chat.say(f"track order {order.id}")
    for postcode in ("9999 XX", "9998 XX", "9996 XX"):
        chat.say(postcode)
    fourth = chat.say("9995 XX")
    assert "1 attempt" in fourth
    locked = chat.say("9997 XX")
    assert "can't verify" in locked and "paused" in locked
    assert "human agent" in locked
    # Even the right postcode no longer works for this order, in this
    # conversation or any other (the lock is in the store).
    chat.say(f"where is my order {order.id}?")
    again = chat.say(order.customer.postcode)
    assert order.tracking_number not in again
    fresh = Chat(stack)
    paused = fresh.say(f"where is my order {order.id}?")
    assert "paused" in paused and "human agent" in paused
    fresh.say(order.customer.postcode)
    for fact in personal_facts(order):
        assert all(fact not in reply for reply in fresh.replies), fact
    for fact in personal_facts(order):
        assert all(fact not in reply for reply in chat.replies), fact
    chat.assert_history()


def test_lockout_then_accept_the_human(stack) -> None:
    order = pick_order(stack, Order.status == "delivered", offset=21)
    chat = Chat(stack)
    chat.say(f"status of {order.id}")
    for postcode in ("1000 AA", "1000 AB", "1000 AC", "1000 AD", "1000 AE"):
        reply = chat.say(postcode)
    assert "human agent" in reply and "paused" in reply
    handed = chat.say("yes please")
    assert "human agent" in handed or "colleague" in handed
    with stack.factory() as session:
        handoff = session.execute(
            select(Handoff).where(
                Handoff.packet["tracker_key"].as_string() == f"rest:{chat.sender}"
            )
        ).scalar_one()
    assert handoff.reason == "verification_failed" and handoff.customer_id is None
    chat.assert_history()


def order_ids(stack, customer_id: str) -> list[str]:
    with stack.factory() as session:
        return list(
            session.execute(select(Order.id).where(Order.customer_id == customer_id))
            .scalars()
            .all()
        )


def test_forged_identity_is_not_trusted(stack) -> None:
    with stack.factory() as session:
        email = session.get(Customer, "C0001").email
    chat = Chat(stack)
    forged = {"identity": {"kind": "email", "value": email, "sig": "00" * 32}}
    answers = stack.send(chat.sender, "show my orders", forged)
    text = " ".join(a.get("text", "") for a in answers)
    assert "verify" in text
    assert not any(number in text for number in order_ids(stack, "C0001"))


def test_identity_signed_for_another_sender_is_not_trusted(stack) -> None:
    with stack.factory() as session:
        email = session.get(Customer, "C0001").email
    victim = Chat(stack, identity=("email", email))
    attacker = Chat(stack)
    stolen = victim.metadata()
    answers = stack.send(attacker.sender, "show my orders", stolen)
    text = " ".join(a.get("text", "") for a in answers)
    assert "verify" in text
    assert not any(number in text for number in order_ids(stack, "C0001"))


def test_unregistered_identity_is_not_verified(stack) -> None:
    chat = Chat(stack, identity=("email", "nobody-here@example.net"))
    reply = chat.say("list my orders")
    assert "verify" in reply
    chat.assert_history()


def test_server_logs_hold_no_personal_data(stack) -> None:
    """What a customer types (postcode, e-mail, free text) never reaches the logs."""
    order = pick_order(stack, Order.status == "shipped", offset=9)
    marker = "zq" + stack.identity_secret[:10]
    chat = Chat(stack)
    chat.say(f"where is my order {order.id}?")
    chat.say(order.customer.postcode)
    chat.say(f"my email is {marker}@example.org and my name is Ada {marker}")
    chat.say("bye")
    chat.assert_history()  # the broker wrote the turns, so the server has run them
    for log in ("rasa.log", "actions.log"):
        text = (stack.workdir / log).read_text(errors="replace")
        assert marker not in text, f"{log} holds message text"
        assert order.customer.postcode not in text, f"{log} holds a postcode"
