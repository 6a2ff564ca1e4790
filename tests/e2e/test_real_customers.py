"""What real customers type, over the REST webhook against real Rasa + action servers.

Order numbers and postcodes in every form, forms that change course instead of
looping, profile questions, complaints answered like a person would, and
requests that carry their own details. Expected facts come from the store.
"""

from __future__ import annotations

import pytest
from dialogue_support import (
    Chat,
    conversation_of,
    email_of,
    handoff_of,
    pick_order,
    returnable_orders,
)
from sqlalchemy import select

from crm_store.models import Customer, Interaction, Order, Ticket

pytestmark = pytest.mark.slow

NOT_UNDERSTOOD = ("doesn't look like an order number", "rephrase", "didn't get that")
SPOKEN = "zero one two three four five six seven eight nine".split()


def by_email(stack, customer_id: str) -> tuple[str, str]:
    return ("email", email_of(stack, customer_id))


def spelled(digits: str) -> str:
    return " ".join(SPOKEN[int(d)] for d in digits)


def complaints_of(stack, sender: str) -> list[Interaction]:
    conversation = conversation_of(stack, sender)
    assert conversation is not None
    with stack.factory() as session:
        rows = list(
            session.execute(
                select(Interaction).where(
                    Interaction.conversation_id == conversation.id,
                    Interaction.intent == "complain",
                    Interaction.author == "system",
                )
            ).scalars()
        )
        session.expunge_all()
        return rows


# --- order numbers and postcodes in every form -------------------------------------


@pytest.mark.parametrize(
    ("ask", "postcode"),
    [
        ("where is my order {digits}", "{pc_squashed}"),
        ("status of {lower} pls", "{pc_lower}"),
        ("hi, order no. {digits} hasn't arrived yet", "my postcode is {pc}"),
        ("can you track #{digits} for me", "{pc_dashed}"),
        ("where's order a-{digits}?", "{pc}"),
    ],
)
def test_order_numbers_and_postcodes_as_people_type_them(stack, ask, postcode) -> None:
    order = pick_order(stack, Order.status == "shipped")
    pc = order.customer.postcode
    facts = {
        "digits": order.id[1:],
        "lower": order.id.lower(),
        "pc": pc,
        "pc_squashed": pc.replace(" ", "").lower(),
        "pc_lower": pc.lower(),
        "pc_dashed": pc.replace(" ", "-"),
    }
    chat = Chat(stack)
    first = chat.say(ask.format(**facts))
    assert "postcode" in first, first
    assert not any(bad in first for bad in NOT_UNDERSTOOD), first
    reply = chat.say(postcode.format(**facts))
    assert order.tracking_number in reply, reply
    chat.assert_history()
    assert conversation_of(stack, chat.sender).customer_id == order.customer_id


def test_spelled_order_number_as_a_voice_channel_sends_it(stack) -> None:
    order = pick_order(stack, Order.status == "delivered", offset=2)
    chat = Chat(stack)
    ask = chat.say("where is my parcel")
    assert "order number" in ask
    reply = chat.say(spelled(order.id[1:]))
    assert "postcode" in reply and "doesn't look like" not in reply
    digits, letters = order.customer.postcode.split()
    done = chat.say(f"{spelled(digits)} {' '.join(letters)}")
    assert order.id in done and "delivered" in done, done
    chat.assert_history()


# --- a form changes course instead of looping --------------------------------------


def test_invalid_answers_hint_then_example_then_person(stack) -> None:
    chat = Chat(stack)
    chat.say("I want to check my order status")
    first = chat.say("it's somewhere in my mailbox")
    second = chat.say("the blue one from last month")
    third = chat.say("hmm")
    assert "A12345" in first
    assert "confirmation e-mail" in second and second != first
    assert "person" in third and "stop" in third
    handed = chat.say("yes")
    assert "human agent" in handed or "colleague" in handed
    handoff = handoff_of(stack, chat.sender)
    assert handoff is not None and handoff.reason == "form_stuck"
    chat.assert_history()


def test_stuck_form_can_be_stopped(stack) -> None:
    customer_id = pick_order(stack, Order.status == "delivered", offset=9).customer_id
    chat = Chat(stack, identity=by_email(stack, customer_id))
    assert "ticket number" in chat.say("what's the status of my ticket")
    for answer in ("somewhere in my inbox", "the one from last week", "??"):
        last = chat.say(answer)
    assert "person" in last and "stop" in last
    stopped = chat.say("stop")
    assert "stopped" in stopped
    assert handoff_of(stack, chat.sender) is None
    chat.assert_history()


# --- profile questions --------------------------------------------------------------


