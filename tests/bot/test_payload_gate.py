"""The payload gate on Rasa's own parsing path.

``MessageProcessor.parse_message`` runs for real on a real predict graph made of
the nodes every Rasa model ends its NLU with (``NLUMessageConverter`` ->
``RegexMessageHandler``, the component that unpacks ``/intent{json}``), with the
project's domain, against real ``DialogueStateTracker``s holding real
``BotUttered`` events. The trained classifiers are left out: without them a
message parsed as text has no intent, which makes "parsed as a payload" and
"parsed as text" easy to tell apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rasa.core.channels.channel import UserMessage
from rasa.core.processor import MessageProcessor
from rasa.engine.constants import PLACEHOLDER_MESSAGE
from rasa.engine.graph import ExecutionContext, GraphSchema, SchemaNode
from rasa.engine.runner.dask import DaskGraphRunner
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.graph_components.converters.nlu_message_converter import (
    NLUMessageConverter,
)
from rasa.nlu.classifiers.regex_message_handler import RegexMessageHandler
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    BotUttered,
    SessionStarted,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker

from bot.patches import payload_gate
from bot.patches.payload_gate import (
    gated_parse,
    gated_text,
    install_payload_gate,
    offered_payloads,
)

ROOT = Path(__file__).resolve().parents[2]
TARGET = f"run_{RegexMessageHandler.__name__}"
CONFIRM = [
    {"title": "Yes", "payload": "/affirm"},
    {"title": "No", "payload": "/deny"},
]
RATINGS = [{"title": str(n), "payload": f'/rate{{"rating": "{n}"}}'} for n in (1, 2)]


@pytest.fixture()
def processor(tmp_path: Path) -> Iterator[MessageProcessor]:
    """A MessageProcessor whose NLU graph is Rasa's converter + regex handler."""
    nodes = {
        "nlu_message_converter": SchemaNode(
            needs={"messages": PLACEHOLDER_MESSAGE},
            uses=NLUMessageConverter,
            fn="convert_user_message",
            constructor_name="load",
            config={},
            eager=True,
        ),
        TARGET: SchemaNode(
            needs={"messages": "nlu_message_converter"},
            uses=RegexMessageHandler,
            fn="process",
            constructor_name="load",
            config={},
            eager=True,
        ),
    }
    schema = GraphSchema(nodes)
    stock = MessageProcessor.__dict__["_parse_message_with_graph"]
    processor = object.__new__(MessageProcessor)
    processor.graph_runner = DaskGraphRunner(
        schema, LocalModelStorage(tmp_path), ExecutionContext(schema, "gate-test")
    )
    processor.model_metadata = SimpleNamespace(nlu_target=TARGET)
    processor.http_interpreter = None
    processor.domain = Domain.load(str(ROOT / "domain"))
    yield processor
    MessageProcessor._parse_message_with_graph = stock


def conversation(*events: Any) -> DialogueStateTracker:
    """A tracker: session start, a first user message, then ``events``."""
    return DialogueStateTracker.from_events(
        "rest:gate-test",
        [
            ActionExecuted("action_session_start"),
            SessionStarted(),
            ActionExecuted("action_listen"),
            UserUttered("cancel my order", {"name": "cancel_order"}),
            *events,
        ],
    )


def asking(*buttons: dict[str, str], key: str = "buttons") -> DialogueStateTracker:
    """A tracker whose last bot message offered ``buttons``."""
    return conversation(
        BotUttered("Shall I cancel it?", data={key: list(buttons)}),
        ActionExecuted("action_listen"),
    )


def parse(processor: MessageProcessor, text: str, tracker: Any) -> dict[str, Any]:
    message = UserMessage(text, sender_id="rest:gate-test", input_channel="rest")
    return asyncio.run(processor.parse_message(message, tracker))


def intent(parsed: dict[str, Any]) -> str | None:
    return parsed["intent"].get("name")


