"""Numbered choices on text-only channels (SMS, voice): remember, then resolve a digit.

A channel without buttons shows the bot's buttons as a numbered list and
remembers them per tracker key (table ``channel_choices``), in the store, so the
customer's "2" is understood by whichever process receives it.
"""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput
from crm_store.models import ChannelChoices, utcnow
from crm_store.services.history import stored_tracker_key

NUMBER = re.compile(r"\s*#?\s*(\d{1,2})\s*[.)]?\s*")
MAX_CHOICES = 10


def _usable(buttons: object) -> list[dict]:
    if not isinstance(buttons, list):
        return []
    usable = []
    for button in buttons[:MAX_CHOICES]:
        if not isinstance(button, dict):
            continue
        title, payload = button.get("title"), button.get("payload")
        if isinstance(title, str) and isinstance(payload, str) and payload.strip():
            usable.append({"title": title.strip(), "payload": payload.strip()})
    return usable


def remember_choices(
    session: Session,
    *,
    tracker_key: str,
    buttons: list[dict] | None,
    at: dt.datetime | None = None,
) -> list[dict]:
    """Store the buttons just offered (none: forget the old ones); return them."""
    if not tracker_key:
        raise InvalidInput("a tracker key is required")
    key = stored_tracker_key(tracker_key)
    usable = _usable(buttons)
    row = session.get(ChannelChoices, key)
    if not usable:
        if row is not None:
            session.delete(row)
            session.flush()
        return []
    if row is None:
        session.add(
            ChannelChoices(tracker_key=key, buttons=usable, updated_at=at or utcnow())
        )
    else:
        row.buttons = usable
        row.updated_at = at or utcnow()
    session.flush()
    return usable


def choice_payload(session: Session, *, tracker_key: str, text: str) -> str | None:
    """The payload of choice number ``text`` ("2", "2.", "#2") offered last, or None."""
    match = NUMBER.fullmatch(text or "")
    if match is None or not tracker_key:
        return None
    row = session.get(ChannelChoices, stored_tracker_key(tracker_key))
    if row is None:
        return None
    index = int(match.group(1)) - 1
    buttons = _usable(row.buttons)
    return buttons[index]["payload"] if 0 <= index < len(buttons) else None


def numbered(buttons: list[dict] | None) -> str:
    """The buttons as lines "1. Yes" ... for a text-only channel ("" if none)."""
    return "\n".join(f"{n}. {b['title']}" for n, b in enumerate(_usable(buttons), 1))
