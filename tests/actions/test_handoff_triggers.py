"""Handoff triggers, the packet v2 and the return from a person (seeded store)."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from action_support import (
    order_with_return,
    responses,
    run,
    slots_of,
    tracker,
    user_event,
    verified,
)
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from actions.csat import ActionHandedBack, ActionRecordCsat
from actions.handoff import ActionFallback, ActionHandoff, handoff_reason, wait_phrase
from actions.tickets import ActionReportDamage
from bot.server import FallbackActionEndpoint
from crm_settings import get_settings
from crm_store.models import Conversation, CustomerScore, Handoff, Ticket, utcnow
from crm_store.services.history import latest_conversation

# Open only one minute a week: closed whenever the tests run (bar that minute).
CLOSED_HOURS = "sun 00:00-00:01 Europe/Amsterdam"
WAIT = re.compile(r"^about (a minute|\d+ minutes|[\d.]+ hours?)$")


@pytest.fixture()
def open_hours(store, monkeypatch: pytest.MonkeyPatch) -> sessionmaker:
    """The seeded store with agents working around the clock."""
    monkeypatch.setenv("CRM_AGENT_HOURS", "always")
    get_settings.cache_clear()
    return store


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


def score(store: sessionmaker, customer_id: str, tier: str, band: str = "low") -> None:
    with store.begin() as session:
        session.merge(
            CustomerScore(
                customer_id=customer_id,
                as_of=utcnow(),
                frequency=3,
                monetary=500,
                value_tier=tier,
                churn_band=band,
                churn_risk=0.2,
                explanation={"top_churn_features": [["complaints", 0.4]]},
            )
        )


def fallback_tracker(*intents: str, sender: str, slots: dict | None = None):
    history = [user_event(i, "blorp") for i in intents[:-1]]
    return tracker(
        slots=slots, intent=intents[-1], text="blorp", history=history, sender=sender
    )


# --- what the customer hears ----------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "phrase"),
    [
        (None, "a few minutes"),
        (0, "about a minute"),
        (61, "about 2 minutes"),
        (6 * 60, "about 6 minutes"),
        (59 * 60, "about 59 minutes"),
        (60 * 60, "about 1 hour"),
        (100 * 60, "about 1.5 hours"),
        (15 * 3600, "about 15 hours"),
    ],
)
def test_wait_phrase(seconds: int | None, phrase: str) -> None:
    wait = None if seconds is None else dt.timedelta(seconds=seconds)
    assert wait_phrase(wait) == phrase


def test_queued_customer_hears_position_and_expected_wait(open_hours) -> None:
    sender = "t-act-queue-1"
    t = tracker(slots=verified("C0002"), intent="request_human", sender=sender)
    events, messages = run(ActionHandoff(), t)
    assert responses(messages) == ["utter_handoff_queued"]
    assert messages[0]["position"] >= 1
    assert WAIT.match(messages[0]["wait"]), messages[0]["wait"]
    assert slots_of(events)["escalated"] is True
    _, messages = run(ActionHandoff(), t)
    assert responses(messages) == ["utter_handoff_already_queued"]
    assert WAIT.match(messages[0]["wait"])
    [handoff] = handoffs_of(open_hours, sender)
    assert handoff.reason == "customer_request"
    assert handoff.told_position == messages[0]["position"]


def test_after_hours_the_customer_hears_the_hours_and_gets_a_callback(
    store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_AGENT_HOURS", CLOSED_HOURS)
    get_settings.cache_clear()
    sender = "t-act-closed-1"
    history = [user_event("check_order_status", "where is A10001")]
    t = tracker(
        slots=verified("C0001", order_number="A10001"),
        intent="request_human",
        text="a person please",
        history=history,
        sender=sender,
    )
    _, messages = run(ActionHandoff(), t)
    assert responses(messages) == ["utter_handoff_after_hours"]
    assert messages[0]["hours"] == "Sun 00:00-00:01 (Europe/Amsterdam)"
    [handoff] = handoffs_of(store, sender)
    with store() as session:
        [callback] = session.execute(
            select(Ticket).where(
                Ticket.conversation_id == handoff.conversation_id,
                Ticket.kind == "callback",
            )
        ).scalars()
    assert callback.description.startswith(handoff.packet["summary"])
    assert "a person please" in callback.description


# --- the packet ---------------------------------------------------------------------


def test_packet_v2_carries_conversation_slots_actions_and_store_context(
    open_hours,
) -> None:
    sender = "t-act-packet-1"
    history = [
        user_event("greet", "hi"),
        {"event": "action", "name": "action_listen"},
        {"event": "action", "name": "action_greet"},
        user_event("check_order_status", "where is my order A10001"),
        {"event": "action", "name": "action_start_task"},
        {"event": "action", "name": "verify_form"},
        {"event": "action", "name": "action_order_status"},
        {"event": "action", "name": "action_listen"},
    ]
    slots = verified(
        "C0001",
        order_number="A10001",
        postcode="5500 LE",
        contact_value="farah@example.com",
        contact_code="123456",
        pending_task="order_status",
    )
    t = tracker(
        slots=slots,
        intent="request_human",
        text="can I talk to someone",
        history=history,
        sender=sender,
    )
    run(ActionHandoff(), t)
    [handoff] = handoffs_of(open_hours, sender)
    packet = handoff.packet
    assert packet["version"] == 2
    assert packet["tracker_key"] == sender
    assert packet["conversation_id"] == handoff.conversation_id
    assert packet["slots"] == {"pending_task": "order_status", "order_number": "A10001"}
    assert packet["actions"] == [
        "action_greet",
        "action_start_task",
        "verify_form",
        "action_order_status",
    ]
    assert packet["last_intents"] == ["greet", "check_order_status", "request_human"]
    assert packet["last_messages"][-1] == "can I talk to someone"
    assert packet["customer_name"] == "Farah Dijkstra"
    assert {i["kind"] for i in packet["identities"]} >= {"email", "phone"}
    assert [o["order_id"] for o in packet["open_orders"]] == ["A10001"]
    assert packet["summary"] == (
        "Customer Farah Dijkstra asked about order A10001 (status), then asked for "
        "a person; bot tried: order status; verified by order+postcode; hands off: "
        "customer request."
    )
    text = str(packet)
    for personal in ("5500 LE", "farah@example.com", "123456", "farah.dijkstra1"):
        assert personal not in text


# --- triggers and their reasons -----------------------------------------------------


def test_two_low_confidence_turns_queue_a_handoff(open_hours) -> None:
    sender = "t-act-lowconf-1"
    events, messages = run(
        ActionFallback(), fallback_tracker("nlu_fallback", sender=sender)
    )
    assert responses(messages) == ["utter_ask_rephrase"]
    assert handoffs_of(open_hours, sender) == []
    t = fallback_tracker("nlu_fallback", "nlu_fallback", sender=sender)
    events, messages = run(ActionFallback(), t)
    assert responses(messages) == [
        "utter_handoff_low_confidence",
        "utter_handoff_queued",
    ]
    assert WAIT.match(messages[1]["wait"])
    slots = slots_of(events)
    assert slots["escalated"] is True and slots["human_offered"] is False
    [handoff] = handoffs_of(open_hours, sender)
    assert handoff.reason == "low_confidence"
    assert "was not understood twice" in handoff.packet["summary"]
    # A third one: already in line, nothing new.
    t = fallback_tracker("nlu_fallback", "nlu_fallback", "nlu_fallback", sender=sender)
    _, messages = run(ActionFallback(), t)
    assert responses(messages) == ["utter_handoff_already_queued"]
    assert len(handoffs_of(open_hours, sender)) == 1


def test_platinum_is_offered_a_person_after_one_and_handed_off_after_two(
    open_hours,
) -> None:
    score(open_hours, "C0002", "platinum")
    sender = "t-act-lowconf-2"
    slots = verified("C0002")
    t = fallback_tracker("nlu_fallback", sender=sender, slots=slots)
    events, messages = run(ActionFallback(), t)
    assert responses(messages) == ["utter_offer_human"]
    assert slots_of(events) == {"human_offered": True, "handoff_reason": "fallback"}
    t = fallback_tracker("nlu_fallback", "nlu_fallback", sender=sender, slots=slots)
    _, messages = run(ActionFallback(), t)
    assert responses(messages)[0] == "utter_handoff_low_confidence"
    [handoff] = handoffs_of(open_hours, sender)
    assert handoff.reason == "low_confidence"
    assert handoff.packet["value_tier"] == "platinum"
    assert handoff.packet["churn_drivers"] == ["complaints"]


def test_low_confidence_over_the_sender_limit_only_asks_to_rephrase(
    open_hours, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_HANDOFF_SENDER_LIMIT", "1")
    get_settings.cache_clear()
    sender = "t-act-lowconf-3"
    run(ActionHandoff(), tracker(intent="request_human", sender=sender))
    with open_hours.begin() as session:
        for handoff in handoffs_of(open_hours, sender):
            session.merge(handoff).status = "resolved"
    t = fallback_tracker("nlu_fallback", "nlu_fallback", sender=sender)
    events, messages = run(ActionFallback(), t)
    assert responses(messages) == ["utter_ask_rephrase"]
    assert "escalated" not in slots_of(events)
    assert len(handoffs_of(open_hours, sender)) == 1


@pytest.mark.parametrize(
    ("slot", "reason"),
    [
        (None, "customer_request"),
        ("fallback", "fallback"),
        ("verification_failed", "verification_failed"),
        ("form_stuck", "form_stuck"),
        ("complaint", "complaint"),
        ("action_failure", "action_failure"),
        ("code_exhausted", "step_up_required"),
        ("code_limit", "step_up_required"),
        ("something-new", "other"),
    ],
)
def test_each_offer_hands_off_with_its_reason(open_hours, slot, reason) -> None:
    assert handoff_reason(slot) == (reason if slot else "other")
    sender = f"t-act-reason-{reason}-{slot}"
    t = tracker(slots={"handoff_reason": slot}, intent="affirm", sender=sender)
    run(ActionHandoff(), t)
    [handoff] = handoffs_of(open_hours, sender)
    assert handoff.reason == reason


def test_a_complaint_in_the_request_hands_off_as_a_complaint(open_hours) -> None:
    sender = "t-act-reason-complaint-text"
    t = tracker(
        intent="request_human",
        text="this is ridiculous, my parcel is two weeks late, get me a manager",
        sender=sender,
    )
    run(ActionHandoff(), t)
    [handoff] = handoffs_of(open_hours, sender)
    assert handoff.reason == "complaint"
    assert handoff.packet["slots"]["complaint"] == "late_delivery"
    assert "complained about a late delivery" in handoff.packet["summary"]


def test_the_apology_for_a_failed_action_offers_a_handoff_for_action_failure(
    open_hours,
) -> None:
    endpoint = FallbackActionEndpoint("http://127.0.0.1:9/webhook", action_timeout=1)
    result = endpoint._fallback("t-act-failure-1")
    offer = {
        e["name"]: e["value"] for e in result["events"] if e.get("event") == "slot"
    }
    assert offer == {"human_offered": True, "handoff_reason": "action_failure"}
    sender = "t-act-failure-1"
    t = tracker(slots=offer, intent="request_human", sender=sender)
    _, messages = run(ActionHandoff(), t)
    assert responses(messages) == ["utter_handoff_queued"]
    [handoff] = handoffs_of(open_hours, sender)
    assert handoff.reason == "action_failure"


# --- business rule: a platinum damage report ------------------------------------------


def report_damage(store: sessionmaker, tier: str, sender: str):
    number, owner, _ = order_with_return(store, eligible=True)
    score(store, owner, tier)
    t = tracker(
        slots=verified(owner, order_number=number, damage_description="cracked lid"),
        intent="inform",
        sender=sender,
    )
    return number, run(ActionReportDamage(), t)


def test_platinum_damage_report_is_handed_off_after_the_ticket(open_hours) -> None:
    sender = "t-act-damage-1"
    number, (events, messages) = report_damage(open_hours, "platinum", sender)
    assert responses(messages) == [
        "utter_damage_reported",
        "utter_damage_goodwill",
        "utter_handoff_business_rule",
        "utter_handoff_queued",
    ]
    slots = slots_of(events)
    assert slots["escalated"] is True and slots["task_resolved"] is True
    [handoff] = handoffs_of(open_hours, sender)
    assert handoff.reason == "business_rule"
    ticket = messages[0]["ticket"]
    assert ticket in [t["number"] for t in handoff.packet["open_tickets"]]
    assert handoff.packet["slots"]["order_number"] == number


def test_gold_damage_report_is_not_handed_off(open_hours) -> None:
    sender = "t-act-damage-2"
    _, (events, messages) = report_damage(open_hours, "gold", sender)
    assert responses(messages) == [
        "utter_damage_reported",
        "utter_damage_goodwill",
        "utter_anything_else",
    ]
    assert "escalated" not in slots_of(events)
    assert handoffs_of(open_hours, sender) == []


# --- back from a person ---------------------------------------------------------------


def test_handed_back_welcomes_and_asks_for_a_rating_that_is_recorded(
    open_hours,
) -> None:
    sender = "t-act-back-1"
    run(ActionHandoff(), tracker(slots=verified("C0002"), sender=sender))
    events, messages = run(
        ActionHandedBack(), tracker(intent="handed_back", sender=sender)
    )
    assert responses(messages) == ["utter_handed_back", "utter_ask_csat_after_agent"]
    slots = slots_of(events)
    assert slots["csat_asked"] is True and slots["handoff_reason"] is None
    rate = tracker(
        slots={**verified("C0002"), "csat_asked": True},
        intent="rate",
        text="4",
        entities=[{"entity": "rating", "value": "4"}],
        sender=sender,
    )
    _, messages = run(ActionRecordCsat(), rate)
    assert responses(messages) == ["utter_thanks_for_rating"]
    with open_hours() as session:
        assert latest_conversation(session, tracker_key=sender).csat == 4
    # Handed back again later in the same conversation: no second rating question.
    _, messages = run(ActionHandedBack(), tracker(intent="handed_back", sender=sender))
    assert responses(messages) == ["utter_handed_back", "utter_anything_else"]


def test_an_unverified_caller_after_hours_gets_a_callback_ticket_with_the_number(
    store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_AGENT_HOURS", CLOSED_HOURS)
    get_settings.cache_clear()
    sender = "voice:+31655566101"
    t = tracker(intent="request_human", text="can I speak to someone", sender=sender)
    _, messages = run(ActionHandoff(), t)
    assert responses(messages) == ["utter_handoff_after_hours"]
    [handoff] = handoffs_of(store, sender)
    with store() as session:
        conversation = session.get(Conversation, handoff.conversation_id)
        [callback] = session.execute(
            select(Ticket).where(
                Ticket.conversation_id == handoff.conversation_id,
                Ticket.kind == "callback",
            )
        ).scalars()
    # The number's prospect owns the conversation and the ticket says where
    # to call back; nothing was disclosed (the caller is not verified).
    assert callback.customer_id == conversation.customer_id is not None
    assert "Call back on phone: +31655566101" in callback.description
    assert "can I speak to someone" in callback.description
