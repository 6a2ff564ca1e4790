"""Ending tasks, CSAT, handoff and the fallback ladder on trackers (seeded store)."""

from __future__ import annotations

from pathlib import Path

import pytest
from action_support import (
    new_sender,
    responses,
    run,
    slots_of,
    tracker,
    user_event,
    verified,
)
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from actions.common import TASK_SLOTS
from actions.csat import ActionRecordCsat, ActionStopTask, ActionWrapUp
from actions.handoff import ActionFallback, ActionHandoff, ActionHumanDeclined
from crm_settings import get_settings
from crm_store.models import Conversation, Handoff, Interaction, Ticket
from crm_store.services.handoff import agents_available
from crm_store.services.history import latest_conversation


def assert_reset(events: list[dict]) -> None:
    slots = slots_of(events)
    assert all(slots[name] is None for name in TASK_SLOTS)


def test_stop_task(store) -> None:
    events, messages = run(ActionStopTask(), tracker(slots={"order_number": "A1"}))
    assert responses(messages) == ["utter_task_stopped"]
    assert_reset(events)
    assert "task_resolved" not in slots_of(events)


def conversation_of(store: sessionmaker, sender: str) -> Conversation | None:
    with store() as session:
        return latest_conversation(session, tracker_key=sender)


def csat_rows(store: sessionmaker, sender: str) -> list[Interaction]:
    with store() as session:
        return list(
            session.execute(
                select(Interaction)
                .join(Conversation, Conversation.id == Interaction.conversation_id)
                .where(Interaction.intent == "csat", Conversation.tracker_key == sender)
            ).scalars()
        )


def ask_csat(sender: str) -> None:
    events, messages = run(
        ActionWrapUp(), tracker(slots={"task_resolved": True}, sender=sender)
    )
    assert responses(messages) == ["utter_ask_csat"]


def test_wrap_up_asks_csat_once_after_a_resolved_task(store) -> None:
    sender = new_sender()
    events, messages = run(
        ActionWrapUp(), tracker(slots={"task_resolved": True}, sender=sender)
    )
    assert responses(messages) == ["utter_ask_csat"]
    assert slots_of(events) == {"csat_asked": True}
    assert conversation_of(store, sender).csat_requested_at is not None
    done = {"task_resolved": True, "csat_asked": True}
    events, messages = run(ActionWrapUp(), tracker(slots=done, intent="thanks"))
    assert (events, responses(messages)) == ([], ["utter_you_are_welcome"])
    events, messages = run(ActionWrapUp(), tracker(slots=done, intent="deny"))
    assert (events, responses(messages)) == ([], ["utter_ok_anything_else"])


def rate(sender: str, score: str, **slots: object) -> tuple[list, list]:
    t = tracker(
        slots=slots,
        intent="rate",
        text=f"I'd give it a {score}",
        entities=[{"entity": "rating", "value": score}],
        sender=sender,
    )
    return run(ActionRecordCsat(), t)


def test_record_csat_once_where_asked(store: sessionmaker) -> None:
    sender = new_sender()
    ask_csat(sender)
    events, messages = rate(sender, "4", **verified("C0002"), csat_asked=True)
    assert responses(messages) == ["utter_thanks_for_rating"]
    slots = slots_of(events)
    assert slots["csat_asked"] is True and slots["task_resolved"] is False
    assert_reset(events)
    for score in ("1", "5", "2"):
        events, messages = rate(sender, score, csat_asked=True)
        assert (events, responses(messages)) == ([], ["utter_csat_already_recorded"])
    conversation = conversation_of(store, sender)
    assert (conversation.csat, conversation.customer_id) == (4, "C0002")
    [row] = csat_rows(store, sender)
    assert row.meta["csat"] == 4 and row.conversation_id == conversation.id


def test_unrequested_rating_records_nothing(store: sessionmaker) -> None:
    sender = new_sender()
    events, messages = rate(sender, "1")
    assert (events, responses(messages)) == ([], ["utter_csat_not_requested"])
    assert conversation_of(store, sender) is None
    events, messages = run(
        ActionRecordCsat(), tracker(intent="rate", text="eleven", sender=sender)
    )
    assert (events, responses(messages)) == ([], ["utter_csat_not_requested"])
    # A conversation that exists but where the bot never asked.
    run(ActionHandoff(), tracker(intent="request_human", sender=sender))
    assert conversation_of(store, sender) is not None
    events, messages = rate(sender, "1", csat_asked=True)  # a forged slot
    assert (events, responses(messages)) == ([], ["utter_csat_not_requested"])
    assert conversation_of(store, sender).csat is None
    assert csat_rows(store, sender) == []


def test_record_csat_asks_again_on_a_bad_rating(store: sessionmaker) -> None:
    sender = new_sender()
    ask_csat(sender)
    t = tracker(
        intent="rate",
        text="eleven out of ten",
        sender=sender,
        slots={"csat_asked": True},
    )
    events, messages = run(ActionRecordCsat(), t)
    assert responses(messages) == ["utter_ask_csat"]
    assert slots_of(events) == {"csat_asked": True}
    events, messages = rate(sender, {}, csat_asked=True)  # type: ignore[arg-type]
    assert responses(messages) == ["utter_ask_csat"]
    assert conversation_of(store, sender).csat is None


