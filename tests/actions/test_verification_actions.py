"""Greeting, task start, verification form, task check (trackers, seeded store)."""

from __future__ import annotations

import asyncio
import time

import pytest
from action_support import (
    DOMAIN,
    new_sender,
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
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from actions.common import TASK_SLOTS
from actions.verification import (
    ActionAskOrderNumber,
    ActionCheckTask,
    ActionGreet,
    ActionStartTask,
    ValidateVerifyForm,
)
from crm_store.models import Customer, Order, VerificationAttempt
from crm_store.services.orders import orders_for_customer
from crm_store.services.verification import client_key_for, record_attempt


def customer(store: sessionmaker, customer_id: str) -> Customer:
    with store() as session:
        return session.get(Customer, customer_id)


def proof_time(slots: dict) -> float:
    """Pop ``verified_at`` from the slots and check it is about now."""
    at = slots.pop("verified_at")
    assert isinstance(at, float) and abs(time.time() - at) < 60
    return at


# --- greeting ---------------------------------------------------------------------


def test_greet_by_name_with_a_signed_identity(store: sessionmaker) -> None:
    c0001 = customer(store, "C0001")
    t = tracker(
        intent="greet",
        sender="rest:s1",
        metadata=signed("rest:s1", "email", c0001.email),
    )
    events, messages = run(ActionGreet(), t)
    slots = slots_of(events)
    proof_time(slots)
    assert slots == {
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
        signed("rest:s1", "email", email, secret="not-the-secret-" + "x" * 32),
        signed("rest:other-sender", "email", email),
        signed("rest:s1", "email", "nobody@example.com"),
    ):
        events, messages = run(
            ActionGreet(), tracker(intent="greet", sender="rest:s1", metadata=metadata)
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
        sender="rest:s2",
        metadata=signed("rest:s2", "email", email),
    )
    events, messages = run(ActionStartTask(), t)
    slots = slots_of(events)
    proof_time(slots)
    assert slots == {
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


def verify(
    slots: dict,
    *,
    sender: str | None = None,
    metadata: dict | None = None,
    **candidates: object,
) -> tuple[dict, list[str], list[dict]]:
    t = tracker(
        slots=slots,
        candidates=candidates,
        form="verify_form",
        sender=sender,
        metadata=metadata,
    )
    events, messages = run(ValidateVerifyForm(), t)
    return slots_of(events), responses(messages), messages


def attempts(store: sessionmaker, **where: object) -> list[VerificationAttempt]:
    with store() as session:
        rows = session.execute(
            select(VerificationAttempt)
            .filter_by(**where)
            .order_by(VerificationAttempt.id)
        ).scalars()
        return list(rows)


def fail_in_store(store: sessionmaker, order_id: str, times: int, **kw) -> None:
    """Failed attempts by other senders, straight into the store."""
    with store.begin() as session:
        for _ in range(times):
            record_attempt(
                session,
                order_id=order_id,
                customer_id=kw.get("customer_id"),
                sender_key=kw.get("sender_key") or new_sender(),
                client_key=kw.get("client_key"),
                succeeded=False,
            )


def paused(order: str) -> dict:
    """The form's answer when checks pause: ends, offers a person or a code."""
    return {
        "order_number": None,
        "postcode": None,
        "requested_slot": None,
        "human_offered": True,
        "handoff_reason": "verification_failed",
        "login_order": order,
    }


def test_verify_form_takes_order_number_from_unverified_sender(
    store: sessionmaker,
) -> None:
    slots, said, _ = verify({}, order_number="it's #a10001")
    assert slots == {"order_number": "A10001"}
    assert said == []


def test_verify_form_rejects_a_malformed_order_number(store: sessionmaker) -> None:
    slots, said, _ = verify({}, order_number="order 123")
    assert slots == {"order_number": None, "invalid_answers": 1.0}
    assert said == ["utter_invalid_order_number"]


@pytest.mark.parametrize("value", [{}, 5, ["A10001"], {"id": "A10001"}, 1.5, True])
def test_entities_of_the_wrong_type_get_a_clear_answer(
    store: sessionmaker, value: object
) -> None:
    slots, said, _ = verify({}, order_number=value)
    assert slots == {"order_number": None, "invalid_answers": 1.0}
    assert said == ["utter_invalid_order_number"]
    slots, said, _ = verify({"order_number": "A10001"}, postcode=value)
    assert slots == {"postcode": None, "invalid_answers": 1.0}
    assert said == ["utter_invalid_postcode"]
    # Both at once (an /intent{json} message), as the form validates them.
    slots, said, _ = verify({}, order_number=value, postcode=value)
    assert slots["order_number"] is None and slots["postcode"] is None
    assert "verified" not in slots
    assert attempts(store) == []


def test_verify_form_refuses_an_order_locked_by_other_senders(
    store: sessionmaker,
) -> None:
    fail_in_store(store, "A10001", 5, customer_id="C0001")
    slots, said, messages = verify({}, order_number="A10001")
    assert said == ["utter_verification_locked"]
    assert slots == paused("A10001")
    assert "C0001" not in str(messages)


def test_a_locked_missing_order_gets_the_same_answer(store: sessionmaker) -> None:
    fail_in_store(store, "A99999", 5)
    slots, said, _ = verify({}, order_number="A99999")
    assert (slots, said) == (paused("A99999"), ["utter_verification_locked"])


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


def test_verified_sender_with_a_malformed_order_number_is_asked_again(
    store: sessionmaker,
) -> None:
    slots, said, _ = verify(
        verified("C0001", pending_task="cancel_order"), order_number={}
    )
    assert slots == {
        "order_number": None,
        "requested_slot": "order_number",
        "invalid_answers": 1.0,
    }
    assert said == ["utter_invalid_order_number"]


def test_order_number_validator_checks_ownership_for_verified_sender(
    store: sessionmaker,
) -> None:
    mine, owner = pick_order(store, Order.status == "delivered")
    theirs, _ = pick_order(store, Order.customer_id != owner)
    form = ValidateVerifyForm()
    t = tracker(slots=verified(owner, pending_task="cancel_order"))
    dispatcher = CollectingDispatcher()
    result = asyncio.run(form.validate_order_number(theirs, dispatcher, t, DOMAIN))
    assert result == {"order_number": None, "invalid_answers": 1.0}
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
    sender = new_sender()
    slots, said, _ = verify(
        {"order_number": "A10001"},
        sender=sender,
        postcode=postcode.replace(" ", "").lower(),
    )
    assert said == ["utter_verified"]
    proof_time(slots)
    assert slots == {
        "postcode": postcode,
        "customer_id": "C0001",
        "verified": True,
        "verification_method": "order_postcode",
        "requested_slot": None,
    }
    [row] = attempts(store, sender_key=sender)
    assert (row.order_id, row.customer_id, row.succeeded) == ("A10001", "C0001", True)


def test_the_orders_delivery_postcode_counts_not_the_current_one(
    store: sessionmaker,
) -> None:
    with store.begin() as session:
        order = session.get(Order, "A10001")
        current = order.customer.postcode
        order.delivery_postcode = "1011 AB"
    slots, said, _ = verify({"order_number": "A10001"}, postcode=current)
    assert said == ["utter_verification_failed"] and "verified" not in slots
    slots, said, _ = verify({"order_number": "A10001"}, postcode="1011ab")
    assert said == ["utter_verified"] and slots["customer_id"] == "C0001"


def test_verify_form_rejects_a_malformed_postcode(store: sessionmaker) -> None:
    slots, said, _ = verify({"order_number": "A10001"}, postcode="no idea")
    assert said == ["utter_invalid_postcode"]
    assert slots == {"postcode": None, "invalid_answers": 1.0}
    assert attempts(store) == []


def test_five_wrong_postcodes_from_fresh_senders_lock_the_order(
    store: sessionmaker,
) -> None:
    wrong = "9999 ZZ"
    right = customer(store, "C0001").postcode
    assert right != wrong
    for left in (4, 3, 2, 1):
        # A new sender id each time (tracker() makes one): nothing resets.
        slots, said, messages = verify({"order_number": "A10001"}, postcode=wrong)
        assert said == ["utter_verification_failed"]
        assert messages[0]["attempts_left"] == left
        assert slots == {"postcode": None}
    slots, said, _ = verify({"order_number": "A10001"}, postcode=wrong)
    assert (slots, said) == (paused("A10001"), ["utter_verification_locked"])
    # The right postcode from yet another sender proves nothing now.
    slots, said, messages = verify({"order_number": "A10001"}, postcode=right)
    assert (slots, said) == (paused("A10001"), ["utter_verification_locked"])
    assert "C0001" not in str(messages)
    rows = attempts(store, order_id="A10001")
    assert len(rows) == 6 and not any(r.succeeded for r in rows)
    assert len({r.sender_key for r in rows}) == 6
    # Another customer's order still verifies.
    slots, said, _ = verify(
        {"order_number": "A10002"}, postcode=customer(store, "C0002").postcode
    )
    assert said == ["utter_verified"] and slots["customer_id"] == "C0002"


def test_a_locked_customer_is_not_announced_and_not_verified(
    store: sessionmaker,
) -> None:
    with store() as session:
        orders = orders_for_customer(session, customer_id="C0002", limit=5)
    assert len(orders) >= 2
    target, *others = [o.id for o in orders]
    for number in others:
        fail_in_store(store, number, 10 // len(others) + 1, customer_id="C0002")
    slots, said, messages = verify(
        {"order_number": target}, postcode=customer(store, "C0002").postcode
    )
    # Answered like a wrong postcode: a "paused" reply would tell the order exists.
    assert said == ["utter_verification_failed"]
    assert messages[0]["attempts_left"] == 4
    assert slots == {"postcode": None}


def test_a_sender_is_limited_across_orders(store: sessionmaker) -> None:
    sender = new_sender()
    fail_in_store(store, "A99998", 10, sender_key=sender)
    slots, said, _ = verify({}, sender=sender, order_number="A10001")
    assert (slots, said) == (paused("A10001"), ["utter_verification_limited"])
    slots, said, _ = verify(
        {"order_number": "A10001"},
        sender=sender,
        postcode=customer(store, "C0001").postcode,
    )
    assert (slots, said) == (paused("A10001"), ["utter_verification_limited"])


def test_a_client_address_is_limited_across_senders(store: sessionmaker) -> None:
    ip = "203.0.113.77"
    fail_in_store(store, "A99997", 30, client_key=client_key_for(ip))
    slots, said, _ = verify({}, metadata={"client_ip": ip}, order_number="A10001")
    assert (slots, said) == (paused("A10001"), ["utter_verification_limited"])
    slots, said, _ = verify(
        {}, metadata={"client_ip": "203.0.113.78"}, order_number="A10001"
    )
    assert slots == {"order_number": "A10001"}
    # The address itself is never stored.
    assert all(r.client_key != ip for r in attempts(store))


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


def test_check_task_refuses_a_malformed_order_number(store: sessionmaker) -> None:
    for value in ({}, 5, ["A10001"], "nope"):
        events, said, _ = check(
            verified("C0001", pending_task="cancel_order", order_number=value)
        )
        assert_not_ok(events)
        assert said == ["utter_invalid_order_number"]


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
    assert slots_of(events) == {"task_ok": True, "confirmed_order": placed}
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
    assert slots_of(events) == {"task_ok": True, "confirmed_order": number}
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
    assert slots_of(events) == {"task_ok": True, "confirmed_order": recent}
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
