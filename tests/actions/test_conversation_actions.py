"""Ending tasks, CSAT, handoff and the fallback ladder on trackers (seeded store)."""

from __future__ import annotations

from pathlib import Path

import pytest
from action_support import responses, run, slots_of, tracker, user_event, verified
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from actions.common import TASK_SLOTS
from actions.csat import ActionRecordCsat, ActionStopTask, ActionWrapUp
from actions.handoff import ActionFallback, ActionHandoff, ActionHumanDeclined
from crm_settings import get_settings
from crm_store.models import Conversation, Handoff, Ticket
from crm_store.services.handoff import agents_available


def assert_reset(events: list[dict]) -> None:
    slots = slots_of(events)
    assert all(slots[name] is None for name in TASK_SLOTS)


def test_stop_task(store) -> None:
    events, messages = run(ActionStopTask(), tracker(slots={"order_number": "A1"}))
    assert responses(messages) == ["utter_task_stopped"]
    assert_reset(events)
    assert "task_resolved" not in slots_of(events)


def test_wrap_up_asks_csat_once_after_a_resolved_task(store) -> None:
    events, messages = run(ActionWrapUp(), tracker(slots={"task_resolved": True}))
    assert responses(messages) == ["utter_ask_csat"]
    assert slots_of(events) == {"csat_asked": True}
    done = {"task_resolved": True, "csat_asked": True}
    events, messages = run(ActionWrapUp(), tracker(slots=done, intent="thanks"))
    assert (events, responses(messages)) == ([], ["utter_you_are_welcome"])
    events, messages = run(ActionWrapUp(), tracker(slots=done, intent="deny"))
    assert (events, responses(messages)) == ([], ["utter_ok_anything_else"])


def test_record_csat_on_the_conversation(store: sessionmaker) -> None:
    t = tracker(
        slots=verified("C0002"),
        intent="rate",
        text="I'd give it a 4",
        entities=[{"entity": "rating", "value": "4"}],
        sender="s-csat",
    )
    events, messages = run(ActionRecordCsat(), t)
    assert responses(messages) == ["utter_thanks_for_rating"]
    slots = slots_of(events)
    assert slots["csat_asked"] is True and slots["task_resolved"] is False
    assert_reset(events)
    with store() as session:
        conversation = session.get(Conversation, "s-csat")
        assert (conversation.csat, conversation.customer_id) == (4, "C0002")


def test_record_csat_asks_again_on_a_bad_rating(store: sessionmaker) -> None:
    t = tracker(intent="rate", text="eleven out of ten", sender="s-bad")
    events, messages = run(ActionRecordCsat(), t)
    assert responses(messages) == ["utter_ask_csat"]
    assert slots_of(events) == {"csat_asked": True}
    with store() as session:
        assert session.get(Conversation, "s-bad") is None


def test_csat_of_unverified_sender_is_anonymous(store: sessionmaker) -> None:
    t = tracker(slots={"customer_id": "C0002"}, intent="rate", text="5", sender="s-an")
    run(ActionRecordCsat(), t)
    with store() as session:
        conversation = session.get(Conversation, "s-an")
        assert (conversation.csat, conversation.customer_id) == (5, None)


# --- handoff ----------------------------------------------------------------------


def test_handoff_queues_the_conversation_with_a_packet(store: sessionmaker) -> None:
    history = [user_event("check_order_status", "where is my order")]
    t = tracker(
        slots=verified("C0002", handoff_reason="fallback"),
        intent="human_handoff",
        text="I want a human",
        history=history,
        sender="s-hand",
    )
    open_hours = agents_available()
    events, messages = run(ActionHandoff(), t)
    slots = slots_of(events)
    assert slots["escalated"] is True and slots["human_offered"] is False
    assert slots["handoff_reason"] is None
    assert_reset(events)
    with store() as session:
        [handoff] = session.execute(
            select(Handoff).where(Handoff.customer_id == "C0002")
        ).scalars()
        callbacks = session.execute(
            select(Ticket).where(
                Ticket.customer_id == "C0002", Ticket.kind == "callback"
            )
        ).scalars()
        callbacks = list(callbacks)
    assert handoff.reason == "fallback" and handoff.status == "waiting"
    assert handoff.packet["verified"] is True
    assert handoff.packet["last_intents"] == ["check_order_status", "human_handoff"]
    assert handoff.packet["channel"] == "chat"
    if open_hours:
        assert responses(messages) == ["utter_handoff_queued"]
        assert messages[0]["position"] == 1
        assert callbacks == []
    else:
        assert responses(messages) == ["utter_handoff_after_hours"]
        assert len(callbacks) == 1


def test_handoff_of_unverified_sender_carries_no_customer(store: sessionmaker) -> None:
    t = tracker(
        slots={"customer_id": "C0002", "handoff_reason": "made-up"},
        intent="human_handoff",
        sender="s-anon",
    )
    events, messages = run(ActionHandoff(), t)
    assert responses(messages) in (
        ["utter_handoff_queued"],
        ["utter_handoff_after_hours"],
    )
    with store() as session:
        handoff = session.execute(
            select(Handoff).where(Handoff.packet.isnot(None))
        ).scalars()
        mine = [h for h in handoff if h.packet.get("conversation_id") == "s-anon"]
    assert len(mine) == 1
    assert mine[0].customer_id is None and mine[0].reason == "other"
    assert mine[0].packet["verified"] is False


# --- fallback ladder --------------------------------------------------------------


def fallback_tracker(*intents: str, slots: dict | None = None):
    history = [user_event(i) for i in intents[:-1]]
    return tracker(slots=slots, intent=intents[-1], history=history)


def test_fallback_asks_to_rephrase_then_offers_a_human(store) -> None:
    events, messages = run(ActionFallback(), fallback_tracker("nlu_fallback"))
    assert (events, responses(messages)) == ([], ["utter_ask_rephrase"])
    events, messages = run(ActionFallback(), fallback_tracker("greet", "out_of_scope"))
    assert (events, responses(messages)) == ([], ["utter_out_of_scope"])
    events, messages = run(
        ActionFallback(), fallback_tracker("nlu_fallback", "nlu_fallback")
    )
    assert responses(messages) == ["utter_offer_human"]
    assert slots_of(events) == {"human_offered": True, "handoff_reason": "fallback"}


def test_fallback_limit_comes_from_the_treatment_rules(
    store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "treatment.yml"
    rules.write_text(
        "default:\n  offer_human_after_fallbacks: 1\n"
        "  goodwill_on_damage: null\n  handoff_priority_boost: 0\n"
        "rules: []\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("CRM_TREATMENT_RULES", str(rules))
    get_settings.cache_clear()
    events, messages = run(ActionFallback(), fallback_tracker("nlu_fallback"))
    assert responses(messages) == ["utter_offer_human"]


def test_fallback_survives_broken_treatment_rules(
    store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "treatment.yml"
    rules.write_text("default: [not, a, mapping]\n", encoding="utf-8")
    monkeypatch.setenv("CRM_TREATMENT_RULES", str(rules))
    get_settings.cache_clear()
    events, messages = run(ActionFallback(), fallback_tracker("nlu_fallback"))
    assert (events, responses(messages)) == ([], ["utter_ask_rephrase"])


def test_human_declined(store) -> None:
    events, messages = run(
        ActionHumanDeclined(), tracker(slots={"human_offered": True})
    )
    assert responses(messages) == ["utter_human_declined"]
    assert slots_of(events) == {"human_offered": False, "handoff_reason": None}
