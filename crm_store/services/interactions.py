"""Contact history: append interactions idempotently, read timelines and transcripts."""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from crm_store.db import dialect_insert
from crm_store.errors import InvalidInput
from crm_store.models import AUTHORS, CHANNELS, DIRECTIONS, Interaction, utcnow

MAX_PAGE_SIZE = 200
MAX_TEXT_LENGTH = 20_000


@dataclass(frozen=True)
class NewInteraction:
    """One contact-history entry to append; ``event_id`` makes the write idempotent."""

    event_id: str
    channel: str
    direction: str
    author: str
    text: str | None = None
    customer_id: str | None = None
    conversation_id: str | None = None
    intent: str | None = None
    confidence: float | None = None
    occurred_at: dt.datetime | None = None
    meta: dict[str, Any] | None = None

    def validated_row(self) -> dict[str, Any]:
        """Return the row to insert, or raise ``InvalidInput`` naming the bad field."""
        if not self.event_id or len(self.event_id) > 128:
            raise InvalidInput("event_id is required (at most 128 characters)")
        if self.channel not in CHANNELS:
            raise InvalidInput(f"unknown channel {self.channel!r}")
        if self.direction not in DIRECTIONS:
            raise InvalidInput(f"direction must be one of {DIRECTIONS}")
        if self.author not in AUTHORS:
            raise InvalidInput(f"author must be one of {AUTHORS}")
        if self.confidence is not None and not 0.0 <= self.confidence <= 1.0:
            raise InvalidInput("confidence must be between 0 and 1")
        text = self.text
        if text is not None and len(text) > MAX_TEXT_LENGTH:
            text = text[:MAX_TEXT_LENGTH]
        occurred = self.occurred_at or utcnow()
        if occurred.tzinfo is not None:
            occurred = occurred.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return {
            "event_id": self.event_id,
            "customer_id": self.customer_id,
            "conversation_id": self.conversation_id,
            "channel": self.channel,
            "direction": self.direction,
            "author": self.author,
            "text": text,
            "intent": self.intent,
            "confidence": self.confidence,
            "occurred_at": occurred,
            "meta": dict(self.meta or {}),
        }


# One page per executemany keeps ``rowcount`` exact on every driver.
INSERT_PAGE_SIZE = 500


def append_interactions(session: Session, *, items: list[NewInteraction]) -> int:
    """Insert interactions, skipping event ids already stored; return rows inserted.

    Uses the database's native ``ON CONFLICT DO NOTHING`` on the unique
    ``event_id``, so concurrent writers and re-delivered events never duplicate
    and never fail on each other. The rows go as one executemany of a statement
    that SQLAlchemy compiles once per process (a multi-row ``VALUES`` would be
    recompiled for every batch size: ~0.5 ms per row in the broker's profile).
    """
    if not items:
        return 0
    rows = [item.validated_row() for item in items]
    statement = _insert_ignoring_duplicates(dialect_insert(session))
    # The ORM attribute is ``meta``; the column is named ``metadata``.
    values = [
        {**{k: v for k, v in r.items() if k != "meta"}, "metadata": r["meta"]}
        for r in rows
    ]
    inserted = 0
    for start in range(0, len(values), INSERT_PAGE_SIZE):
        result = session.execute(statement, values[start : start + INSERT_PAGE_SIZE])
        inserted += max(result.rowcount or 0, 0)
    return inserted


@cache
def _insert_ignoring_duplicates(insert: Any) -> Any:
    return insert(Interaction.__table__).on_conflict_do_nothing(
        index_elements=["event_id"]
    )


def append_interaction(session: Session, *, item: NewInteraction) -> bool:
    """Insert one interaction; return False when its event id was already stored."""
    return append_interactions(session, items=[item]) == 1


@dataclass(frozen=True)
class TimelinePage:
    """One page of a timeline, newest first; pass ``next_cursor`` for the next."""

    items: list[Interaction]
    next_cursor: str | None


def _encode_cursor(row: Interaction) -> str:
    raw = f"{row.occurred_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        stamp, _, row_id = base64.urlsafe_b64decode(padded).decode().partition("|")
        return dt.datetime.fromisoformat(stamp), int(row_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("malformed cursor") from exc


def timeline(
    session: Session, *, customer_id: str, limit: int = 50, cursor: str | None = None
) -> TimelinePage:
    """Return a customer's contact history on every channel, newest first.

    Keyset pagination on (occurred_at, id): rows that arrive while a client pages
    never shift the pages it has not read yet, so nothing is skipped or repeated.
    """
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    stmt = select(Interaction).where(Interaction.customer_id == customer_id)
    if cursor:
        stamp, row_id = _decode_cursor(cursor)
        stmt = stmt.where(
            or_(
                Interaction.occurred_at < stamp,
                and_(Interaction.occurred_at == stamp, Interaction.id < row_id),
            )
        )
    stmt = stmt.order_by(Interaction.occurred_at.desc(), Interaction.id.desc())
    rows = list(session.execute(stmt.limit(limit + 1)).scalars())
    has_more = len(rows) > limit
    rows = rows[:limit]
    return TimelinePage(rows, _encode_cursor(rows[-1]) if has_more and rows else None)


def transcript(session: Session, *, conversation_id: str) -> list[Interaction]:
    """Return every interaction of one conversation, oldest first."""
    stmt = (
        select(Interaction)
        .where(Interaction.conversation_id == conversation_id)
        .order_by(Interaction.occurred_at, Interaction.id)
    )
    return list(session.execute(stmt).scalars())