@pytest.mark.parametrize(
    "question",
    [
        "what's the address you have on file for me?",
        "which email do you have for me",
        "is my phone number still right?",
    ],
)
def test_profile_questions_show_masked_details(stack, question) -> None:
    customer_id = pick_order(stack, Order.status == "delivered", offset=4).customer_id
    with stack.factory() as session:
        customer = session.get(Customer, customer_id)
        email, phone, postcode = customer.email, customer.phone, customer.postcode
    chat = Chat(stack, identity=by_email(stack, customer_id))
    reply = chat.say(question)
    assert "on file" in reply, reply
    assert email.split("@")[1] in reply and email not in reply
    assert phone[-4:] in reply and phone not in reply
    assert postcode.split()[0] in reply and postcode not in reply
    assert "change" in reply
    chat.assert_history()


def test_profile_question_needs_verification_first(stack) -> None:
    order = pick_order(stack, Order.status == "delivered", offset=6)
    chat = Chat(stack)
    first = chat.say("what contact details do you have for me?")
    assert "order number" in first and "@" not in first
    chat.say(order.id)
    shown = chat.say(order.customer.postcode)
    assert order.customer.email.split("@")[1] in shown
    chat.assert_history()


# --- complaints ---------------------------------------------------------------------


def test_angry_late_parcel_gets_an_apology_a_person_and_a_record(stack) -> None:
    chat = Chat(stack)
    angry = "I'm furious, my parcel is two weeks late and nobody helps me!"
    first = chat.say(angry)
    assert "sorry" in first.lower() and "taking so long" in first
    assert "person" in first
    assert "Happy to help" not in first
    second = chat.say(angry)
    assert "sorry" in second.lower() and second != first
    third = chat.say(angry)
    assert "colleague can take over right now" in third and third != second
    [record] = complaints_of(stack, chat.sender)
    assert record.meta["problem"] == "late_delivery"
    handed = chat.say("/request_human")
    assert "human agent" in handed or "colleague" in handed
    assert handoff_of(stack, chat.sender).reason == "complaint"
    chat.assert_history()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("this is the worst service ever, I want to make a complaint", ["sorry"]),
        ("nobody ever answers my emails, this is ridiculous!!", ["sorry"]),
        ("the courier was incredibly rude to me", ["sorry", "treated"]),
    ],
)
def test_complaints_without_a_task(stack, text, words) -> None:
    chat = Chat(stack)
    reply = chat.say(text)
    assert all(w in reply.lower() for w in words), reply
    assert "colleague" in reply or "person" in reply
    assert complaints_of(stack, chat.sender)
    handed = chat.say("yes please")
    assert "human agent" in handed or "colleague" in handed
    assert handoff_of(stack, chat.sender).reason == "complaint"
    chat.assert_history()


def test_calm_customer_gets_no_apology(stack) -> None:
    order = pick_order(stack, Order.status == "delivered", offset=8)
    chat = Chat(stack, identity=by_email(stack, order.customer_id))
    reply = chat.say(f"hi, could you tell me the status of order {order.id}?")
    assert "sorry" not in reply.lower() and order.id in reply
    chat.assert_history()
    assert not complaints_of(stack, chat.sender)


# --- the request carries its own details -------------------------------------------


def test_return_with_reason_in_one_message(stack) -> None:
    order = returnable_orders(stack, window=30)[2]
    chat = Chat(stack, identity=by_email(stack, order.customer_id))
    done = chat.say(f"I want to return order {order.id}, it doesn't fit")
    assert "reason" not in done.lower(), done
    with stack.factory() as session:
        ticket = session.execute(
            select(Ticket).where(Ticket.order_id == order.id, Ticket.kind == "return")
        ).scalar_one()
    assert ticket.rma_number in done
    assert "doesn't fit" in (ticket.description or "") + (ticket.subject or "")
    chat.assert_history()


def test_damage_with_description_in_one_message(stack) -> None:
    order = returnable_orders(stack, window=30)[3]
    chat = Chat(stack, identity=by_email(stack, order.customer_id))
    done = chat.say(
        f"the lamp in order {order.id.lower()} arrived broken, the glass is cracked"
    )
    assert "describe" not in done.lower(), done
    with stack.factory() as session:
        ticket = session.execute(
            select(Ticket).where(Ticket.order_id == order.id, Ticket.kind == "damage")
        ).scalar_one()
    assert "glass is cracked" in (ticket.description or "")
    assert ticket.number in done
    chat.assert_history()


def test_order_and_postcode_in_one_answer(stack) -> None:
    order = pick_order(stack, Order.status == "shipped")
    chat = Chat(stack)
    chat.say("where is my order?")
    reply = chat.say(f"{order.id} {order.customer.postcode}")
    assert order.tracking_number in reply, reply
    chat.assert_history()
