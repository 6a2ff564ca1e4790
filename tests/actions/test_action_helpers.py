"""Pure helpers of the custom actions (no servers, no database)."""

from __future__ import annotations

import pytest
from rasa_sdk import Tracker

from actions.account import field_from_text, phone_candidate
from actions.handoff import consecutive_fallbacks
from actions.verification import parse_order_number, parse_postcode


@pytest.mark.parametrize(
    ("text", "expected"),
    [("where is a10001?", "A10001"), ("#A12345", "A12345"), ("order 123", None)],
)
def test_parse_order_number(text: str, expected: str | None) -> None:
    assert parse_order_number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5500le", "5500 LE"), ("it's 1018 mg", "1018 MG"), ("2930", "2930"), ("x", None)],
)
def test_parse_postcode(text: str, expected: str | None) -> None:
    assert parse_postcode(text) == expected


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
