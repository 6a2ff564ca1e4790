"""What the contact history keeps of a Rasa tracker event, as plain dicts.

The broker filters with ``is_recorded`` and keeps only ``recorded_part`` of
each event before queueing; the recorder uses ``event_id_for`` (idempotent
writes) and ``occurred_at`` (store timestamps).
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
COMMON_KEYS = ("sender_id", "event", "timestamp")
USER_KEYS = ("text", "message_id", "input_channel")
BOT_META_KEYS = ("utter_action", "fallback")
# Customer-message metadata set by a channel, never by the client (channels.text
# lets only "identity" through from clients): a mail's subject and attachments.
CHANNEL_META_KEYS = ("subject", "attachments")


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
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{event.get('event')}-{digest[:40]}"


# Rasa's text of an externally triggered intent (UserUttered.create_external).
EXTERNAL_PREFIX = "EXTERNAL: "


def is_external(event: dict[str, Any]) -> bool:
    """True for a user event Rasa made for a triggered intent (no message id)."""
    return (
        event.get("event") == "user"
        and not event.get("message_id")
        and str(event.get("text") or "").startswith(EXTERNAL_PREFIX)
    )


def is_recorded(event: dict[str, Any]) -> bool:
    """True for the events the recorder uses: messages and the tracked slots.

    The broker drops the others (actions, featurization, session and loop
    events) before queueing, so they cost no pickling and no writer time.
    """
    kind = event.get("event")
    if kind == "slot":
        return event.get("name") in TRACKED_SLOTS
    if is_external(event):
        return False  # an intent triggered by us (e.g. the hand-back), not typed
    return kind in MESSAGE_EVENTS


def recorded_part(event: dict[str, Any]) -> dict[str, Any]:
    """The fields of an event the recorder reads (the rest is never queued).

    A user event's parse data (entities, rankings) and metadata, a bot
    event's other data: none of it is pickled for the writer, so client
    metadata of any size or depth never reaches the queue.
    """
    kind = event.get("event")
    part = {k: event[k] for k in COMMON_KEYS if k in event}
    if kind == "user":
        part.update({k: event[k] for k in USER_KEYS if k in event})
        intent = (event.get("parse_data") or {}).get("intent")
        if isinstance(intent, dict):
            part["parse_data"] = {
                "intent": {k: intent[k] for k in ("name", "confidence") if k in intent}
            }
        metadata = event.get("metadata")
        if isinstance(metadata, dict):
            kept = {k: metadata[k] for k in CHANNEL_META_KEYS if metadata.get(k)}
            if kept:
                part["metadata"] = kept
    elif kind == "bot":
        part["text"] = event.get("text")
        metadata = event.get("metadata")
        if isinstance(metadata, dict):
            part["metadata"] = {k: metadata[k] for k in BOT_META_KEYS if k in metadata}
        buttons = (event.get("data") or {}).get("buttons")
        if isinstance(buttons, list):
            part["data"] = {
                "buttons": [
                    {"title": b.get("title")} for b in buttons if isinstance(b, dict)
                ]
            }
    else:
        part.update({k: event[k] for k in ("name", "value") if k in event})
    return part


def occurred_at(event: dict[str, Any]) -> dt.datetime:
    """The event's timestamp as naive UTC (now if it has none)."""
    stamp = event.get("timestamp")
    moment = (
        dt.datetime.fromtimestamp(float(stamp), tz=dt.timezone.utc)
        if stamp is not None
        else dt.datetime.now(dt.timezone.utc)
    )
    return moment.replace(tzinfo=None)
