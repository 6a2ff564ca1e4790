"""Extra detail given with a request: "I want to return order X, it doesn't fit".

The part after the request (after a comma, colon, dash or "because") is the
answer to the question the task's form would ask next, so the form does not
ask it again.
"""

from __future__ import annotations

import re

# The form slot each task's first question fills.
DETAIL_SLOTS = {
    "start_return": "return_reason",
    "report_damage": "damage_description",
    "open_ticket": "ticket_description",
}
_SPLIT = re.compile(
    r"\s*(?:[,;:]|\s-\s|\.\s|\bbecause\b|\bcause\b|\bcoz\b|\bsince\b)\s*",
    re.IGNORECASE,
)
_FILLER = re.compile(
    r"\b(please|pls|plz|thanks|thank you|thx|asap|as soon as possible|now|today|"
    r"order|number|no\.?|nr|the|my|it|is|for|of)\b",
    re.IGNORECASE,
)
_ORDERISH = re.compile(r"#?\b[Aa]?[\s\-]?\d{5}\b")
MIN_WORDS = 2
MIN_SINGLE_WORD = 4  # "broken", "faulty": a reason on its own
MAX_LENGTH = 500


def detail_for_task(task: str | None, text: object) -> tuple[str, str] | None:
    """Return ``(slot, detail)`` when the request holds the form's answer, else None."""
    slot = DETAIL_SLOTS.get(task or "")
    if slot is None or not isinstance(text, str) or text.startswith("/"):
        return None
    parts = _SPLIT.split(text.strip(), maxsplit=1)
    if len(parts) < 2:
        return None
    detail = parts[1].strip(" .!?")
    meaningful = _FILLER.sub(" ", _ORDERISH.sub(" ", detail)).split()
    one_word = len(meaningful) == 1 and len(meaningful[0]) >= MIN_SINGLE_WORD
    if len(meaningful) < MIN_WORDS and not one_word:
        return None
    return slot, detail[:MAX_LENGTH]
