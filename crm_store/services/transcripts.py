r"""Transcript search and the review view of one conversation (manager review).

``search_conversations`` filters conversations by date, channel, intent, outcome,
CSAT, agent, customer, value tier and words in their messages; every filter is an
``EXISTS`` subquery or a join, and pages are keyset-paginated newest first on
``(started_at, id)``. Words are searched per word, each in some message of the
conversation: on PostgreSQL with ``to_tsvector('simple', coalesce(text, '')) @@
plainto_tsquery('simple', word)`` (the expression of the GIN index of migration
0007: case-insensitive, no stemming), on SQLite with a case-insensitive ``LIKE``
(``%``, ``_`` and ``\`` taken literally; SQLite folds the case of ASCII only).

``transcript`` returns everything a reviewer needs on one page: the conversation,
the customer, every line with the bot actions run before it, the handoffs with
their packets and notes, and the scorecards.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import (
    and_,
    exists,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from crm_store.errors import InvalidInput, NotFound
from crm_store.models import (
    CHANNELS,
    Conversation,
    Customer,
    CustomerScore,
    Handoff,
    HandoffNote,
    Interaction,
    Scorecard,
    StaffUser,
)
from crm_store.services.console_views import message_view
from crm_store.services.moments import parse_moment
from crm_store.services.queue import VALUE_TIERS
from crm_store.services.scorecards import scorecards_of

# The filter vocabularies, for forms (the console reads them from here).
FILTER_CHANNELS = CHANNELS
FILTER_TIERS = VALUE_TIERS

OUTCOME_FILTERS = ("self_served", "escalated", "abandoned", "open")
CSAT_FILTERS = ("1", "2", "3", "4", "5", "none", "positive", "negative")
FILTER_KEYS = (
    "from",
    "to",
    "channel",
    "intent",
    "outcome",
    "csat",
    "agent",
    "customer",
    "tier",
    "q",
)
MAX_PAGE = 200
MAX_QUERY_CHARS = 200
MAX_QUERY_WORDS = 8
MAX_DATE_CHARS = 40
FIRST_TEXT_CHARS = 160
# Longest accepted value per parameter (the column widths of the store).
MAX_LENGTHS = {"intent": 100, "agent": 64, "customer": 32}
_LIKE_SPECIALS = re.compile(r"([\\%_])")


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat() + "Z"


@dataclass(frozen=True)
class TranscriptFilters:
    """Validated search filters (see ``parse_filters``); None means "any".

    ``start``/``end`` bound ``started_at`` as ``[start, end)``; ``csat`` is
    "1".."5", "none" (not given), "positive" (4-5) or "negative" (1-3);
    ``agent`` is the username of a staff member who claimed a handoff of the
    conversation; ``text`` the search words, separated by single spaces.
    """

    start: dt.datetime | None = None
    end: dt.datetime | None = None
    channel: str | None = None
    intent: str | None = None
    outcome: str | None = None
    csat: str | None = None
    agent: str | None = None
    customer_id: str | None = None
    value_tier: str | None = None
    text: str | None = None

    @property
    def words(self) -> list[str]:
        """The search words (empty: no text filter)."""
        return self.text.split() if self.text else []

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (datetimes as ISO 8601 with "Z")."""
        return {
            "start": _iso(self.start),
            "end": _iso(self.end),
            "channel": self.channel,
            "intent": self.intent,
            "outcome": self.outcome,
            "csat": self.csat,
            "agent": self.agent,
            "customer_id": self.customer_id,
            "value_tier": self.value_tier,
            "text": self.text,
        }


def _clean(params: Mapping[str, str | None], key: str) -> str | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{key} must be text")
    value = value.strip()
    return value or None


