"""Greeting, task start, verification form, task check (trackers, seeded store)."""

from __future__ import annotations

import asyncio

from action_support import (
    DOMAIN,
    order_with_return,
    pick_order,
    responses,
    run,
    signed,
    slots_of,
    tracker,
    verified,
)
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy.orm import sessionmaker

from actions.common import TASK_SLOTS
from actions.verification import (
    ActionAskOrderNumber,
    ActionCheckTask,
    ActionGreet,
    ActionStartTask,
    ValidateVerifyForm,
)
from crm_store.models import Customer, Order
from crm_store.services.orders import orders_for_customer


def customer(store: sessionmaker, customer_id: str) -> Customer:
    with store() as session:
        return session.get(Customer, customer_id)


# --- greeting ---------------------------------------------------------------------


def test_greet_by_name_with_a_signed_identity(store: sessionmaker) -> None:
    c0001 = customer(store, "C0001")
    t = tracker(
        intent="greet", sender="s1", metadata=signed("s1", "email", c0001.email)
    )
    events, messages = run(ActionGreet(), t)
    assert slots_of(events) == {
        "customer_id": "C0001",
        "verified": True,
        "verification_method": "identity:email",
    }
    assert responses(messages) == ["utter_greet_known"]
    assert messages[0]["name"] == c0001.first_name


def test_greet_by_name_when_verified_earlier(store: sessionmaker) -> None:
    events, messages = run(ActionGreet(), tracker(slots=verified("C0002")))
    assert events == []
    assert responses(messages) == ["utter_greet_known"]
    assert messages[0]["name"] == customer(store, "C0002").first_name


def test_greet_plainly_without_or_with_a_forged_or_unknown_identity(
    store: sessionmaker,
) -> None:
    email = customer(store, "C0001").email
    for metadata in (
        None,
        signed("s1", "email", email, secret="not-the-secret"),
        signed("other-sender", "email", email),
        signed("s1", "email", "nobody@example.com"),
    ):
        events, messages = run(
            ActionGreet(), tracker(intent="greet", sender="s1", metadata=metadata)
        )
        assert events == []
        assert responses(messages) == ["utter_greet"]


# --- task start -------------------------------------------------------------------


def test_start_task_asks_unverified_sender_to_verify(store: sessionmaker) -> None:
    t = tracker(intent="check_order_status", text="where is my order a10001?")
    events, messages = run(ActionStartTask(), t)
    assert slots_of(events) == {
        "pending_task": "order_status",
        "task_ok": None,
        "order_number": "A10001",
    }
    assert responses(messages) == ["utter_need_verification"]


def test_start_task_with_signed_identity_needs_no_verification(
    store: sessionmaker,
) -> None:
    email = customer(store, "C0001").email
    t = tracker(
        intent="ticket_status",
        text="what about T-ABC234",
        entities=[{"entity": "ticket_number", "value": "T-ABC234"}],
        sender="s2",
        metadata=signed("s2", "email", email),
    )
    events, messages = run(ActionStartTask(), t)
    assert slots_of(events) == {
        "pending_task": "ticket_status",
        "task_ok": None,
        "customer_id": "C0001",
        "verified": True,
        "verification_method": "identity:email",
    }
    assert messages == []


def test_start_task_reads_a_ticket_number_the_nlu_missed(store: sessionmaker) -> None:
    t = tracker(slots=verified("C0001"), intent="ticket_status", text="t-abc234 pls")
    events, messages = run(ActionStartTask(), t)
    assert slots_of(events)["ticket_number"] == "T-ABC234"
    assert slots_of(events)["pending_task"] == "ticket_status"
    assert messages == []


# --- verification form ------------------------------------------------------------


def verify(slots: dict, **candidates: object) -> tuple[dict, list[str], list[dict]]:
    t = tracker(slots=slots, candidates=candidates, form="verify_form")
    events, messages = run(ValidateVerifyForm(), t)
    return slots_of(events), responses(messages), messages


