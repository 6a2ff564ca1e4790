"""Actions: every fact kept, forms that never loop, complaints, profile."""

from __future__ import annotations

from action_support import (
    pick_order,
    responses,
    run,
    slots_of,
    tracker,
    verified,
)
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from actions.account import ValidateContactUpdateForm
from actions.common import TASK_SLOTS
from actions.complaints import ActionComplaint
from actions.handoff import ActionFallback, ActionHandoff
from actions.profile import ActionShowContact
from actions.tickets import ValidateTicketStatusForm
from actions.verification import ActionStartTask, ValidateVerifyForm
from crm_store.models import Customer, Handoff, Interaction, Order


def complaints(store: sessionmaker) -> list[Interaction]:
    with store() as session:
        return list(
            session.execute(
                select(Interaction).where(Interaction.intent == "complain")
            ).scalars()
        )


# --- facts given up front ----------------------------------------------------------


def test_start_task_keeps_order_number_in_any_form_and_the_postcode(store) -> None:
    for text, order in [
        ("where is my order 15640", "A15640"),
        ("status of a16135 pls", "A16135"),
        ("order no. 10047 hasn't arrived", "A10047"),
        ("track A 10047 postcode 5500le", "A10047"),
    ]:
        events, _ = run(
            ActionStartTask(), tracker(intent="check_order_status", text=text)
        )
        slots = slots_of(events)
        assert slots["order_number"] == order, text
    assert slots["postcode"] == "5500 LE"


def test_start_task_keeps_the_detail_given_with_the_request(store) -> None:
    cases = [
        (
            "start_return",
            "I want to return order A10047, it doesn't fit",
            "return_reason",
            "it doesn't fit",
        ),
        (
            "start_return",
            "return 10088 because the colour is wrong",
            "return_reason",
            "the colour is wrong",
        ),
        (
            "report_damage",
            "the lamp in order a10021 arrived broken, the glass is cracked",
            "damage_description",
            "the glass is cracked",
        ),
        (
            "open_ticket",
            "please open a ticket: my discount code is refused at checkout",
            "ticket_description",
            "my discount code is refused at checkout",
        ),
    ]
    for intent, text, slot, detail in cases:
        events, _ = run(ActionStartTask(), tracker(intent=intent, text=text))
        assert slots_of(events)[slot] == detail, text
    for text in ["return order A10047, please", "I want to return A10047", "return it"]:
        events, _ = run(ActionStartTask(), tracker(intent="start_return", text=text))
        assert "return_reason" not in slots_of(events), text


def test_a_year_or_price_is_not_taken_for_a_postcode(store) -> None:
    events, _ = run(
        ActionStartTask(),
        tracker(intent="check_order_status", text="order A10047 from 2026 cost 1999"),
    )
    assert "postcode" not in slots_of(events)


def test_order_and_postcode_in_one_answer_verify_at_once(store) -> None:
    order, owner = pick_order(store, Order.status == "delivered")
    with store() as session:
        postcode = session.get(Order, order).delivery_postcode
    text = f"{order.lower()} {postcode.replace(' ', '').lower()}"
    t = tracker(
        text=text,
        intent="inform",
        candidates={"order_number": text},
        slots={"requested_slot": "order_number"},
        form="verify_form",
    )
    events, messages = run(ValidateVerifyForm(), t)
    slots = slots_of(events)
    assert slots["order_number"] == order
    assert slots["verified"] is True and slots["customer_id"] == owner
    assert "utter_verified" in responses(messages)


# --- forms never loop ----------------------------------------------------------------


def ask_order(count: float | None, text: str = "no idea") -> tuple[dict, list[str]]:
    slots = {"pending_task": "order_status", "requested_slot": "order_number"}
    if count is not None:
        slots["invalid_answers"] = count
    t = tracker(
        text=text, slots=slots, candidates={"order_number": text}, form="verify_form"
    )
    events, messages = run(ValidateVerifyForm(), t)
    return slots_of(events), responses(messages)


def test_hint_then_example_then_a_person_or_stop(store) -> None:
    slots, said = ask_order(None)
    assert said == ["utter_invalid_order_number"]
    assert slots == {"order_number": None, "invalid_answers": 1.0}
    slots, said = ask_order(1.0)
    assert said == ["utter_explain_order_number"]
    assert slots["invalid_answers"] == 2.0
    slots, said = ask_order(2.0)
    assert said == ["utter_form_stuck"]
    assert slots["requested_slot"] is None and slots["pending_task"] is None
    assert slots["human_offered"] is True and slots["handoff_reason"] == "form_stuck"
    assert all(slots[name] is None for name in TASK_SLOTS)


def test_a_valid_answer_resets_the_count(store) -> None:
    slots, said = ask_order(2.0, text="it's 10047")
    assert slots == {"order_number": "A10047", "invalid_answers": None}
    assert said == []


def test_every_free_text_form_gives_up_too(store) -> None:
    t = tracker(
        text="??",
        slots={"invalid_answers": 2.0, "requested_slot": "ticket_number"},
        candidates={"ticket_number": "??"},
        form="ticket_status_form",
    )
    events, messages = run(ValidateTicketStatusForm(), t)
    assert responses(messages) == ["utter_form_stuck"]
    assert slots_of(events)["requested_slot"] is None


def test_an_angry_answer_gets_an_apology_not_a_format_hint(store) -> None:
    slots, said = ask_order(None, text="I already told you, this is ridiculous!!")
    assert said == ["utter_complaint_bot", "utter_complaint_person_anytime"]
    assert slots["invalid_answers"] == 1.0 and slots["complaint"] == "bot"
    assert len(complaints(store)) == 1
    # Angry again: no repeat of the same words, the person offered outright.
    slots, said = ask_order(1.0, text="I already told you, this is ridiculous!!")
    assert said == ["utter_complaint_bot", "utter_complaint_person_now"]