def _parse_moment(key: str, value: str, *, end: bool) -> dt.datetime:
    """A date (``end``: the whole day, so the next midnight) or an ISO datetime."""
    try:
        return parse_moment(value, end=end)
    except ValueError as exc:
        shown = f", not {value!r}" if len(value) <= MAX_DATE_CHARS else ""
        raise InvalidInput(
            f"{key} must be a date (YYYY-MM-DD) or an ISO datetime{shown}"
        ) from exc


def _choice(key: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is not None and value not in allowed:
        raise InvalidInput(f"{key} must be one of {', '.join(allowed)}")
    return value


def _search_text(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) > MAX_QUERY_CHARS:
        raise InvalidInput(f"q is at most {MAX_QUERY_CHARS} characters")
    words = value.split()
    if len(words) > MAX_QUERY_WORDS:
        raise InvalidInput(f"q is at most {MAX_QUERY_WORDS} words")
    return " ".join(words) or None


def parse_filters(params: Mapping[str, str | None]) -> TranscriptFilters:
    """Validate query parameters into filters; blank values mean "any".

    Keys: ``from``, ``to`` (YYYY-MM-DD or ISO datetime; ``to`` as a date is
    inclusive), ``channel``, ``intent``, ``outcome``, ``csat``, ``agent``,
    ``customer``, ``tier``, ``q``. Other keys are ignored (e.g. ``cursor``).

    Raises:
        InvalidInput: an unknown channel/outcome/csat/tier, a bad date, ``from``
            not before ``to``, or an over-long value; the message names the key.
    """
    values = {key: _clean(params, key) for key in FILTER_KEYS}
    for key, limit in MAX_LENGTHS.items():
        if values[key] is not None and len(values[key]) > limit:
            raise InvalidInput(f"{key} is at most {limit} characters")
    start = end = None
    if values["from"] is not None:
        start = _parse_moment("from", values["from"], end=False)
    if values["to"] is not None:
        end = _parse_moment("to", values["to"], end=True)
    if start is not None and end is not None and start >= end:
        raise InvalidInput("from must be before to")
    return TranscriptFilters(
        start=start,
        end=end,
        channel=_choice("channel", values["channel"], CHANNELS),
        intent=values["intent"],
        outcome=_choice("outcome", values["outcome"], OUTCOME_FILTERS),
        csat=_choice("csat", values["csat"], CSAT_FILTERS),
        agent=values["agent"],
        customer_id=values["customer"],
        value_tier=_choice("tier", values["tier"], VALUE_TIERS),
        text=_search_text(values["q"]),
    )


@dataclass(frozen=True)
class ConversationSummary:
    """One search result: the conversation with what a reviewer scans for."""

    id: str
    channel: str
    customer_id: str | None
    customer_name: str | None
    value_tier: str | None
    started_at: dt.datetime
    ended_at: dt.datetime | None
    status: str
    outcome: str | None
    csat: int | None
    agent: str | None  # claimer of the first claimed handoff
    messages: int  # interactions of the conversation
    first_customer_text: str | None  # at most 160 characters
    score: float | None  # average scorecard score, 0-100

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (datetimes as ISO 8601 with "Z")."""
        return {
            "id": self.id,
            "channel": self.channel,
            "customer_id": self.customer_id,
            "customer_name": self.customer_name,
            "value_tier": self.value_tier,
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
            "status": self.status,
            "outcome": self.outcome,
            "csat": self.csat,
            "agent": self.agent,
            "messages": self.messages,
            "first_customer_text": self.first_customer_text,
            "score": self.score,
        }


@dataclass(frozen=True)
class TranscriptPage:
    """One page of results, newest first; pass ``next_cursor`` for the next."""

    items: list[ConversationSummary]
    next_cursor: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "items": [item.as_dict() for item in self.items],
            "next_cursor": self.next_cursor,
        }


def _encode_cursor(started_at: dt.datetime, conversation_id: str) -> str:
    raw = json.dumps([started_at.isoformat(), conversation_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        if len(cursor) > 400:
            raise ValueError("too long")
        padded = cursor + "=" * (-len(cursor) % 4)
        stamp, conversation_id = json.loads(
            base64.urlsafe_b64decode(padded.encode("ascii"))
        )
        if not isinstance(stamp, str) or not isinstance(conversation_id, str):
            raise ValueError("wrong types")
        started_at = dt.datetime.fromisoformat(stamp)
        if started_at.tzinfo is not None or len(conversation_id) > 128:
            raise ValueError("not a cursor of ours")
        return started_at, conversation_id
    except (ValueError, TypeError, UnicodeError, binascii.Error) as exc:
        raise InvalidInput(
            "cursor is malformed; start again from the first page"
        ) from exc


def _like_pattern(word: str) -> str:
    return "%" + _LIKE_SPECIALS.sub(r"\\\1", word) + "%"


def _word_condition(dialect: str, word: str) -> ColumnElement:
    """An interaction of the conversation contains ``word``."""
    if dialect == "postgresql":
        # Exactly the indexed expression of migration 0007 (constant SQL text).
        vector = func.to_tsvector(
            literal_column("'simple'"),
            func.coalesce(Interaction.text, literal_column("''")),
        )
        matches = vector.bool_op("@@")(
            func.plainto_tsquery(literal_column("'simple'"), word)
        )
    else:
        matches = Interaction.text.ilike(_like_pattern(word), escape="\\")
    return exists().where(Interaction.conversation_id == Conversation.id, matches)


def _csat_condition(csat: str) -> ColumnElement:
    if csat == "none":
        return Conversation.csat.is_(None)
    if csat == "positive":
        return Conversation.csat >= 4
    if csat == "negative":
        return and_(Conversation.csat >= 1, Conversation.csat <= 3)
    if csat in CSAT_FILTERS:
        return Conversation.csat == int(csat)
    raise InvalidInput(f"csat must be one of {', '.join(CSAT_FILTERS)}")


def _outcome_condition(outcome: str) -> ColumnElement:
    if outcome == "open":
        return Conversation.status == "open"
    if outcome in OUTCOME_FILTERS:
        return Conversation.outcome == outcome
    raise InvalidInput(f"outcome must be one of {', '.join(OUTCOME_FILTERS)}")


def _conditions(filters: TranscriptFilters, dialect: str) -> list[ColumnElement]:
    conditions: list[ColumnElement] = []
    if filters.start is not None:
        conditions.append(Conversation.started_at >= filters.start)
    if filters.end is not None:
        conditions.append(Conversation.started_at < filters.end)
    if filters.channel is not None:
        conditions.append(Conversation.channel == filters.channel)
    if filters.customer_id is not None:
        conditions.append(Conversation.customer_id == filters.customer_id)
    if filters.value_tier is not None:
        conditions.append(CustomerScore.value_tier == filters.value_tier)
    if filters.outcome is not None:
        conditions.append(_outcome_condition(filters.outcome))
    if filters.csat is not None:
        conditions.append(_csat_condition(filters.csat))
    if filters.intent is not None:
        conditions.append(
            exists().where(
                Interaction.intent == filters.intent,
                Interaction.conversation_id == Conversation.id,
            )
        )
    if filters.agent is not None:
        conditions.append(
            exists().where(
                Handoff.conversation_id == Conversation.id,
                StaffUser.id == Handoff.claimed_by,
                StaffUser.username == filters.agent,
            )
        )
    conditions.extend(_word_condition(dialect, word) for word in filters.words)
    return conditions


def _full_name(first: str | None, last: str | None) -> str | None:
    return " ".join(part for part in (first, last) if part) or None


def _message_counts(session: Session, ids: list[str]) -> dict[str, int]:
    rows = session.execute(
        select(Interaction.conversation_id, func.count())
        .where(Interaction.conversation_id.in_(ids))
        .group_by(Interaction.conversation_id)
    ).all()
    return {conversation_id: int(n) for conversation_id, n in rows}


def _first_customer_texts(session: Session, ids: list[str]) -> dict[str, str]:
    ranked = (
        select(
            Interaction.conversation_id.label("conversation_id"),
            # One character more than shown, to know whether it was cut.
            func.substr(Interaction.text, 1, FIRST_TEXT_CHARS + 1).label("text"),
            func.row_number()
            .over(
                partition_by=Interaction.conversation_id,
                order_by=(Interaction.occurred_at, Interaction.id),
            )
            .label("rank"),
        )
        .where(
            Interaction.conversation_id.in_(ids),
            Interaction.author == "customer",
            Interaction.text.is_not(None),
        )
        .subquery()
    )
    rows = session.execute(
        select(ranked.c.conversation_id, ranked.c.text).where(ranked.c.rank == 1)
    ).all()
    return {
        conversation_id: text
        if len(text) <= FIRST_TEXT_CHARS
        else text[: FIRST_TEXT_CHARS - 1] + "…"
        for conversation_id, text in rows
    }


def _first_agents(session: Session, ids: list[str]) -> dict[str, str]:
    ranked = (
        select(
            Handoff.conversation_id.label("conversation_id"),
            StaffUser.username.label("username"),
            func.row_number()
            .over(
                partition_by=Handoff.conversation_id,
                order_by=(Handoff.claimed_at, Handoff.id),
            )
            .label("rank"),
        )
        .join(StaffUser, StaffUser.id == Handoff.claimed_by)
        .where(Handoff.conversation_id.in_(ids))
        .subquery()
    )
    rows = session.execute(
        select(ranked.c.conversation_id, ranked.c.username).where(ranked.c.rank == 1)
    ).all()
    return dict(rows)


def _average_scores(session: Session, ids: list[str]) -> dict[str, float]:
    rows = session.execute(
        select(Scorecard.conversation_id, func.avg(Scorecard.score))
        .where(Scorecard.conversation_id.in_(ids))
        .group_by(Scorecard.conversation_id)
    ).all()
    return {conversation_id: float(avg) for conversation_id, avg in rows}


def search_conversations(
    session: Session,
    filters: TranscriptFilters,
    *,
    limit: int = 50,
    cursor: str | None = None,
) -> TranscriptPage:
    """Return a page of conversations matching ``filters``, newest first.

    Keyset pagination on ``(started_at, id)``: conversations that start while a
    reviewer pages never shift the pages not read yet. Message counts, first
    customer texts, agents and scores are read for the page's items only.

    Raises:
        InvalidInput: a limit outside 1..200 or a malformed cursor.
    """
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidInput(f"limit must be a whole number between 1 and {MAX_PAGE}")
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
    dialect = session.get_bind().dialect.name
    stmt = (
        select(
            Conversation,
            Customer.first_name,
            Customer.last_name,
            CustomerScore.value_tier,
        )
        .outerjoin(Customer, Customer.id == Conversation.customer_id)
        .outerjoin(CustomerScore, CustomerScore.customer_id == Conversation.customer_id)
        .where(*_conditions(filters, dialect))
    )
    if cursor:
        started_at, last_id = _decode_cursor(cursor)
        stmt = stmt.where(
            or_(
                Conversation.started_at < started_at,
                and_(Conversation.started_at == started_at, Conversation.id < last_id),
            )
        )
    stmt = stmt.order_by(Conversation.started_at.desc(), Conversation.id.desc())
    rows = session.execute(stmt.limit(limit + 1)).all()
    has_more = len(rows) > limit
    rows = rows[:limit]
    if not rows:
        return TranscriptPage([], None)
    ids = [row[0].id for row in rows]
    counts = _message_counts(session, ids)
    texts = _first_customer_texts(session, ids)
    agents = _first_agents(session, ids)
    scores = _average_scores(session, ids)
    items = [
        ConversationSummary(
            id=conversation.id,
            channel=conversation.channel,
            customer_id=conversation.customer_id,
            customer_name=_full_name(first, last),
            value_tier=tier,
            started_at=conversation.started_at,
            ended_at=conversation.ended_at,
            status=conversation.status,
            outcome=conversation.outcome,
            csat=conversation.csat,
            agent=agents.get(conversation.id),
            messages=counts.get(conversation.id, 0),
            first_customer_text=texts.get(conversation.id),
            score=scores.get(conversation.id),
        )
        for conversation, first, last, tier in rows
    ]
    last = items[-1]
    return TranscriptPage(
        items, _encode_cursor(last.started_at, last.id) if has_more else None
    )


@dataclass(frozen=True)
class TranscriptCustomer:
    """The conversation's customer with their value tier and churn band."""

    id: str
    name: str | None  # first and last name; None when not known (or erased)
    value_tier: str | None
    churn_band: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "id": self.id,
            "name": self.name,
            "value_tier": self.value_tier,
            "churn_band": self.churn_band,
        }