def test_verify_form_takes_order_number_from_unverified_sender(
    store: sessionmaker,
) -> None:
    slots, said, _ = verify({}, order_number="it's #a10001")
    assert slots == {"order_number": "A10001"}
    assert said == []


def test_verify_form_rejects_a_malformed_order_number(store: sessionmaker) -> None:
    slots, said, _ = verify({}, order_number="order 123")
    assert slots == {"order_number": None}
    assert said == ["utter_invalid_order_number"]


def test_verify_form_refuses_a_locked_order(store: sessionmaker) -> None:
    slots, said, _ = verify({"locked_orders": ["A10001"]}, order_number="A10001")
    assert said == ["utter_verification_locked"]
    assert slots["order_number"] is None and slots["postcode"] is None
    assert slots["human_offered"] is True
    assert slots["handoff_reason"] == "verification_failed"


def test_verify_form_for_verified_sender_ends_once_an_order_is_named(
    store: sessionmaker,
) -> None:
    # Rasa applies the candidates to the tracker's slots before validating, so
    # a verified sender who named an order needs nothing more from this form;
    # action_check_task then checks the order is theirs.
    slots, said, _ = verify(
        verified("C0001", pending_task="cancel_order"), order_number="A10002"
    )
    assert slots == {"requested_slot": None}
    assert said == []
    slots, said, _ = verify(verified("C0001", pending_task="open_ticket"))
    assert slots == {"requested_slot": None}


def test_order_number_validator_checks_ownership_for_verified_sender(
    store: sessionmaker,
) -> None:
    mine, owner = pick_order(store, Order.status == "delivered")
    theirs, _ = pick_order(store, Order.customer_id != owner)
    form = ValidateVerifyForm()
    t = tracker(slots=verified(owner, pending_task="cancel_order"))
    dispatcher = CollectingDispatcher()
    result = asyncio.run(form.validate_order_number(theirs, dispatcher, t, DOMAIN))
    assert result == {"order_number": None}
    assert responses(dispatcher.messages) == ["utter_order_not_found"]
    assert dispatcher.messages[0]["order"] == theirs
    dispatcher = CollectingDispatcher()
    result = asyncio.run(
        form.validate_order_number(mine.lower(), dispatcher, t, DOMAIN)
    )
    assert result == {"order_number": mine}
    assert dispatcher.messages == []


def test_verify_form_verifies_on_the_right_postcode(store: sessionmaker) -> None:
    postcode = customer(store, "C0001").postcode
    slots, said, _ = verify(
        {"order_number": "A10001"}, postcode=postcode.replace(" ", "").lower()
    )
    assert said == ["utter_verified"]
    assert slots == {
        "postcode": postcode,
        "customer_id": "C0001",
        "verified": True,
        "verification_method": "order_postcode",
        "requested_slot": None,
    }


def test_verify_form_rejects_a_malformed_postcode(store: sessionmaker) -> None:
    slots, said, _ = verify({"order_number": "A10001"}, postcode="no idea")
    assert said == ["utter_invalid_postcode"]
    assert slots == {"postcode": None}


def test_verify_form_locks_the_order_after_three_wrong_postcodes(
    store: sessionmaker,
) -> None:
    wrong = "9999 ZZ"
    assert customer(store, "C0001").postcode != wrong
    state: dict = {"order_number": "A10001"}
    for left in (2, 1):
        slots, said, messages = verify(state, postcode=wrong)
        assert said == ["utter_verification_failed"]
        assert messages[0]["attempts_left"] == left
        assert slots["postcode"] is None and "verified" not in slots
        state["postcode_failures"] = slots["postcode_failures"]
    slots, said, _ = verify(state, postcode=wrong)
    assert said == ["utter_verification_locked"]
    assert slots["locked_orders"] == ["A10001"]
    assert slots["postcode_failures"] == {"A10001": 3}
    assert "verified" not in slots


# --- task check -------------------------------------------------------------------


def assert_not_ok(events: list[dict]) -> None:
    slots = slots_of(events)
    assert slots["task_ok"] is False
    assert all(slots[name] is None for name in TASK_SLOTS)


