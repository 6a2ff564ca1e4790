"""Rasa's own warnings and structured logs never carry what the customer typed."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator

import pytest
import structlog
from rasa.shared.core.slots import CategoricalSlot
from rasa.shared.core.training_data.story_reader.yaml_story_reader import (
    YAMLStoryReader,
)
from rasa.shared.nlu.training_data.message import Message

from bot import log_privacy

MARKER = "MARKER-123"
# Malformed payloads: entities not closed; no intent at all; text after the JSON.
PAYLOADS = [
    f'/check_order_status{{"order_number": "A1" {MARKER}',
    f"/{{{MARKER}",
    f'/check_order_status{{"order_number": "A1"}} {MARKER}',
]


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """structlog printing JSON to a buffer; the previous configuration restored."""
    saved = structlog.get_config()
    buffer = io.StringIO()
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(buffer),
        cache_logger_on_first_use=False,
    )
    try:
        yield buffer
    finally:
        structlog.configure(**saved)


def unpack(text: str) -> Message:
    return YAMLStoryReader.unpack_regex_message(Message({"text": text}), domain=None)


def shown(caught: list[warnings.WarningMessage]) -> str:
    return "\n".join(str(w.message) for w in caught)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_stock_rasa_logs_the_payload_text(
    payload: str, log_output: io.StringIO
) -> None:
    """The leak this module closes (so the tests below can fail)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        unpack(payload)
    assert MARKER in shown(caught) + log_output.getvalue()


@pytest.mark.parametrize("payload", PAYLOADS)
def test_installed_filters_keep_payload_text_out(
    payload: str, log_output: io.StringIO
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        log_privacy.install()
        log_privacy.install()  # idempotent
        message = unpack(payload)
    assert MARKER not in shown(caught)
    assert MARKER not in log_output.getvalue()
    assert message.get("text") == payload  # what the bot does is unchanged


def test_structlog_event_is_kept_but_redacted(log_output: io.StringIO) -> None:
    with warnings.catch_warnings():
        log_privacy.install()
        unpack(f"/{{{MARKER}")
    line = log_output.getvalue()
    assert "message.parsing.failed" in line
    assert log_privacy.REDACTED in line and MARKER not in line


def test_unknown_categorical_value_is_not_shown() -> None:
    slot = CategoricalSlot("contact_field", mappings=[], values=["email", "phone"])
    slot.value = MARKER
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        slot.as_feature()
        stock = shown(caught)
        log_privacy.install()
        slot.as_feature()
        after = shown(caught)[len(stock) :]
    assert MARKER in stock
    assert MARKER not in after


def test_redaction_touches_only_text_fields() -> None:
    event = {"event": "x", "user_text": "secret", "text": "t", "sender_count": 3}
    assert log_privacy.redact_text_fields(None, "warning", event) == {
        "event": "x",
        "user_text": log_privacy.REDACTED,
        "text": log_privacy.REDACTED,
        "sender_count": 3,
    }
