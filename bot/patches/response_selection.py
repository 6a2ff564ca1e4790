"""Run the ResponseSelector only for messages that are retrieval questions.

Replaces Rasa 3.6's ``ResponseSelector.process`` with ``gated_process``, which
calls the stock method for retrieval-intent messages only.

Rasa's ``ResponseSelector`` predicts a response for every message, although the
prediction is only read when the message's intent is the selector's retrieval
intent (``faq`` here: ``utter_faq`` reads it, nothing else does). Measured cost
removed (profiling, docs/benchmarks.md): ~4.4 ms per non-FAQ message, a tenth of
a whole turn at the time.

``install_intent_gated_selection`` makes a selector that has a retrieval intent
skip messages whose top intent (set by DIETClassifier, earlier in the pipeline)
is something else; those messages carry no ``response_selector`` property, which
Rasa reads as "no retrieval response". What the bot answers does not change.
The Rasa server started by ``bot.server`` installs it; training and
``rasa test`` use the stock component (a subclass in ``config.yml`` would trip
Rasa's name-based checks in ``rasa test nlu`` and the recipe validator).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_stock_process: Callable[[Any, list[Any]], list[Any]] | None = None


def top_intent(message: Any) -> str | None:
    """The name of a Rasa ``Message``'s top intent, if it has one."""
    intent = message.get("intent") or {}
    return intent.get("name") if isinstance(intent, dict) else None


def gated_process(self: Any, messages: list[Any]) -> list[Any]:
    """``ResponseSelector.process`` restricted to retrieval-intent messages."""
    assert _stock_process is not None, "install_intent_gated_selection() first"
    if not self.retrieval_intent:
        return _stock_process(self, messages)
    wanted = [m for m in messages if top_intent(m) == self.retrieval_intent]
    if wanted:
        _stock_process(self, wanted)
    return messages


def install_intent_gated_selection() -> None:
    """Patch ``ResponseSelector.process`` in this process (idempotent)."""
    global _stock_process
    from rasa.nlu.selectors.response_selector import ResponseSelector

    if ResponseSelector.process is gated_process:
        return
    _stock_process = ResponseSelector.process
    ResponseSelector.process = gated_process  # type: ignore[method-assign]