def test_csat_of_unverified_sender_is_anonymous(store: sessionmaker) -> None:
    sender = new_sender()
    ask_csat(sender)
    t = tracker(slots={"customer_id": "C0002"}, intent="rate", text="5", sender=sender)
    run(ActionRecordCsat(), t)
    conversation = conversation_of(store, sender)
    assert (conversation.csat, conversation.customer_id) == (5, None)


# --- handoff ----------------------------------------------------------------------


def handoffs_of(store: sessionmaker, sender: str) -> list[Handoff]:
    with store() as session:
        return list(
            session.execute(
                select(Handoff)
                .join(Conversation, Conversation.id == Handoff.conversation_id)
                .where(Conversation.tracker_key == sender)
                .order_by(Handoff.id)
            ).scalars()
        )


def test_handoff_queues_the_conversation_with_a_packet(store: sessionmaker) -> None:
    history = [user_event("check_order_status", "where is my order")]
    sender = new_sender()
    t = tracker(
        slots=verified("C0002", handoff_reason="fallback"),
        intent="human_handoff",
        text="I want a human",
        history=history,
        sender=sender,
    )
    open_hours = agents_available()
    events, messages = run(ActionHandoff(), t)
    slots = slots_of(events)
    assert slots["escalated"] is True and slots["human_offered"] is False
    assert slots["handoff_reason"] is None
    assert_reset(events)
    [handoff] = handoffs_of(store, sender)
    with store() as session:
        callbacks = session.execute(
            select(Ticket).where(
                Ticket.customer_id == "C0002", Ticket.kind == "callback"
            )
        ).scalars()
        callbacks = list(callbacks)
    assert handoff.customer_id == "C0002"
    assert handoff.reason == "fallback" and handoff.status == "waiting"
    assert handoff.packet["verified"] is True
    assert handoff.packet["conversation_id"] == handoff.conversation_id
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
    sender = new_sender()
    t = tracker(
        slots={"customer_id": "C0002", "handoff_reason": "made-up"},
        intent="human_handoff",
        sender=sender,
    )
    events, messages = run(ActionHandoff(), t)
    assert responses(messages) in (
        ["utter_handoff_queued"],
        ["utter_handoff_after_hours"],
    )
    [mine] = handoffs_of(store, sender)
    assert mine.customer_id is None and mine.reason == "other"
    assert mine.packet["verified"] is False


def test_a_second_request_returns_the_waiting_one(store: sessionmaker) -> None:
    sender = new_sender()
    t = tracker(slots=verified("C0002"), intent="request_human", sender=sender)
    run(ActionHandoff(), t)
    for _ in range(3):
        events, messages = run(ActionHandoff(), t)
        if agents_available():
            assert responses(messages) == ["utter_handoff_already_queued"]
            assert messages[0]["position"] >= 1
        else:
            assert responses(messages) == ["utter_handoff_after_hours"]
        assert slots_of(events)["escalated"] is True
    assert len(handoffs_of(store, sender)) == 1
    with store() as session:
        callbacks = session.execute(
            select(Ticket).where(
                Ticket.customer_id == "C0002", Ticket.kind == "callback"
            )
        ).scalars()
        assert len(list(callbacks)) == (0 if agents_available() else 1)


def test_handoffs_per_sender_are_limited(
    store: sessionmaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_HANDOFF_SENDER_LIMIT", "2")
    get_settings.cache_clear()
    sender = new_sender()
    t = tracker(intent="request_human", sender=sender)
    for _ in range(2):
        run(ActionHandoff(), t)
        with store.begin() as session:  # an agent resolves it: a new one is allowed
            for handoff in handoffs_of(store, sender):
                session.merge(handoff).status = "resolved"
    events, messages = run(ActionHandoff(), t)
    assert responses(messages) == ["utter_handoff_limit"]
    assert "escalated" not in slots_of(events)
    assert len(handoffs_of(store, sender)) == 2
    other = tracker(intent="request_human", sender=new_sender())
    events, messages = run(ActionHandoff(), other)
    assert responses(messages) != ["utter_handoff_limit"]


# --- fallback ladder --------------------------------------------------------------


def fallback_tracker(*intents: str, slots: dict | None = None):
    history = [user_event(i) for i in intents[:-1]]
    return tracker(slots=slots, intent=intents[-1], history=history)


def test_fallback_asks_to_rephrase_then_offers_a_human(store) -> None:
    events, messages = run(ActionFallback(), fallback_tracker("nlu_fallback"))
    assert (events, responses(messages)) == ([], ["utter_ask_rephrase"])
    events, messages = run(ActionFallback(), fallback_tracker("greet", "out_of_scope"))
    assert (events, responses(messages)) == ([], ["utter_out_of_scope"])
    # Misunderstood twice, not both low confidence: a person is offered.
    events, messages = run(
        ActionFallback(), fallback_tracker("nlu_fallback", "out_of_scope")
    )
    assert responses(messages) == ["utter_offer_human"]
    assert slots_of(events) == {"human_offered": True, "handoff_reason": "fallback"}
    # Not understood twice in a row: queued at once (tests/actions/
    # test_handoff_triggers.py checks the handoff and what the customer hears).
    events, messages = run(
        ActionFallback(), fallback_tracker("nlu_fallback", "nlu_fallback")
    )
    assert responses(messages)[0] in (
        "utter_handoff_low_confidence",
        "utter_handoff_after_hours",
    )
    assert slots_of(events)["escalated"] is True


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
