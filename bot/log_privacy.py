"""Keep what customers type out of the Rasa server's log, Rasa's own warnings included.

Rasa 3.6 logs customer text in two places even at INFO level:

- ``YAMLStoryReader.unpack_regex_message`` (run by ``RegexMessageHandler`` on
  every message starting with ``/``) raises ``warnings`` such as
  ``Failed to parse arguments in line '<the whole message>'`` for malformed
  payloads, and logs ``message.parsing.failed`` with ``user_text`` through
  structlog when the message does not match at all;
- a categorical slot set to an unknown value warns with that value.

``install()`` drops those warnings (they name nothing but the customer's text;
the turn itself goes on as Rasa decides) and adds a structlog processor that
replaces every text-carrying field (the keys Rasa's own anonymizer knows) with
``<redacted>``. Dropping the warnings also keeps Python's "warn once" registry
from growing by one entry per distinct malformed message.
"""

from __future__ import annotations

import warnings
from collections.abc import MutableMapping
from typing import Any

import structlog

REDACTED = "<redacted>"
# Warnings whose text embeds what the customer typed (regexes, matched at the start).
CUSTOMER_TEXT_WARNINGS = (
    r"Failed to parse arguments in line",
    r"Categorical slot '[^']*' is set to a value",
)
# Event-dict keys that can carry message text or slot values (after
# rasa.utils.log_utils._anonymizer).
TEXT_KEYS = frozenset(
    {
        "text",
        "response_text",
        "user_text",
        "slot_values",
        "parse_data_text",
        "parse_data_entities",
        "prediction_events",
        "tracker_latest_message",
        "prefilled_slots",
        "message",
        "response",
        "slot_candidates",
        "rasa_event",
        "rasa_events",
        "tracker_states",
        "current_states",
        "old_states",
        "successes",
        "current_entity",
        "next_entity",
        "states",
        "entity",
        "token_text",
        "user_message",
        "json_message",
    }
)


def redact_text_fields(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace text-carrying fields with ``<redacted>`` (a structlog processor)."""
    for key in TEXT_KEYS.intersection(event_dict):
        event_dict[key] = REDACTED
    return event_dict


def install() -> None:
    """Install the warning filters and the structlog processor (idempotent).

    Call after Rasa configured logging (``configure_logging_and_warnings`` and
    ``configure_structlog``): the filters go in front of Rasa's own, the
    processor in front of the configured chain. The chain is changed in place,
    so loggers structlog has already cached use it too.
    """
    for pattern in CUSTOMER_TEXT_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    processors = structlog.get_config()["processors"]
    if redact_text_fields not in processors:
        processors.insert(0, redact_text_fields)
