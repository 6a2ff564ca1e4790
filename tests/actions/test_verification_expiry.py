"""Verification expires after idle time and at session start; slots only we set.

Expiry is tested on trackers with fake timestamps (the e2e stack cannot change
``CRM_VERIFICATION_IDLE_MINUTES`` per test). Session start and slot filling run
Rasa's own default actions on the real domain.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from action_support import (
    DOMAIN,
    responses,
    run,
    signed,
    slots_of,
    tracker,
    user_event,
    verified,
)
from sqlalchemy.orm import sessionmaker

from actions.common import (
    IDENTITY_SLOTS,
    is_verified,
    last_activity,
    verification_expired,
    verified_customer_id,
)
from actions.verification import (
    ActionAskOrderNumber,
    ActionCheckTask,
    ActionGreet,
    ActionStartTask,
    ValidateVerifyForm,
)
from crm_settings import get_settings
from crm_store.models import Customer

ROOT = Path(__file__).resolve().parents[2]
MINUTE = 60.0


def said_at(intent: str, at: float) -> dict:
    """A past user message sent at unix time ``at``."""
    return {**user_event(intent), "timestamp": at}


def idle() -> float:
    return get_settings().verification_idle_minutes * MINUTE


def test_fresh_verification_holds(store: sessionmaker) -> None:
    t = tracker(slots=verified("C0001"))
    assert is_verified(t) and verified_customer_id(t) == "C0001"


def test_idle_since_verifying_expires(store: sessionmaker) -> None:
    now = time.time()
    proof = now - idle() - 1
    t = tracker(slots=verified("C0001", verified_at=proof))
    assert last_activity(t) == proof
    assert verification_expired(t, now=now)
    assert not is_verified(t, now=now) and verified_customer_id(t) is None
    # Just inside the idle period it still holds.
    assert is_verified(t, now=proof + idle() - 1)


def test_activity_keeps_a_verification_alive_and_idleness_ends_it(
    store: sessionmaker,
) -> None:
    now = time.time()
    proof = now - 3 * idle()
    chatty = [said_at("greet", proof + k * idle() * 0.9) for k in range(4)]
    t = tracker(slots=verified("C0001", verified_at=proof), history=chatty)
    assert last_activity(t) == proof + 3 * idle() * 0.9
    assert is_verified(t, now=now)
    quiet = [said_at("greet", proof), said_at("thanks", now - idle() - 5)]
    t = tracker(slots=verified("C0001", verified_at=proof), history=quiet)
    assert not is_verified(t, now=now)


def test_the_current_message_does_not_count_as_activity(store: sessionmaker) -> None:
    now = time.time()
    t = tracker(slots=verified("C0001", verified_at=now - idle() - 60))
    # The current message (the tracker's last user event) arrives now.
    t.events[-1]["timestamp"] = now
    assert not is_verified(t, now=now)


@pytest.mark.parametrize("stamp", [None, "yesterday", True, {}])
def test_a_verification_without_a_proof_time_is_not_trusted(
    store: sessionmaker, stamp: object
) -> None:
    t = tracker(slots=verified("C0001", verified_at=stamp))
    assert not is_verified(t)


def test_verified_must_be_true_itself(store: sessionmaker) -> None:
    for value in ("yes", 1, "true"):
        t = tracker(slots=verified("C0001", verified=value))
        assert not is_verified(t)


def expired_slots(**more: object) -> dict:
    return verified("C0001", verified_at=time.time() - idle() - 60, **more)


def test_start_task_asks_again_and_clears_an_expired_identity(
    store: sessionmaker,
) -> None:
    t = tracker(slots=expired_slots(), intent="list_orders", text="my orders")
    events, messages = run(ActionStartTask(), t)
    slots = slots_of(events)
    assert {name: slots[name] for name in IDENTITY_SLOTS} == {
        "customer_id": None,
        "verified": False,
        "verified_at": None,
        "verification_method": None,
    }
    assert responses(messages) == ["utter_need_verification"]


def test_expired_sender_is_greeted_plainly_and_asked_for_order_and_postcode(
    store: sessionmaker,
) -> None:
    events, messages = run(ActionGreet(), tracker(slots=expired_slots()))
    assert responses(messages) == ["utter_greet"]
    assert slots_of(events)["verified"] is False
    form = ValidateVerifyForm()
    t = tracker(slots=expired_slots(pending_task="cancel_order"))
    required = asyncio.run(form.required_slots([], None, t, DOMAIN))
    assert required == ["order_number", "postcode"]
    _, messages = run(ActionAskOrderNumber(), tracker(slots=expired_slots()))
    assert responses(messages) == ["utter_ask_order_number"]


def test_a_signed_identity_verifies_again_after_expiry(store: sessionmaker) -> None:
    with store() as session:
        email = session.get(Customer, "C0001").email
    t = tracker(
        slots=expired_slots(),
        intent="greet",
        sender="rest:s-expired",
        metadata=signed("rest:s-expired", "email", email),
    )
    events, messages = run(ActionGreet(), t)
    assert responses(messages) == ["utter_greet_known"]
    slots = slots_of(events)
    assert slots["verified"] is True and slots["customer_id"] == "C0001"
    assert abs(slots["verified_at"] - time.time()) < 60


def test_expired_sender_cannot_run_a_task(store: sessionmaker) -> None:
    events, messages = run(
        ActionCheckTask(),
        tracker(slots=expired_slots(pending_task="list_orders")),
    )
    assert slots_of(events)["task_ok"] is False
    assert messages == []


# --- Rasa side: session start and slot filling ------------------------------------


@pytest.fixture(scope="module")
def rasa_domain():
    from rasa.shared.core.domain import Domain

    return Domain.load(str(ROOT / "domain" / "domain.yml"))


def test_identity_slots_only_have_custom_mappings(rasa_domain) -> None:
    for name in IDENTITY_SLOTS:
        slot = rasa_domain.slots[[s.name for s in rasa_domain.slots].index(name)]
        assert slot.mappings == [{"type": "custom"}], name
        assert slot.influence_conversation is False


def test_a_new_session_starts_without_identity(rasa_domain) -> None:
    from rasa.core.actions.action import ActionSessionStart
    from rasa.core.channels import CollectingOutputChannel
    from rasa.core.nlg import TemplatedNaturalLanguageGenerator
    from rasa.shared.core.events import SlotSet
    from rasa.shared.core.trackers import DialogueStateTracker

    proof = verified("C0001", pending_task="list_orders")
    tracker_ = DialogueStateTracker.from_events(
        "s-session",
        [SlotSet(name, value) for name, value in proof.items()],
        slots=rasa_domain.slots,
    )
    assert tracker_.get_slot("verified") is True
    events = asyncio.run(
        ActionSessionStart().run(
            CollectingOutputChannel(),
            TemplatedNaturalLanguageGenerator(rasa_domain.responses),
            tracker_,
            rasa_domain,
        )
    )
    tracker_.update_with_events(events, rasa_domain)
    assert tracker_.get_slot("verified") is False
    for name in ("customer_id", "verified_at", "verification_method"):
        assert tracker_.get_slot(name) is None, name


def extract(rasa_domain, entities: list[dict], active_loop: str | None) -> dict:
    """Run Rasa's slot extraction on a message carrying ``entities``."""
    from rasa.core.actions.action import ActionExtractSlots
    from rasa.core.channels import CollectingOutputChannel
    from rasa.core.nlg import TemplatedNaturalLanguageGenerator
    from rasa.shared.core.events import ActiveLoop, UserUttered
    from rasa.shared.core.trackers import DialogueStateTracker

    events = [ActiveLoop(active_loop)] if active_loop else []
    events.append(
        UserUttered(
            "/inform",
            intent={"name": "inform", "confidence": 1.0},
            entities=entities,
        )
    )
    tracker_ = DialogueStateTracker.from_events(
        "s-extract", events, slots=rasa_domain.slots
    )
    found = asyncio.run(
        ActionExtractSlots(None).run(
            CollectingOutputChannel(),
            TemplatedNaturalLanguageGenerator(rasa_domain.responses),
            tracker_,
            rasa_domain,
        )
    )
    return {e.key: e.value for e in found}


def test_no_message_can_set_the_identity_slots(rasa_domain) -> None:
    entities = [
        {"entity": name, "value": value} for name, value in verified("C0001").items()
    ]
    for loop in (None, "verify_form"):
        slots = extract(rasa_domain, entities, loop)
        assert not set(slots) & set(IDENTITY_SLOTS), slots


def test_order_number_and_postcode_fill_only_inside_the_verify_form(
    rasa_domain,
) -> None:
    entities = [
        {"entity": "order_number", "value": "A10002"},
        {"entity": "postcode", "value": "1111 AA"},
    ]
    assert extract(rasa_domain, entities, None) == {}
    assert extract(rasa_domain, entities, "cancel_confirm_form") == {}
    assert extract(rasa_domain, entities, "verify_form") == {
        "order_number": "A10002",
        "postcode": "1111 AA",
    }
