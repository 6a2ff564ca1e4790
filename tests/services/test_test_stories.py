"""A conversation of the contact history exported as a Rasa test story.

The YAML is checked as data and read back by Rasa's own ``YAMLStoryReader``
with the bot's domain: the events it yields must be the conversation's.
"""

from __future__ import annotations

import datetime as dt
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, ActiveLoop, SlotSet, UserUttered
from rasa.shared.core.training_data.story_reader.yaml_story_reader import (
    YAMLStoryReader,
)
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput, NotFound
from crm_store.models import Handoff
from crm_store.services.conversations import open_conversation
from crm_store.services.history import next_conversation_id
from crm_store.services.interactions import NewInteraction, append_interactions
from crm_store.services.test_stories import conversation_story, story_file_name

ROOT = Path(__file__).resolve().parents[2]
START = dt.datetime(2024, 5, 2, 10, 0)


@pytest.fixture(scope="module")
def domain() -> Domain:
    return Domain.load(str(ROOT / "domain"))


def add_conversation(
    session: Session, rows: list[tuple[str, str | None, str | None, dict[str, Any]]]
) -> str:
    """A conversation whose rows are (author, text, intent, meta), a second apart.

    A meta key ``event_id`` sets the row's event id (default: random).
    """
    conversation_id = next_conversation_id(session)
    open_conversation(
        session,
        conversation_id=conversation_id,
        channel="telegram",
        tracker_key=f"telegram:{uuid.uuid4().int % 10**9}",
        at=START,
    )
    items = []
    for index, (author, text, intent, meta) in enumerate(rows):
        meta = dict(meta)
        items.append(
            NewInteraction(
                event_id=meta.pop("event_id", uuid.uuid4().hex),
                channel="telegram",
                direction="in" if author == "customer" else "out",
                author=author,
                text=text,
                conversation_id=conversation_id,
                intent=intent,
                confidence=0.9 if intent else None,
                occurred_at=START + dt.timedelta(seconds=index + 1),
                meta=meta,
            )
        )
    append_interactions(session, items=items)
    session.flush()
    return conversation_id


def action(name: str) -> dict[str, Any]:
    return {"action": name}


def slot(name: str, value: Any) -> dict[str, Any]:
    return {"slot": name, "value": value}


def loop(name: str | None) -> dict[str, Any]:
    return {"active_loop": name}


ORDER_CONVERSATION = [
    ("customer", "hello there", "greet", {}),
    ("bot", "Hi! How can I help?", None, {"steps": [action("action_greet")]}),
    (
        "customer",
        "where is my order 12345?",
        "check_order_status",
        {
            "entities": [
                {"entity": "order_number", "value": "12345", "start": 18, "end": 23}
            ]
        },
    ),
    (
        "bot",
        "What is your postcode?",
        None,
        {
            "utter_action": "utter_ask_postcode",
            "steps": [
                action("action_start_task"),
                slot("pending_task", "order_status"),
                action("verify_form"),
                loop("verify_form"),
                slot("order_number", "12345"),
                slot("requested_slot", "postcode"),
            ],
        },
    ),
    (
        "customer",
        "it's 5500 LE",
        "inform",
        {
            "entities": [
                {"entity": "postcode", "value": "5500 LE", "start": 5, "end": 12}
            ]
        },
    ),
    (
        "bot",
        "Your order has shipped.",
        None,
        {
            "steps": [
                action("verify_form"),
                slot("postcode", "5500 LE"),
                loop(None),
                slot("requested_slot", None),
                action("action_check_task"),
                slot("task_ok", True),
                action("action_order_status"),
            ]
        },
    ),
    ("bot", "Anything else?", None, {}),
    ("system", "Complaint noted", "complain", {}),
    ("agent", "An agent line", None, {}),
    (
        "customer",
        "/affirm",
        "affirm",
        {"steps": [action("action_listen")]},  # never in a story
    ),
    ("bot", "Fine.", None, {"steps": [action("utter_ok_anything_else")]}),
    ("customer", "4", "rate", {}),
    ("customer", "CSAT 4", "csat", {"kind": "csat", "csat": 4}),  # the action's copy
    ("customer", "a sticker", "telegram_sticker", {"event_id": "telegram:77:in"}),
    ("bot", "I cannot read stickers.", None, {"event_id": "telegram:77:out"}),
    ("bot", "Thanks for rating!", None, {"steps": [action("action_record_csat")]}),
    ("customer", "bye", "goodbye", {}),
    ("bot", "Bye!", None, {"steps": [action("utter_goodbye")]}),
]

