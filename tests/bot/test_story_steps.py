"""Story steps (actions, slots, loops) and entities in the contact history's meta.

Rasa's own event classes make the events; they go through the broker's filter
(``is_recorded`` / ``recorded_part``) and a ``HistoryRecorder`` on a real store,
one transaction per batch as the writer does.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from rasa.shared.core.events import (
    ActionExecuted,
    ActiveLoop,
    BotUttered,
    Event,
    SessionStarted,
    SlotSet,
    UserUtteranceReverted,
    UserUttered,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from contact_history.events import (
    compact_value,
    entities_of,
    is_recorded,
    recorded_part,
    step_of,
)
from contact_history.recorder import CARRY_TTL_SECONDS, MAX_STEPS, HistoryRecorder
from crm_store.db import make_session_factory
from crm_store.models import Customer, Interaction
from crm_store.services.history import latest_conversation
from crm_store.services.interactions import transcript


class Turns:
    """Builds a tracker's event dicts with increasing timestamps."""

    def __init__(self, sender: str) -> None:
        self.sender = sender
        self.clock = time.time() - 600

    def _dict(self, event: Event) -> dict[str, Any]:
        self.clock += 0.5
        event.timestamp = self.clock
        return {"sender_id": self.sender, **event.as_dict()}

    def user(
        self, text: str, intent: str, entities: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        return self._dict(
            UserUttered(
                text,
                {"name": intent, "confidence": 0.91},
                entities or [],
                input_channel="rest",
                message_id=uuid.uuid4().hex,
            )
        )

    def bot(self, text: str, utter_action: str | None = None) -> dict[str, Any]:
        metadata = {"utter_action": utter_action} if utter_action else {}
        return self._dict(BotUttered(text, {}, metadata))

    def action(self, name: str) -> dict[str, Any]:
        return self._dict(ActionExecuted(name, policy="RulePolicy", confidence=1.0))

    def slot(self, name: str, value: Any) -> dict[str, Any]:
        return self._dict(SlotSet(name, value))

    def loop(self, name: str | None) -> dict[str, Any]:
        return self._dict(ActiveLoop(name))

    def other(self, event: Event) -> dict[str, Any]:
        return self._dict(event)


def record(
    factory: sessionmaker, recorder: HistoryRecorder, events: list[dict[str, Any]]
) -> None:
    """One writer batch: the broker's filter, then the recorder in a transaction."""
    queued = [recorded_part(e) for e in events if is_recorded(e)]
    with factory.begin() as session:
        pending = recorder.record(session, queued)
    recorder.commit(pending)


def rows_of(factory: sessionmaker, key: str) -> list[Interaction]:
    with factory() as session:
        latest = latest_conversation(session, tracker_key=key)
        return transcript(session, conversation_id=latest.id)


@pytest.fixture()
def factory(empty_engine: Engine) -> sessionmaker:
    return make_session_factory(empty_engine)


def test_a_conversation_with_a_form_keeps_its_steps_on_the_next_message_rows(
    factory: sessionmaker,
) -> None:
    with factory.begin() as session:
        session.add(Customer(id="TSTEPS01", first_name="Ann"))
    sender = f"rest:{uuid.uuid4().hex[:10]}"
    t = Turns(sender)
    recorder = HistoryRecorder()
    order_entity = {
        "entity": "order_number",
        "value": "12345",
        "start": 18,
        "end": 23,
        "extractor": "DIETClassifier",
        "confidence_entity": 0.998,
        "processors": ["EntitySynonymMapper"],
    }
    # Batch 1: session start, a greeting, then the order question up to the
    # middle of the form's first run.
    record(
        factory,
        recorder,
        [
            t.action("action_session_start"),
            t.other(SessionStarted()),
            t.action("action_listen"),
            t.user("hi", "greet"),
            t.action("action_greet"),
            t.bot("Hello! How can I help?", "utter_greet"),
            t.action("action_listen"),
            t.user("where is my order 12345", "order_status", [order_entity]),
            t.action("action_start_task"),  # silent: sets a slot only
            t.slot("pending_task", "order_status"),
            t.action("verify_form"),
            t.loop("verify_form"),
            t.slot("order_number", "12345"),
        ],
    )
    # Batch 2 starts in the middle of that turn.
    record(
        factory,
        recorder,
        [
            t.slot("requested_slot", "postcode"),
            t.bot("What is your postcode?", "utter_ask_postcode"),
            t.action("action_listen"),
            t.user(
                "5500 LE",
                "inform",
                [{"entity": "postcode", "value": "5500 LE", "start": 0, "end": 7}],
            ),
            t.action("verify_form"),
            t.slot("postcode", "5500 LE"),
            t.loop(None),
            t.slot("requested_slot", None),
            t.action("action_check_task"),
            t.slot("task_ok", True),
            t.slot("customer_id", "TSTEPS01"),
            t.action("action_order_status"),
            t.bot("Order 12345 ships tomorrow."),
            t.bot("Anything else?"),
            t.action("action_listen"),
            t.user("undo that", "undo"),
            t.action("action_revert_last"),  # silent, then the turn ends
            t.other(UserUtteranceReverted()),
            t.slot("task_ok", None),
            t.action("action_listen"),
        ],
    )
    # Batch 3: the next message takes the steps that ran after the last one.
    record(factory, recorder, [t.user("thanks", "thanks")])

    rows = rows_of(factory, sender)
    assert [r.text for r in rows] == [
        "hi",
        "Hello! How can I help?",
        "where is my order 12345",
        "What is your postcode?",
        "5500 LE",
        "Order 12345 ships tomorrow.",
        "Anything else?",
        "undo that",
        "thanks",
    ]
    metas = [r.meta for r in rows]
    assert metas[0] == {}
    assert metas[1] == {
        "utter_action": "utter_greet",
        "steps": [{"action": "action_greet"}],
    }
    assert metas[2] == {
        "entities": [
            {"entity": "order_number", "value": "12345", "start": 18, "end": 23}
        ]
    }
    assert metas[3] == {
        "utter_action": "utter_ask_postcode",
        "steps": [
            {"action": "action_start_task"},
            {"slot": "pending_task", "value": "order_status"},
            {"action": "verify_form"},
            {"active_loop": "verify_form"},
            {"slot": "order_number", "value": "12345"},
            {"slot": "requested_slot", "value": "postcode"},
        ],
    }
    assert metas[4] == {
        "entities": [{"entity": "postcode", "value": "5500 LE", "start": 0, "end": 7}]
    }
    assert metas[5] == {
        "steps": [
            {"action": "verify_form"},
            {"slot": "postcode", "value": "5500 LE"},
            {"active_loop": None},
            {"slot": "requested_slot", "value": None},
            {"action": "action_check_task"},
            {"slot": "task_ok", "value": True},
            {"slot": "customer_id", "value": "TSTEPS01"},
            {"action": "action_order_status"},
        ]
    }
    assert metas[6] == {}  # a second message of the same action
    assert metas[7] == {}
    assert metas[8] == {
        "steps": [
            {"action": "action_revert_last"},
            {"slot": "task_ok", "value": None},
        ]
    }
    # The tracked slot still links the conversation and backfills the rows.
    assert {r.customer_id for r in rows} == {"TSTEPS01"}
    assert recorder.carried == {}


def test_steps_survive_a_failed_batch_and_are_attached_once(
    factory: sessionmaker,
) -> None:
    sender = f"rest:{uuid.uuid4().hex[:10]}"
    t = Turns(sender)
    recorder = HistoryRecorder()
    record(factory, recorder, [t.user("hi", "greet"), t.action("action_lookup")])
    assert [s.steps for s in recorder.carried.values()] == [
        [{"action": "action_lookup"}]
    ]
    batch = [
        recorded_part(e)
        for e in (t.slot("found", 3), t.action("utter_found"), t.bot("Found 3."))
    ]
    with factory() as session:  # rolled back: the writer retries the batch
        recorder.record(session, batch)
        session.rollback()
    assert [s.steps for s in recorder.carried.values()] == [
        [{"action": "action_lookup"}]
    ]
    with factory.begin() as session:
        pending = recorder.record(session, batch)
    recorder.commit(pending)
    rows = rows_of(factory, sender)
    assert rows[1].meta["steps"] == [
        {"action": "action_lookup"},
        {"slot": "found", "value": 3},
        {"action": "utter_found"},
    ]
    assert recorder.carried == {}


def test_steps_of_other_keys_stay_apart(factory: sessionmaker) -> None:
    one, two = Turns(f"rest:{uuid.uuid4().hex[:8]}"), Turns(f"sms:{uuid.uuid4().hex}")
    recorder = HistoryRecorder()
    record(
        factory,
        recorder,
        [
            one.user("a", "greet"),
            one.action("action_a"),
            two.user("b", "greet"),
            two.action("action_b"),
            one.bot("A!"),
            two.bot("B!"),
        ],
    )
    assert rows_of(factory, one.sender)[1].meta == {"steps": [{"action": "action_a"}]}
    assert rows_of(factory, two.sender)[1].meta == {"steps": [{"action": "action_b"}]}


def test_values_are_bounded_and_cleaned_and_steps_capped(
    factory: sessionmaker,
) -> None:
    sender = f"rest:{uuid.uuid4().hex[:10]}"
    t = Turns(sender)
    recorder = HistoryRecorder()
    deep = {"a": {"b": {"c": 1}}}
    events = [
        t.user("hi", "greet"),
        t.slot("note", "x" * 600),
        t.slot("orders", list(range(400))),
        t.slot("deep", deep),
        t.slot("small", {"a": [1, 2]}),
        t.slot("dirty", "a\x00b\ud800"),
    ]
    events += [t.action(f"action_{i}") for i in range(MAX_STEPS)]
    events.append(t.bot("done"))
    record(factory, recorder, events)
    meta = rows_of(factory, sender)[1].meta
    steps = meta["steps"]
    assert len(steps) == MAX_STEPS
    assert meta["steps_dropped"] == 5  # 5 slots + 50 actions, 50 kept
    note, orders, deep_step, small, dirty = steps[:5]
    assert note == {"slot": "note", "value": "x" * 499 + "…"}
    orders_json = json.dumps(list(range(400)), separators=(",", ":"))
    assert len(orders_json) > 500
    assert orders["value"] == orders_json[:499] + "…"
    assert deep_step["value"] == '{"a":{"b":{"c":1}}}'  # too deep: its JSON text
    assert small["value"] == {"a": [1, 2]}
    assert dirty["value"] == "ab\ufffd"
    assert steps[5] == {"action": "action_0"}
    assert steps[-1] == {"action": "action_44"}


def test_forget_drops_only_steps_waiting_too_long(factory: sessionmaker) -> None:
    old, fresh = Turns("rest:old-key"), Turns("rest:fresh-key")
    recorder = HistoryRecorder()
    record(
        factory,
        recorder,
        [old.user("a", "greet"), old.action("x"), fresh.user("b", "greet")],
    )
    record(factory, recorder, [fresh.action("y")])
    recorder.carried["rest:old-key"].since -= CARRY_TTL_SECONDS + 1
    recorder.forget()
    assert set(recorder.carried) == {"rest:fresh-key"}


def test_the_broker_filter_keeps_compact_steps_and_entities() -> None:
    t = Turns("rest:filter")
    assert not is_recorded(t.action("action_listen"))
    assert not is_recorded(t.action("action_session_start"))
    assert not is_recorded(t.other(SessionStarted()))
    assert not is_recorded({"sender_id": "k", "event": "user_featurization"})
    assert not is_recorded({"sender_id": "k", "event": "action", "name": None})
    action = t.action("action_greet")
    assert recorded_part(action) == {
        "sender_id": "rest:filter",
        "event": "action",
        "timestamp": action["timestamp"],
        "name": "action_greet",
    }
    big = t.slot("orders", ["o"] * 1000)
    assert recorded_part(big)["value"] == compact_value(["o"] * 1000)
    assert len(recorded_part(big)["value"]) == 500
    tracked = t.slot("customer_id", {"raw": "kept for the recorder"})
    assert recorded_part(tracked)["value"] == {"raw": "kept for the recorder"}
    entities = [
        {"entity": f"e{i}", "value": str(i), "start": i, "end": i + 1, "extractor": "X"}
        for i in range(25)
    ]
    user = t.user("many", "inform", entities)
    part = recorded_part(user)
    assert part["parse_data"]["intent"] == {"name": "inform", "confidence": 0.91}
    assert len(part["parse_data"]["entities"]) == 20
    assert part["parse_data"]["entities"][0] == {
        "entity": "e0",
        "value": "0",
        "start": 0,
        "end": 1,
    }
    assert entities_of(part) == part["parse_data"]["entities"]
    assert step_of(t.loop(None)) == {"active_loop": None}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        (3, 3),
        (2.5, 2.5),
        (float("nan"), "nan"),
        ("short", "short"),
        ({"a": {"b": 1}}, {"a": {"b": 1}}),
        ([[[]]], "[[[]]]"),
        ({1, 2}, "…"),  # not JSON
    ],
)
def test_compact_value(value: Any, expected: Any) -> None:
    assert compact_value(value) == expected
    assert compact_value(compact_value(value)) == compact_value(value)


def test_compact_value_of_a_value_nested_5000_levels() -> None:
    value: dict[str, Any] = {}
    for _ in range(5000):
        value = {"a": value}
    compacted = compact_value(value)  # encoded lazily: only its head
    assert compacted == ('{"a":' * 100)[:499] + "…"