def check(slots: dict) -> tuple[list[dict], list[str], list[dict]]:
    events, messages = run(ActionCheckTask(), tracker(slots=slots))
    return events, responses(messages), messages


def test_check_task_refuses_unverified_sender(store: sessionmaker) -> None:
    events, said, _ = check(
        {
            "pending_task": "cancel_order",
            "order_number": "A10001",
            "customer_id": "C0001",
        }
    )
    assert_not_ok(events)
    assert said == []


def test_check_task_passes_tasks_that_need_no_order(store: sessionmaker) -> None:
    events, said, _ = check(verified("C0001", pending_task="open_ticket"))
    assert events == [
        {"event": "slot", "timestamp": None, "name": "task_ok", "value": True}
    ]
    assert said == []


def test_check_task_cancel_summary_or_refusal(store: sessionmaker) -> None:
    placed, owner = pick_order(store, Order.status.in_(("placed", "paid")))
    events, said, messages = check(
        verified(owner, pending_task="cancel_order", order_number=placed)
    )
    assert slots_of(events) == {"task_ok": True}
    assert said == ["utter_cancel_summary"]
    assert messages[0]["order"] == placed and messages[0]["total"].endswith(" EUR")
    shipped, owner = pick_order(store, Order.status == "shipped")
    events, said, _ = check(
        verified(owner, pending_task="cancel_order", order_number=shipped)
    )
    assert_not_ok(events)
    assert said == ["utter_cannot_cancel_shipped"]


def test_check_task_someone_elses_order_is_not_found(store: sessionmaker) -> None:
    theirs, owner = pick_order(store, Order.status == "shipped")
    other = "C0001" if owner != "C0001" else "C0002"
    events, said, messages = check(
        verified(other, pending_task="start_return", order_number=theirs)
    )
    assert_not_ok(events)
    assert said == ["utter_order_not_found"]
    assert messages[0]["order"] == theirs


def test_check_task_return_eligibility(store: sessionmaker) -> None:
    number, owner, eligibility = order_with_return(store, eligible=True)
    events, said, messages = check(
        verified(owner, pending_task="start_return", order_number=number)
    )
    assert slots_of(events) == {"task_ok": True}
    assert said == ["utter_return_eligible"]
    assert messages[0]["window_days"] == eligibility.window_days
    number, owner, _ = order_with_return(store, eligible=False, reason="window_closed")
    events, said, _ = check(
        verified(owner, pending_task="start_return", order_number=number)
    )
    assert_not_ok(events)
    assert said == ["utter_return_window_closed"]


def test_check_task_damage_needs_a_delivery(store: sessionmaker) -> None:
    shipped, owner = pick_order(store, Order.status == "shipped")
    events, said, _ = check(
        verified(owner, pending_task="report_damage", order_number=shipped)
    )
    assert_not_ok(events)
    assert said == ["utter_damage_not_delivered"]
    recent, owner, _ = order_with_return(store, eligible=True)
    events, said, _ = check(
        verified(owner, pending_task="report_damage", order_number=recent)
    )
    assert slots_of(events) == {"task_ok": True}
    assert said == []


# --- asking for the order number --------------------------------------------------


def test_ask_order_number_lists_recent_orders_of_verified_sender(
    store: sessionmaker,
) -> None:
    with store() as session:
        recent = orders_for_customer(session, customer_id="C0002", limit=5)
    events, messages = run(ActionAskOrderNumber(), tracker(slots=verified("C0002")))
    assert events == []
    assert responses(messages) == ["utter_ask_order_number_known"]
    assert messages[0]["orders"] == ", ".join(f"{o.id} ({o.status})" for o in recent)


def test_ask_order_number_plainly_for_unverified_sender(store: sessionmaker) -> None:
    events, messages = run(
        ActionAskOrderNumber(), tracker(slots={"customer_id": "C0002"})
    )
    assert events == []
    assert responses(messages) == ["utter_ask_order_number"]
