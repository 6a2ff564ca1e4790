"""Step-up before changes, and changes only on the confirmed order (trackers)."""

from __future__ import annotations

import time

import pytest
from action_support import (
    pick_order,
    responses,
    run,
    signed,
    slots_of,
    tracker,
    verified,
)
from sqlalchemy.orm import sessionmaker

from actions.account import ActionStepUp
from actions.common import TASK_SLOTS, has_recent_strong_verification
from actions.orders import ActionAskConfirmCancel, ActionCancelOrder
from actions.returns import ActionAskReturnReason, ActionStartReturn
from crm_store.models import Customer, Order

OLD = time.time() - 16 * 60


def status(store: sessionmaker, number: str) -> str:
    with store() as session:
        return session.get(Order, number).status


def email_of(store: sessionmaker, customer_id: str) -> str:
    with store() as session:
        return session.get(Customer, customer_id).email


@pytest.mark.parametrize(
    ("slots", "strong"),
    [
        (verified("C0001"), True),
        (verified("C0001", method="identity:email"), True),
        (verified("C0001", method="identity:telegram"), True),
        (verified("C0001", method="identity:phone"), False),
        (verified("C0001", verified_at=OLD), False),
        (verified("C0001", verified_at="yesterday"), False),
        ({"customer_id": "C0001", "verification_method": "order_postcode"}, False),
    ],
)
def test_has_recent_strong_verification(store, slots, strong) -> None:
    assert has_recent_strong_verification(tracker(slots=slots)) is strong


@pytest.mark.parametrize("task", ["cancel_order", "start_return", "update_contact"])
@pytest.mark.parametrize(
    "slots",
    [verified("C0001", method="identity:phone"), verified("C0001", verified_at=OLD)],
)
def test_step_up_clears_weak_or_old_proof_before_a_change(store, task, slots) -> None:
    events, messages = run(
        ActionStepUp(),
        tracker(slots={**slots, "pending_task": task, "confirmed_order": "A1"}),
    )
    assert responses(messages) == ["utter_step_up"]
    set_ = slots_of(events)
    assert set_["verified"] is False and set_["verified_at"] is None
    assert set_["verification_method"] is None and set_["confirmed_order"] is None
    assert "customer_id" not in set_


@pytest.mark.parametrize(
    ("task", "slots"),
    [
        ("cancel_order", verified("C0001")),
        ("update_contact", verified("C0001", method="identity:email")),
        ("order_status", verified("C0001", method="identity:phone")),
        ("cancel_order", {"customer_id": None, "verified": False}),
    ],
)
def test_step_up_leaves_enough_proof_alone(store, task, slots) -> None:
    events, messages = run(
        ActionStepUp(), tracker(slots={**slots, "pending_task": task})
    )
    assert messages == []
    assert slots_of(events) == {"confirmed_order": None, "contact_code": None}


def test_step_up_accepts_a_fresh_signed_email_identity_in_the_message(store) -> None:
    sender = "rest:s-step-up"
    metadata = signed(sender, "email", email_of(store, "C0001"))
    t = tracker(
        slots={
            **verified("C0001", method="identity:phone"),
            "pending_task": "cancel_order",
        },
        metadata=metadata,
        sender=sender,
    )
    events, messages = run(ActionStepUp(), t)
    assert messages == []
    set_ = slots_of(events)
    assert set_["verification_method"] == "identity:email"
    assert set_["verified"] is True and set_["verified_at"] > time.time() - 60


# --- the confirmed order ----------------------------------------------------------


def test_confirmation_question_pins_the_order(store) -> None:
    events, messages = run(
        ActionAskConfirmCancel(), tracker(slots=verified("C0001", order_number="A1"))
    )
    assert responses(messages) == ["utter_ask_confirm_cancel"]
    assert messages[0]["order_number"] == "A1"
    assert slots_of(events) == {"confirmed_order": "A1"}
    # asked again after order_number changed: still about the pinned order
    events, messages = run(
        ActionAskConfirmCancel(),
        tracker(slots=verified("C0001", order_number="A2", confirmed_order="A1")),
    )
    assert messages[0]["order_number"] == "A1"
    assert slots_of(events) == {"confirmed_order": "A1"}
    events, messages = run(
        ActionAskReturnReason(), tracker(slots=verified("C0001", order_number="A3"))
    )
    assert responses(messages) == ["utter_ask_return_reason"]
    assert slots_of(events) == {"confirmed_order": "A3"}


def test_cancel_acts_only_on_the_confirmed_order(store) -> None:
    confirmed, owner = pick_order(store, Order.status.in_(("placed", "paid")))
    other, _ = pick_order(store, Order.status.in_(("placed", "paid")), offset=1)
    before = {o: status(store, o) for o in (confirmed, other)}
    for slots in (
        verified(owner, order_number=other, confirmed_order=confirmed),
        verified(owner, order_number=confirmed),  # nothing was confirmed
    ):
        events, messages = run(
            ActionCancelOrder(), tracker(slots={**slots, "confirm_cancel": True})
        )
        assert responses(messages) == ["utter_order_changed"]
        assert all(slots_of(events)[name] is None for name in TASK_SLOTS)
    assert {o: status(store, o) for o in before} == before


@pytest.mark.parametrize(
    "proof",
    [{"verification_method": "identity:phone"}, {"verified_at": OLD}],
)
def test_cancel_needs_a_strong_recent_verification(store, proof) -> None:
    number, owner = pick_order(store, Order.status.in_(("placed", "paid")))
    slots = verified(
        owner, order_number=number, confirmed_order=number, confirm_cancel=True
    )
    events, messages = run(ActionCancelOrder(), tracker(slots={**slots, **proof}))
    assert responses(messages) == ["utter_step_up_expired"]
    assert slots_of(events)["verified"] is False
    assert status(store, number) in ("placed", "paid")


def test_return_acts_only_on_the_order_asked_about(store) -> None:
    number, owner = pick_order(store, Order.status == "delivered")
    slots = verified(
        owner, order_number=number, confirmed_order="A00000", return_reason="size"
    )
    events, messages = run(ActionStartReturn(), tracker(slots=slots))
    assert responses(messages) == ["utter_order_changed"]
    events, messages = run(
        ActionStartReturn(),
        tracker(slots={**slots, "confirmed_order": number, "verified_at": OLD}),
    )
    assert responses(messages) == ["utter_step_up_expired"]
    assert status(store, number) == "delivered"
