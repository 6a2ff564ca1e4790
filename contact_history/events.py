"""What the contact history keeps of a Rasa tracker event, as plain dicts.

The broker filters with ``is_recorded`` before queueing; the recorder uses
``event_id_for`` (idempotent writes) and ``occurred_at`` (store timestamps).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

GOODBYE_INTENT = "goodbye"
CUSTOMER_SLOT = "customer_id"
ESCALATED_SLOT = "escalated"
TRACKED_SLOTS = (CUSTOMER_SLOT, ESCALATED_SLOT)
MESSAGE_EVENTS = ("user", "bot")


def event_id_for(event: dict[str, Any]) -> str:
    """Return a stable id: the user message id, else a hash of the event's content.

    Re-delivering the same event yields the same id, so writes stay idempotent.
    """
    message_id = event.get("message_id")
    if event.get("event") == "user" and message_id:
        return str(message_id)[:128]
    raw = "|".join(
        [
            str(event.get("sender_id")),
            str(event.get("event")),
            repr(event.get("timestamp")),
            str(event.get("text")),
        ]
    )
    return f"{event.get('event')}-{hashlib.sha256(raw.encode()).hexdigest()[:40]}"


def is_recorded(event: dict[str, Any]) -> bool:
    """True for the events the recorder uses: messages and the tracked slots.

    The broker drops the others (actions, featurization, session and loop
    events) before queueing, so they cost no pickling and no writer time.
    """
    kind = event.get("event")
    if kind == "slot":
        return event.get("name") in TRACKED_SLOTS
    return kind in MESSAGE_EVENTS


def occurred_at(event: dict[str, Any]) -> dt.datetime:
    """The event's timestamp as naive UTC (now if it has none)."""
    stamp = event.get("timestamp")
    moment = (
        dt.datetime.fromtimestamp(float(stamp), tz=dt.timezone.utc)
        if stamp is not None
        else dt.datetime.now(dt.timezone.utc)
    )
    return moment.replace(tzinfo=None)