# --- complaints ----------------------------------------------------------------------


ANGRY = "I'm furious, my parcel is two weeks late and nobody helps me!"


def test_angry_task_request_apologises_names_the_problem_and_goes_on(store) -> None:
    t = tracker(intent="check_order_status", text=ANGRY, sender="rest:angry")
    events, messages = run(ActionStartTask(), t)
    assert responses(messages) == [
        "utter_complaint_late_delivery",
        "utter_complaint_person_anytime",
        "utter_need_verification_quietly",
    ]
    slots = slots_of(events)
    assert slots["pending_task"] == "order_status"
    assert slots["complaint"] == "late_delivery"
    assert slots["handoff_reason"] == "complaint"
    [row] = complaints(store)
    assert row.meta["problem"] == "late_delivery" and row.author == "system"
    # The same complaint again: a shorter apology, recorded once.
    t = tracker(
        intent="check_order_status",
        text=ANGRY,
        sender="rest:angry",
        slots={"complaint": "late_delivery"},
    )
    _, messages = run(ActionStartTask(), t)
    assert responses(messages)[0] == "utter_complaint_again"
    assert len(complaints(store)) == 1


def test_a_calm_request_gets_no_apology(store) -> None:
    t = tracker(intent="check_order_status", text="where is my order A10047?")
    _, messages = run(ActionStartTask(), t)
    assert responses(messages) == ["utter_need_verification"]
    assert complaints(store) == []


def test_pure_complaint_offers_a_person_and_the_handoff_says_why(store) -> None:
    text = "worst service ever, you charged me twice"
    events, messages = run(
        ActionComplaint(), tracker(intent="complain", text=text, sender="rest:c1")
    )
    assert responses(messages) == [
        "utter_complaint_billing",
        "utter_complaint_offer_human",
    ]
    slots = slots_of(events)
    assert slots["human_offered"] is True
    events, _ = run(
        ActionHandoff(),
        tracker(intent="affirm", text="yes", sender="rest:c1", slots=slots),
    )
    with store() as session:
        [handoff] = session.execute(select(Handoff)).scalars().all()
    assert handoff.reason == "complaint"


def test_complaint_the_nlu_did_not_understand_is_still_answered(store) -> None:
    t = tracker(
        intent="nlu_fallback", text="nobody ever answers my e-mails, unacceptable"
    )
    _, messages = run(ActionFallback(), t)
    assert responses(messages) == [
        "utter_complaint_no_response",
        "utter_complaint_offer_human",
    ]


def test_intent_complain_without_lexicon_words_counts(store) -> None:
    t = tracker(intent="complain", text="I would like to speak about my experience")
    events, messages = run(ActionComplaint(), t)
    assert responses(messages)[0] == "utter_complaint_general"
    assert complaints(store)[0].meta["source"] == "intent"


# --- profile -------------------------------------------------------------------------


def test_verified_customer_sees_masked_contact_details(store) -> None:
    with store() as session:
        customer = session.get(Customer, "C0001")
        email, phone = customer.email, customer.phone
    events, messages = run(ActionShowContact(), tracker(slots=verified("C0001")))
    [message] = messages
    assert message["response"] == "utter_contact_on_file"
    assert message["email"] != email and message["email"].endswith(email.split("@")[1])
    assert message["phone"].endswith(phone[-4:]) and phone not in message["phone"]
    assert "*" in message["postcode"]
    assert slots_of(events)["task_resolved"] is True


def test_unverified_sender_sees_nothing(store) -> None:
    events, messages = run(ActionShowContact(), tracker(slots={}))
    assert messages == []


def test_words_starting_with_t_are_no_ticket_numbers(store) -> None:
    for text in ("the one from last week", "tickets", "that one"):
        t = tracker(
            text=text,
            slots={"requested_slot": "ticket_number"},
            candidates={"ticket_number": text},
            form="ticket_status_form",
        )
        events, messages = run(ValidateTicketStatusForm(), t)
        assert responses(messages) == ["utter_invalid_ticket_number"], text
    t = tracker(
        text="it's tabc234",
        candidates={"ticket_number": "it's tabc234"},
        form="ticket_status_form",
    )
    events, _ = run(ValidateTicketStatusForm(), t)
    assert slots_of(events)["ticket_number"] == "T-ABC234"


def test_one_message_counts_once_however_many_slots_it_filled_wrongly(store) -> None:
    # The NLU tagged "12" as the field and the whole text is the value.
    text = "my phone is 12"
    t = tracker(
        text=text,
        intent="inform",
        slots={**verified("C0001"), "requested_slot": "contact_value"},
        candidates={"contact_field": "12", "contact_value": text},
        form="contact_update_form",
    )
    events, messages = run(ValidateContactUpdateForm(), t)
    assert responses(messages) == ["utter_invalid_phone"]
    slots = slots_of(events)
    assert slots["contact_field"] == "phone" and slots["invalid_answers"] == 1.0


def test_the_new_address_answers_which_field_too(store) -> None:
    text = "new.c0001@example.org"
    t = tracker(
        text=text,
        slots={**verified("C0001"), "requested_slot": "contact_field"},
        candidates={"contact_field": text},
        form="contact_update_form",
    )
    events, messages = run(ValidateContactUpdateForm(), t)
    slots = slots_of(events)
    assert slots["contact_field"] == "email" and slots["contact_value"] == text
    assert messages == []