@dataclass(frozen=True)
class TranscriptLine:
    """One interaction: customer, bot, agent or system line."""

    id: int
    author: str
    direction: str
    text: str | None
    intent: str | None
    confidence: float | None
    occurred_at: dt.datetime
    staff: str | None  # username of the agent who wrote it
    actions: list[str] = field(default_factory=list)  # bot actions run before it

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``occurred_at`` as ISO 8601 with "Z")."""
        return {
            "id": self.id,
            "author": self.author,
            "direction": self.direction,
            "text": self.text,
            "intent": self.intent,
            "confidence": self.confidence,
            "occurred_at": _iso(self.occurred_at),
            "staff": self.staff,
            "actions": list(self.actions),
        }


class TranscriptNote(NamedTuple):
    """An internal note of a handoff: (staff, text, created_at)."""

    staff: str
    text: str
    created_at: dt.datetime


@dataclass(frozen=True)
class HandoffRecord:
    """A handoff of the conversation with its packet, agent and notes."""

    id: int
    reason: str
    status: str
    created_at: dt.datetime
    claimed_at: dt.datetime | None
    first_response_at: dt.datetime | None
    resolved_at: dt.datetime | None
    agent: str | None
    packet: dict
    resolution_note: str | None
    notes: list[TranscriptNote] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (datetimes as ISO 8601 with "Z")."""
        return {
            "id": self.id,
            "reason": self.reason,
            "status": self.status,
            "created_at": _iso(self.created_at),
            "claimed_at": _iso(self.claimed_at),
            "first_response_at": _iso(self.first_response_at),
            "resolved_at": _iso(self.resolved_at),
            "agent": self.agent,
            "packet": dict(self.packet),
            "resolution_note": self.resolution_note,
            "notes": [
                {"staff": n.staff, "text": n.text, "created_at": _iso(n.created_at)}
                for n in self.notes
            ],
        }