EXPECTED_STEPS = [
    {"user": "hello there\n", "intent": "greet"},
    {"action": "action_greet"},
    {
        "user": "where is my order [12345](order_number)?\n",
        "intent": "check_order_status",
    },
    {"action": "action_start_task"},
    {"slot_was_set": [{"pending_task": "order_status"}]},
    {"action": "verify_form"},
    {"active_loop": "verify_form"},
    {"slot_was_set": [{"order_number": "12345"}, {"requested_slot": "postcode"}]},
    {"user": "it's [5500 LE](postcode)\n", "intent": "inform"},
    {"action": "verify_form"},
    {"slot_was_set": [{"postcode": "5500 LE"}]},
    {"active_loop": None},
    {"slot_was_set": [{"requested_slot": None}]},
    {"action": "action_check_task"},
    {"slot_was_set": [{"task_ok": True}]},
    {"action": "action_order_status"},
    {"user": "/affirm\n", "intent": "affirm"},
    {"action": "utter_ok_anything_else"},
    {"user": "4\n", "intent": "rate"},
    {"action": "action_record_csat"},
    {"user": "bye\n", "intent": "goodbye"},
    {"action": "utter_goodbye"},
]


def read_with_rasa(text: str, path: Path, domain: Domain) -> list[tuple]:
    """The story's events as Rasa's reader sees them; fails on its warnings.

    The reader warns (and skips or keeps going) on steps it finds wrong:
    unknown intents, empty names, unexpected steps, bad slots.
    """
    path.write_text(text, encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        steps = YAMLStoryReader(domain, str(path)).read_from_file(path)
    issues = [str(w.message) for w in caught if "Issue found" in str(w.message)]
    assert issues == []
    assert len(steps) == 1
    events: list[tuple] = []
    for event in steps[0].events:
        if isinstance(event, UserUttered):
            entities = [
                (e["entity"], e["value"], e["start"], e["end"]) for e in event.entities
            ]
            events.append(("user", event.text, event.intent_name, entities))
        elif isinstance(event, ActionExecuted):
            events.append(("action", event.action_name))
        elif isinstance(event, SlotSet):
            events.append(("slot", event.key, event.value))
        elif isinstance(event, ActiveLoop):
            events.append(("loop", event.name))
        else:
            events.append((type(event).__name__,))
    return events


def test_a_conversation_with_a_form_becomes_a_story_rasa_reads(
    session: Session, tmp_path: Path, domain: Domain
) -> None:
    conversation_id = add_conversation(session, ORDER_CONVERSATION)
    text = conversation_story(session, conversation_id=conversation_id)

    document = yaml.safe_load(text)
    assert document == {
        "version": "3.1",
        "stories": [
            {
                "story": f"conversation {conversation_id} (telegram, 2024-05-02)",
                "steps": EXPECTED_STEPS,
            }
        ],
    }
    assert text.startswith('version: "3.1"\nstories:\n- story: conversation ')
    assert "  - user: |\n      hello there\n    intent: greet\n" in text

    events = read_with_rasa(text, tmp_path / story_file_name(conversation_id), domain)
    assert events == [
        ("user", "hello there", "greet", []),
        ("action", "action_greet"),
        (
            "user",
            "where is my order 12345?",
            "check_order_status",
            [("order_number", "12345", 18, 23)],
        ),
        ("action", "action_start_task"),
        ("slot", "pending_task", "order_status"),
        ("action", "verify_form"),
        ("loop", "verify_form"),
        ("slot", "order_number", "12345"),
        ("slot", "requested_slot", "postcode"),
        ("user", "it's 5500 LE", "inform", [("postcode", "5500 LE", 5, 12)]),
        ("action", "verify_form"),
        ("slot", "postcode", "5500 LE"),
        ("loop", None),
        ("slot", "requested_slot", None),
        ("action", "action_check_task"),
        ("slot", "task_ok", True),
        ("action", "action_order_status"),
        ("user", "/affirm", "affirm", []),
        ("action", "utter_ok_anything_else"),
        ("user", "4", "rate", []),
        ("action", "action_record_csat"),
        ("user", "bye", "goodbye", []),
        ("action", "utter_goodbye"),
    ]


def test_the_story_stops_when_an_agent_takes_over(
    session: Session, tmp_path: Path, domain: Domain
) -> None:
    conversation_id = add_conversation(
        session,
        [
            ("customer", "I want a human", "request_human", {}),
            ("bot", "Connecting you.", None, {"steps": [action("action_handoff")]}),
            ("customer", "still there?", "affirm", {}),  # before the claim
            ("bot", "You are next.", None, {"steps": [action("action_handoff")]}),
            ("agent", "Hi, Sam here.", None, {}),
            ("customer", "my parcel is late", "complain", {}),  # Rasa paused
            ("bot", "Welcome back", None, {"steps": [action("action_handed_back")]}),
        ],
    )
    session.add(
        Handoff(
            conversation_id=conversation_id,
            channel="telegram",
            reason="customer_request",
            status="claimed",
            created_at=START + dt.timedelta(seconds=2),
            claimed_at=START + dt.timedelta(seconds=4, milliseconds=500),
        )
    )
    session.flush()
    text = conversation_story(session, conversation_id=conversation_id)
    assert yaml.safe_load(text)["stories"][0]["steps"] == [
        {"user": "I want a human\n", "intent": "request_human"},
        {"action": "action_handoff"},
        {"user": "still there?\n", "intent": "affirm"},
        {"action": "action_handoff"},
    ]
    assert read_with_rasa(text, tmp_path / "story.yml", domain)[-1] == (
        "action",
        "action_handoff",
    )


def test_a_customer_message_without_intent_ends_the_story_external_ones_are_skipped(
    session: Session,
) -> None:
    conversation_id = add_conversation(
        session,
        [
            ("customer", "hi", "greet", {}),
            ("bot", "Hello", None, {"steps": [action("action_greet")]}),
            ("customer", "EXTERNAL: handed_back", "handed_back", {}),
            ("bot", "Back", None, {"steps": [action("action_handed_back")]}),
            ("customer", "a photo", None, {}),
            ("bot", "never exported", None, {"steps": [action("utter_iamabot")]}),
            ("customer", "bye", "goodbye", {}),
        ],
    )
    text = conversation_story(session, conversation_id=conversation_id)
    assert yaml.safe_load(text)["stories"][0]["steps"] == [
        {"user": "hi\n", "intent": "greet"},
        {"action": "action_greet"},
        {"action": "action_handed_back"},
    ]


def test_entities_are_annotated_only_where_markup_can_carry_them(
    session: Session, tmp_path: Path, domain: Domain
) -> None:
    text = "my e-mail [new](old) is ann@example.com, phone 0612345678"
    entities = [
        # NLU mapped a synonym: the span holds another value.
        {"entity": "contact_field", "value": "email", "start": 3, "end": 9},
        {"entity": "email", "value": "ann@example.com", "start": 24, "end": 39},
        {"entity": "phone", "value": "0612345678", "start": 46, "end": 99},  # bad end
        {"entity": "email", "value": "example", "start": 28, "end": 35},  # overlaps
    ]
    conversation_id = add_conversation(
        session,
        [
            ("customer", text, "update_contact", {"entities": entities}),
            ("bot", "ok", None, {"steps": [action("action_update_contact")]}),
            ("customer", '/inform{"postcode": "1011 AB"}', "inform", {}),
        ],
    )
    story = conversation_story(session, conversation_id=conversation_id)
    user_steps = [
        s for s in yaml.safe_load(story)["stories"][0]["steps"] if "user" in s
    ]
    assert user_steps[0]["user"] == (
        'my [e-mail]{"entity": "contact_field", "value": "email"} [new] (old) '
        "is [ann@example.com](email), phone 0612345678\n"
    )
    assert user_steps[1]["user"] == '/inform{"postcode": "1011 AB"}\n'
    events = read_with_rasa(story, tmp_path / "story.yml", domain)
    assert events[0] == (
        "user",
        "my e-mail [new] (old) is ann@example.com, phone 0612345678",
        "update_contact",
        [("contact_field", "email", 3, 9), ("email", "ann@example.com", 25, 40)],
    )
    assert events[2][:3] == ("user", '/inform{"postcode": "1011 AB"}', "inform")


def test_slot_values_read_back_as_they_were(
    session: Session, tmp_path: Path, domain: Domain
) -> None:
    values = [
        "1e3",
        "0o17",
        "yes",
        "null",
        "12",
        "a: b",
        "  padded",
        "multi\nline",
        ["a", "b"],
        {"id": "O1", "lines": [1, 2]},
        1.5,
    ]
    conversation_id = add_conversation(
        session,
        [
            ("customer", "hi", "greet", {}),
            (
                "bot",
                "Hello",
                None,
                {
                    "steps": [action("action_greet")]
                    + [slot("contact_value", v) for v in values]
                    + [slot("login_code_tries", 2), slot("verified", False)]
                },
            ),
            ("customer", "ok", "affirm", {}),
        ],
    )
    story = conversation_story(session, conversation_id=conversation_id)
    slots = [
        e
        for e in read_with_rasa(story, tmp_path / "story.yml", domain)
        if e[0] == "slot"
    ]
    assert slots == [("slot", "contact_value", v) for v in values] + [
        ("slot", "login_code_tries", 2),
        ("slot", "verified", False),
    ]


def test_unknown_conversations_and_conversations_without_dialogue_are_refused(
    session: Session,
) -> None:
    with pytest.raises(NotFound):
        conversation_story(session, conversation_id="cv_does_not_exist")
    only_bot = add_conversation(
        session,
        [
            ("bot", "Your parcel is on its way.", None, {}),
            ("customer", "a photo", None, {}),
            ("customer", "thanks", "thanks", {}),
        ],
    )
    with pytest.raises(InvalidInput, match="no customer message with an intent"):
        conversation_story(session, conversation_id=only_bot)


@pytest.mark.parametrize(
    ("conversation_id", "name"),
    [
        ("cv_0123abcd", "story_cv_0123abcd.yml"),
        ("rest:a/../b c", "story_rest_a_b_c.yml"),
        ("../../etc/passwd", "story_etc_passwd.yml"),
        ("", "story_conversation.yml"),
        ("x" * 300, f"story_{'x' * 100}.yml"),
    ],
)
def test_story_file_names_are_safe(conversation_id: str, name: str) -> None:
    assert story_file_name(conversation_id) == name
