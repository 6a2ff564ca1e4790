"""The NLU component that files complaints under ``complain``, not small talk."""

from __future__ import annotations

import pytest
from rasa.shared.nlu.training_data.message import Message

from bot.complaint_intent import ComplaintIntent


def classified(text: str, intent: str, confidence: float = 0.8) -> Message:
    message = Message(data={"text": text})
    message.set("intent", {"name": intent, "confidence": confidence})
    message.set(
        "intent_ranking",
        [
            {"name": intent, "confidence": confidence},
            {"name": "complain", "confidence": 0.1},
        ],
    )
    return message


def run(message: Message) -> Message:
    [out] = ComplaintIntent().process([message])
    return out


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("worst service ever, absolutely ridiculous", "start_return"),
        ("I'm absolutely livid, nobody answers", "check_order_status"),
        ("crap service, I'm fed up", "request_human"),
        ("1, very disappointed", "rate"),
        ("I'm furious, it arrived broken", "report_damage"),
    ],
)
def test_tasks_keep_their_intent(text: str, intent: str) -> None:
    assert run(classified(text, intent)).get("intent")["name"] == intent


@pytest.mark.parametrize(
    "intent", ["stop_form", "affirm", "out_of_scope", "nlu_fallback", "faq", "deny"]
)
def test_venting_filed_under_small_talk_becomes_complain(intent: str) -> None:
    out = run(classified("I'm absolutely livid, this is unacceptable", intent, 0.65))
    assert out.get("intent") == {"name": "complain", "confidence": 0.9}
    ranking = out.get("intent_ranking")
    assert ranking[0]["name"] == "complain"
    assert [r["name"] for r in ranking].count("complain") == 1


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("no problem at all, thanks", "thanks"),
        ("tell me a joke please", "out_of_scope"),
        ("what happens if my parcel is late?", "faq"),
        ("stop", "stop_form"),
        ("", "nlu_fallback"),
    ],
)
def test_calm_messages_keep_their_intent(text: str, intent: str) -> None:
    assert run(classified(text, intent)).get("intent")["name"] == intent
