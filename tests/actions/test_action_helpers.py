"""Pure helpers of the custom actions (no servers, no database)."""

from __future__ import annotations

from rasa_sdk import Tracker

from actions.account import field_from_text, phone_candidate
from actions.handoff import consecutive_fallbacks


def test_contact_field_and_dutch_phone() -> None:
    assert field_from_text("my e-mail") == "email"
    assert field_from_text("the mobile number") == "phone"
    assert phone_candidate("06 1234 5678") == "+31612345678"
    assert phone_candidate("0032 470 12 34 56") == "+32470123456"


def user(intent: str) -> dict:
    return {"event": "user", "text": "x", "parse_data": {"intent": {"name": intent}}}


def tracker(events: list[dict]) -> Tracker:
    return Tracker("s", {}, {}, events, False, None, {}, "action_listen")


def test_consecutive_fallbacks_counts_only_the_latest_run() -> None:
    events = [user("nlu_fallback"), user("greet"), user("nlu_fallback")]
    assert consecutive_fallbacks(tracker(events)) == 1
    events.append({"event": "bot", "text": "rephrase"})
    events.append(user("out_of_scope"))
    assert consecutive_fallbacks(tracker(events)) == 2
    assert consecutive_fallbacks(tracker([user("greet")])) == 0
