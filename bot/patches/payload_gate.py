"""Accept ``/intent{json}`` messages only when the bot offered that exact payload.

Wraps Rasa 3.6.21's ``MessageProcessor._parse_message_with_graph`` (the NLU call
of ``parse_message``, the narrowest point that has the tracker) with
``gated_parse``.

Stock Rasa treats any message starting with ``/`` as a ready-made parse result
(``RegexMessageHandler`` -> ``YAMLStoryReader.unpack_regex_message``): the
customer picks the intent and fills entities, hence slots, with any JSON type
on any turn (``/affirm{"order_number":"<another order>"}`` at a cancellation
confirmation; ``{"order_number": {}}`` crashed the action). Button payloads are
the only legitimate source of such messages, so a message starting with ``/``
is parsed as a payload only when it equals (exact string) a payload of the
buttons or quick replies the bot sent since the customer's previous message
(in the current session). Any other one is parsed as plain text: its leading
slashes (and blanks) are removed before NLU, so the regex parser never sees it
and its JSON yields no entities; the recorded user text stays what was typed.

This includes Rasa's own ``/restart``, ``/session_start`` and ``/back``: they
reset or rewind the conversation (verification and task state included), and
the REST channel does not send them by itself, so a customer gets them only
when a button offers them. Sessions still start by Rasa's session expiry.
A ``SessionStarted`` or ``Restarted`` event ends what was offered. Parsing
through an external NLU server (``http_interpreter``) is not gated (unused here).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

INTENT_PREFIX = "/"  # rasa.shared.constants.INTENT_MESSAGE_PREFIX
OFFER_KEYS = ("buttons", "quick_replies")

_stock_parse: Callable[..., dict[str, Any]] | None = None


def offered_payloads(tracker: Any) -> set[str]:
    """Payloads of the bot's buttons since the last user message of the session."""
    from rasa.shared.core.events import (
        BotUttered,
        Restarted,
        SessionStarted,
        UserUttered,
    )

    offered: set[str] = set()
    for event in reversed(tracker.events if tracker is not None else ()):
        if isinstance(event, (UserUttered, SessionStarted, Restarted)):
            break
        if not isinstance(event, BotUttered):
            continue
        for key in OFFER_KEYS:
            choices = (event.data or {}).get(key)
            for choice in choices if isinstance(choices, list) else ():
                payload = choice.get("payload") if isinstance(choice, dict) else None
                if isinstance(payload, str):
                    offered.add(payload.strip())
    return offered


def plain_text(text: str) -> str:
    """``text`` without its leading slashes and blanks (the text NLU should see)."""
    rest = text.lstrip()
    while rest.startswith(INTENT_PREFIX):
        rest = rest[len(INTENT_PREFIX) :].lstrip()
    return rest


def gated_text(text: str | None, tracker: Any) -> str | None:
    """The text to parse for a customer's ``text`` (unchanged unless refused)."""
    if not isinstance(text, str) or not text.lstrip().startswith(INTENT_PREFIX):
        return text
    if text.strip() in offered_payloads(tracker):
        return text
    # Only slashes and blanks: nothing the regex parser could read; keep as is.
    return plain_text(text) or text


def gated_parse(
    self: Any,
    message: Any,
    tracker: Any,
    only_output_properties: bool = True,
) -> dict[str, Any]:
    """``_parse_message_with_graph`` with unoffered payloads parsed as text."""
    assert _stock_parse is not None, "install_payload_gate() first"
    text = gated_text(message.text, tracker)
    if text != message.text:
        message = copy.copy(message)
        message.text = text
    return _stock_parse(self, message, tracker, only_output_properties)


def install_payload_gate() -> None:
    """Patch ``MessageProcessor._parse_message_with_graph`` (idempotent)."""
    global _stock_parse
    from rasa.core.processor import MessageProcessor

    if MessageProcessor._parse_message_with_graph is gated_parse:
        return
    _stock_parse = MessageProcessor._parse_message_with_graph
    MessageProcessor._parse_message_with_graph = gated_parse  # type: ignore[method-assign]
