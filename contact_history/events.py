"""What the contact history keeps of a Rasa tracker event, as plain dicts.

The broker filters with ``is_recorded`` and keeps only ``recorded_part`` of
each event before queueing; the recorder uses ``event_id_for`` (idempotent
writes), ``occurred_at`` (store timestamps), ``step_of`` (the compact story
steps kept in a message row's ``meta["steps"]``) and ``entities_of``.

Steps are what a test story needs between messages: ``{"action": name}``
(not ``action_listen`` / ``action_session_start``), ``{"slot": name, "value":
v}`` and ``{"active_loop": name_or_None}``. Their values are bounded by
``compact_value``: a string over ``MAX_VALUE_CHARS`` characters, or another
value over ``MAX_VALUE_CHARS`` characters of compact JSON, becomes a string cut
there and ending in "…"; a shorter value nested deeper than ``MAX_VALUE_DEPTH``
becomes its JSON text; a value that is not JSON becomes "…".
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from typing import Any

from channels.text import depth_exceeds

GOODBYE_INTENT = "goodbye"
CUSTOMER_SLOT = "customer_id"
ESCALATED_SLOT = "escalated"
TRACKED_SLOTS = (CUSTOMER_SLOT, ESCALATED_SLOT)
MESSAGE_EVENTS = ("user", "bot")
STEP_EVENTS = ("action", "slot", "active_loop")
# Rasa runs these around every turn and session: no part of a story.
UNRECORDED_ACTIONS = ("action_listen", "action_session_start")
MAX_ENTITIES = 20
ENTITY_KEYS = ("entity", "value", "start", "end")
MAX_VALUE_CHARS = 500
# A step's value sits at depth 4 of a row's meta ({"steps": [{"value": …}]}):
# two more levels keep the meta within the recorder's depth limit of 5.
MAX_VALUE_DEPTH = 2
ELLIPSIS = "…"
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
    """True for the events the recorder uses: messages, slots, actions, loops.

    The broker drops the others (featurization, session events,
    ``action_listen``) before queueing, so they cost no pickling and no writer
    time.
    """
    kind = event.get("event")
    if kind == "slot" or kind == "active_loop":
        return True
    if kind == "action":
        name = event.get("name")
        return isinstance(name, str) and bool(name) and name not in UNRECORDED_ACTIONS
    if is_external(event):
        return False  # an intent triggered by us (e.g. the hand-back), not typed
    return kind in MESSAGE_EVENTS


def is_step(event: dict[str, Any]) -> bool:
    """True for a recorded event that is a story step, not a message."""
    return event.get("event") in STEP_EVENTS


def _json_head(value: Any, limit: int) -> str | None:
    """The compact JSON of ``value`` up to at least ``limit`` characters.

    Encodes lazily and stops once ``limit`` is reached, so a huge value costs
    no more than its head. None if the value is not plain JSON (or nests too
    deep for the encoder).
    """
    encoder = json.JSONEncoder(
        ensure_ascii=False, separators=(",", ":"), allow_nan=False
    )
    parts: list[str] = []
    size = 0
    try:
        for chunk in encoder.iterencode(value):
            parts.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    except (TypeError, ValueError, RecursionError):
        return None
    return "".join(parts)


def compact_value(value: Any) -> Any:
    """A slot or entity value bounded for the contact history (module docstring).

    Idempotent: a compacted value stays as it is.
    """
    if isinstance(value, str):
        if len(value) <= MAX_VALUE_CHARS:
            return value
        return value[: MAX_VALUE_CHARS - 1] + ELLIPSIS
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    head = _json_head(value, MAX_VALUE_CHARS + 1)
    if head is None:
        return ELLIPSIS
    if len(head) > MAX_VALUE_CHARS:
        return head[: MAX_VALUE_CHARS - 1] + ELLIPSIS
    return head if depth_exceeds(value, MAX_VALUE_DEPTH) else value


def step_of(event: dict[str, Any]) -> dict[str, Any]:
    """The compact story step of an action, slot or active_loop event."""
    kind = event.get("event")
    if kind == "action":
        return {"action": event.get("name")}
    if kind == "slot":
        return {"slot": event.get("name"), "value": compact_value(event.get("value"))}
    name = event.get("name")
    return {"active_loop": name if isinstance(name, str) and name else None}


def entities_of(event: dict[str, Any]) -> list[dict[str, Any]]:
    """A user event's NLU entities as entity/value/start/end (at most 20)."""
    entities = (event.get("parse_data") or {}).get("entities")
    if not isinstance(entities, list):
        return []
    kept = []
    for entity in entities[:MAX_ENTITIES]:
        if isinstance(entity, dict) and entity.get("entity"):
            item = {k: entity[k] for k in ENTITY_KEYS if k in entity}
            if "value" in item:
                item["value"] = compact_value(item["value"])
            kept.append(item)
    return kept


def recorded_part(event: dict[str, Any]) -> dict[str, Any]:
    """The fields of an event the recorder reads (the rest is never queued).

    A user event's parse data (but the intent and the reduced entities) and
    metadata, a bot event's other data: none of it is pickled for the writer,
    so client metadata of any size or depth never reaches the queue. Slot
    values are compacted (``compact_value``), but for the tracked slots,
    whose effect needs the real value.
    """
    kind = event.get("event")
    part = {k: event[k] for k in COMMON_KEYS if k in event}
    if kind == "user":
        part.update({k: event[k] for k in USER_KEYS if k in event})
        parse_data: dict[str, Any] = {}
        intent = (event.get("parse_data") or {}).get("intent")
        if isinstance(intent, dict):
            parse_data["intent"] = {
                k: intent[k] for k in ("name", "confidence") if k in intent
            }
        entities = entities_of(event)
        if entities:
            parse_data["entities"] = entities
        if parse_data:
            part["parse_data"] = parse_data
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
    elif kind == "slot":
        name = event.get("name")
        part["name"] = name
        value = event.get("value")
        part["value"] = value if name in TRACKED_SLOTS else compact_value(value)
    else:  # action, active_loop
        part["name"] = event.get("name")
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