def test_stock_rasa_takes_any_payload(processor: MessageProcessor) -> None:
    """Without the gate the customer picks intent and entities (the threat)."""
    parsed = parse(processor, '/affirm{"order_number":"A10002"}', asking(*CONFIRM))
    assert intent(parsed) == "affirm"
    assert [(e["entity"], e["value"]) for e in parsed["entities"]] == [
        ("order_number", "A10002")
    ]


def test_offered_payload_is_accepted(processor: MessageProcessor) -> None:
    install_payload_gate()
    parsed = parse(processor, "/affirm", asking(*CONFIRM))
    assert (intent(parsed), parsed["intent"]["confidence"]) == ("affirm", 1.0)
    parsed = parse(processor, '/rate{"rating": "2"}', asking(*RATINGS))
    assert intent(parsed) == "rate"
    assert [(e["entity"], e["value"]) for e in parsed["entities"]] == [("rating", "2")]
    quick = asking(*CONFIRM, key="quick_replies")
    assert intent(parse(processor, "/deny", quick)) == "deny"


def test_unoffered_payload_becomes_text(processor: MessageProcessor) -> None:
    install_payload_gate()
    parsed = parse(processor, '/affirm{"order_number":"A10002"}', asking(*CONFIRM))
    assert intent(parsed) is None
    assert parsed["entities"] == []
    assert parsed["text"] == 'affirm{"order_number":"A10002"}'
    rating = parse(processor, '/rate{"rating":"1"}', asking(*RATINGS))  # no space
    assert (intent(rating), rating["entities"]) == (None, [])


@pytest.mark.parametrize(
    "text",
    [
        '/check_order_status{"order_number": {}}',
        '/check_order_status{"order_number": [1, {"a": null}]}',
        "/affirm{not json",
        "/restart",
        "/session_start",
        "/back",
        "//affirm",
        "/ /affirm",
        "/",
    ],
)
def test_malformed_and_internal_payloads_never_parse(
    processor: MessageProcessor, text: str
) -> None:
    install_payload_gate()
    parsed = parse(processor, text, asking(*CONFIRM))
    assert (intent(parsed), parsed["entities"]) == (None, [])


def test_offers_end_with_the_next_user_message_or_a_new_session(
    processor: MessageProcessor,
) -> None:
    install_payload_gate()
    answered = conversation(
        BotUttered("Shall I cancel it?", data={"buttons": CONFIRM}),
        ActionExecuted("action_listen"),
        UserUttered("yes", {"name": "affirm"}),
        BotUttered("Done."),
    )
    assert intent(parse(processor, "/affirm", answered)) is None
    restarted = conversation(
        BotUttered("Shall I cancel it?", data={"buttons": CONFIRM}),
        ActionExecuted("action_session_start"),
        SessionStarted(),
        ActionExecuted("action_listen"),
    )
    assert intent(parse(processor, "/affirm", restarted)) is None
    assert intent(parse(processor, "/affirm", conversation())) is None


def test_all_bot_messages_of_the_turn_count() -> None:
    tracker = conversation(
        BotUttered("Thanks.", data={"buttons": RATINGS[:1]}),
        ActionExecuted("utter_x"),
        BotUttered("And?", data={"buttons": [{"title": "odd", "payload": 3}, "x"]}),
        BotUttered("Sure?", data={"buttons": CONFIRM}),
    )
    assert offered_payloads(tracker) == {
        '/rate{"rating": "1"}',
        "/affirm",
        "/deny",
    }
    assert offered_payloads(None) == set()


def test_gated_text_keeps_plain_messages() -> None:
    tracker = asking(*CONFIRM)
    assert gated_text("where is my order", tracker) == "where is my order"
    assert gated_text("/affirm", tracker) == "/affirm"
    assert gated_text("/affirm please", tracker) == "affirm please"
    assert gated_text(None, tracker) is None


def test_install_is_idempotent(processor: MessageProcessor) -> None:
    stock = MessageProcessor.__dict__["_parse_message_with_graph"]
    install_payload_gate()
    install_payload_gate()
    assert MessageProcessor._parse_message_with_graph is gated_parse
    assert payload_gate._stock_parse is stock