@dataclass(frozen=True)
class Transcript:
    """A conversation as a reviewer reads it: record, customer, lines, handoffs."""

    id: str
    tracker_key: str | None
    channel: str
    status: str
    outcome: str | None
    started_at: dt.datetime
    ended_at: dt.datetime | None
    csat: int | None
    customer: TranscriptCustomer | None
    messages: list[TranscriptLine]
    handoffs: list[HandoffRecord]
    scorecards: list[Any]  # crm_store.services.scorecards.ScorecardView

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (datetimes as ISO 8601 with "Z")."""
        return {
            "id": self.id,
            "tracker_key": self.tracker_key,
            "channel": self.channel,
            "status": self.status,
            "outcome": self.outcome,
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
            "csat": self.csat,
            "customer": self.customer.as_dict() if self.customer else None,
            "messages": [line.as_dict() for line in self.messages],
            "handoffs": [handoff.as_dict() for handoff in self.handoffs],
            "scorecards": [card.as_dict() for card in self.scorecards],
        }


def _actions(meta: Any) -> list[str]:
    """Names of the bot actions in ``meta["steps"]`` (absent on older rows)."""
    steps = meta.get("steps") if isinstance(meta, dict) else None
    if not isinstance(steps, list):
        return []
    return [
        step["action"]
        for step in steps
        if isinstance(step, dict) and isinstance(step.get("action"), str)
    ]


def _customer(session: Session, customer_id: str | None) -> TranscriptCustomer | None:
    if customer_id is None:
        return None
    row = session.execute(
        select(
            Customer.first_name,
            Customer.last_name,
            CustomerScore.value_tier,
            CustomerScore.churn_band,
        )
        .outerjoin(CustomerScore, CustomerScore.customer_id == Customer.id)
        .where(Customer.id == customer_id)
    ).first()
    if row is None:
        return TranscriptCustomer(customer_id, None, None, None)
    first, last, tier, band = row
    return TranscriptCustomer(customer_id, _full_name(first, last), tier, band)


def _lines(session: Session, conversation_id: str) -> list[TranscriptLine]:
    rows = session.execute(
        select(Interaction)
        .where(Interaction.conversation_id == conversation_id)
        .order_by(Interaction.occurred_at, Interaction.id)
    ).scalars()
    lines = []
    for row in rows:
        view = message_view(row)
        lines.append(
            TranscriptLine(
                id=view.id,
                author=view.author,
                direction=view.direction,
                text=view.text,
                intent=view.intent,
                confidence=view.confidence,
                occurred_at=view.occurred_at,
                staff=view.staff,
                actions=_actions(row.meta),
            )
        )
    return lines


def _handoffs(session: Session, conversation_id: str) -> list[HandoffRecord]:
    rows = session.execute(
        select(Handoff, StaffUser.username)
        .outerjoin(StaffUser, StaffUser.id == Handoff.claimed_by)
        .where(Handoff.conversation_id == conversation_id)
        .order_by(Handoff.created_at, Handoff.id)
    ).all()
    if not rows:
        return []
    notes: dict[int, list[TranscriptNote]] = {}
    for handoff_id, username, text, created_at in session.execute(
        select(
            HandoffNote.handoff_id,
            StaffUser.username,
            HandoffNote.text,
            HandoffNote.created_at,
        )
        .join(StaffUser, StaffUser.id == HandoffNote.staff_id)
        .where(HandoffNote.handoff_id.in_([handoff.id for handoff, _ in rows]))
        .order_by(HandoffNote.created_at, HandoffNote.id)
    ).all():
        notes.setdefault(handoff_id, []).append(
            TranscriptNote(username, text, created_at)
        )
    return [
        HandoffRecord(
            id=handoff.id,
            reason=handoff.reason,
            status=handoff.status,
            created_at=handoff.created_at,
            claimed_at=handoff.claimed_at,
            first_response_at=handoff.first_response_at,
            resolved_at=handoff.resolved_at,
            agent=username,
            packet=dict(handoff.packet or {}),
            resolution_note=handoff.resolution_note,
            notes=notes.get(handoff.id, []),
        )
        for handoff, username in rows
    ]


def _scorecards(session: Session, conversation_id: str) -> list[Any]:
    return list(scorecards_of(session, conversation_id=conversation_id))


def transcript(session: Session, *, conversation_id: str) -> Transcript:
    """Return the whole conversation for review, oldest line first.

    Raises:
        NotFound: no such conversation.
    """
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        raise NotFound(f"conversation {conversation_id} not found")
    return Transcript(
        id=conversation.id,
        tracker_key=conversation.tracker_key,
        channel=conversation.channel,
        status=conversation.status,
        outcome=conversation.outcome,
        started_at=conversation.started_at,
        ended_at=conversation.ended_at,
        csat=conversation.csat,
        customer=_customer(session, conversation.customer_id),
        messages=_lines(session, conversation.id),
        handoffs=_handoffs(session, conversation.id),
        scorecards=_scorecards(session, conversation.id),
    )
