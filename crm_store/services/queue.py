"""The human-handoff queue: order, expected waits, claims, resolutions and notes.

Queue order (weights in ``config/queue.yml``): every waiting handoff scores
``points + points_per_minute_waiting * minutes waited``; the highest score goes
first, ties by arrival. Points are fixed at request time (value tier, churn band,
reason, treatment boost), so the order is stored once as
``queue_at = created_at - points / points_per_minute_waiting`` minutes and waiting
entries are served by ``(queue_at, id)``: one indexed sort, no re-scoring.

Statuses: ``waiting`` -> ``claimed`` -> ``resolved`` | ``handed_back``. A claim
is one conditional UPDATE, so two agents claiming at once cannot both win: the
loser gets ``Conflict``. Staff actions are written to ``audit_log``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import statistics
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from crm_store.errors import Conflict, Forbidden, InvalidInput, NotFound
from crm_store.models import (
    AuditLog,
    Conversation,
    Customer,
    CustomerScore,
    Handoff,
    HandoffNote,
    Interaction,
    StaffUser,
    utcnow,
)
from crm_store.services.tickets import open_ticket
from crm_store.settings import PROJECT_ROOT

DEFAULT_QUEUE_PATH = PROJECT_ROOT / "config" / "queue.yml"
REASONS = (
    "customer_request",
    "low_confidence",
    "fallback",
    "verification_failed",
    "step_up_required",
    "complaint",
    "form_stuck",
    "action_failure",
    "business_rule",
    "other",
)
VALUE_TIERS = ("platinum", "gold", "silver", "bronze")
CHURN_BANDS = ("high", "medium", "low")
STATUSES = ("waiting", "claimed", "resolved", "handed_back")
MAX_NOTE = 4000
MAX_POINTS = 100_000
BUSY_WINDOW = dt.timedelta(hours=1)
MIN_HANDLE_SAMPLES = 3
HANDLE_SAMPLE_LIMIT = 2000


@dataclass(frozen=True)
class QueueWeights:
    """Priority points and expected-wait settings (see ``config/queue.yml``)."""

    value_tier_points: dict[str, int] = field(
        default_factory=lambda: {"platinum": 40, "gold": 25, "silver": 10, "bronze": 0}
    )
    churn_band_points: dict[str, int] = field(
        default_factory=lambda: {"high": 20, "medium": 10, "low": 0}
    )
    reason_points: dict[str, int] = field(
        default_factory=lambda: {
            "complaint": 15,
            "verification_failed": 10,
            "action_failure": 10,
            "business_rule": 20,
        }
    )
    points_per_minute_waiting: float = 1.0
    default_handle_minutes: float = 6.0
    handle_time_window_days: int = 7

    def __post_init__(self) -> None:
        """Reject unknown names and values that would break the order."""
        for name, allowed in (
            ("value_tier_points", VALUE_TIERS),
            ("churn_band_points", CHURN_BANDS),
            ("reason_points", REASONS),
        ):
            table = getattr(self, name)
            if not isinstance(table, dict):
                raise InvalidInput(f"queue config: {name} must be a mapping")
            unknown = sorted(set(table) - set(allowed))
            if unknown:
                raise InvalidInput(
                    f"queue config: {name} has unknown keys {unknown}; "
                    f"allowed: {', '.join(allowed)}"
                )
            for key, points in table.items():
                if (
                    not isinstance(points, int)
                    or isinstance(points, bool)
                    or abs(points) > MAX_POINTS
                ):
                    raise InvalidInput(
                        f"queue config: {name}.{key} must be a whole number of "
                        f"points (got {points!r})"
                    )
        checks = (
            ("points_per_minute_waiting", 0 < _num(self.points_per_minute_waiting)),
            ("default_handle_minutes", 0 < _num(self.default_handle_minutes) <= 1440),
            (
                "handle_time_window_days",
                isinstance(self.handle_time_window_days, int)
                and 1 <= self.handle_time_window_days <= 365,
            ),
        )
        for name, ok in checks:
            if not ok:
                raise InvalidInput(
                    f"queue config: {name} is out of range "
                    f"(got {getattr(self, name)!r}); see config/queue.yml"
                )


def _num(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def load_queue_weights(path: Path | str | None = None) -> QueueWeights:
    """Return the weights of ``path`` (default ``config/queue.yml``) over the defaults.

    A missing default file means the defaults; a missing explicit file is an error.

    Raises:
        InvalidInput: missing explicit file, unreadable YAML, unknown keys or bad
            values (the message names the key).
    """
    resolved = Path(path) if path else DEFAULT_QUEUE_PATH
    if not resolved.exists():
        if path:
            raise InvalidInput(f"queue config file {resolved} not found")
        return QueueWeights()
    try:
        data = yaml.safe_load(resolved.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise InvalidInput(f"{resolved}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{resolved}: expected a mapping of settings")
    known = {f.name for f in dataclasses.fields(QueueWeights)}
    unknown = sorted(set(map(str, data)) - known)
    if unknown:
        raise InvalidInput(
            f"{resolved}: unknown settings {unknown}; known: {', '.join(sorted(known))}"
        )
    try:
        return QueueWeights(**data)
    except InvalidInput as error:
        raise InvalidInput(f"{resolved}: {error}") from None


@lru_cache(maxsize=1)
def default_weights() -> QueueWeights:
    """The weights of ``config/queue.yml`` (read once per process)."""
    return load_queue_weights(None)


def priority_points(
    weights: QueueWeights,
    *,
    value_tier: str | None,
    churn_band: str | None,
    reason: str,
    boost: int = 0,
) -> int:
    """Points of a handoff: tier + churn band + reason + treatment ``boost``."""
    return (
        weights.value_tier_points.get(value_tier or "", 0)
        + weights.churn_band_points.get(churn_band or "", 0)
        + weights.reason_points.get(reason, 0)
        + int(boost or 0)
    )


def queue_at_for(
    created_at: dt.datetime, points: int, weights: QueueWeights
) -> dt.datetime:
    """The stored sort key: arrival moved earlier by ``points`` worth of waiting."""
    return created_at - dt.timedelta(minutes=points / weights.points_per_minute_waiting)


_QUEUE_KEY = func.coalesce(Handoff.queue_at, Handoff.created_at)


def position_of(session: Session, handoff: Handoff) -> int:
    """1-based place of a waiting handoff in the queue."""
    key = handoff.queue_at or handoff.created_at
    ahead = session.execute(
        select(func.count())
        .select_from(Handoff)
        .where(
            Handoff.status == "waiting",
            Handoff.id != handoff.id,
            or_(_QUEUE_KEY < key, and_(_QUEUE_KEY == key, Handoff.id < handoff.id)),
        )
    ).scalar_one()
    return ahead + 1


@dataclass(frozen=True)
class QueueEntry:
    """One handoff as the console lists it (``position`` only while waiting).

    ``waited_seconds``: until the claim (or until now while waiting; until the
    resolution for entries resolved without a claim).
    """

    handoff_id: int
    position: int | None
    conversation_id: str | None
    tracker_key: str | None
    channel: str
    customer_id: str | None
    customer_name: str | None
    value_tier: str | None
    churn_band: str | None
    reason: str
    priority: int
    created_at: dt.datetime
    waited_seconds: float
    summary: str | None
    status: str = "waiting"
    claimed_by: str | None = None
    claimed_at: dt.datetime | None = None
    resolved_at: dt.datetime | None = None


def _entries_query() -> Any:
    claimer = StaffUser.__table__.alias("claimer")
    return (
        select(
            Handoff,
            Conversation.tracker_key,
            Customer,
            CustomerScore.value_tier,
            CustomerScore.churn_band,
            claimer.c.username,
        )
        .outerjoin(Conversation, Conversation.id == Handoff.conversation_id)
        .outerjoin(Customer, Customer.id == Handoff.customer_id)
        .outerjoin(CustomerScore, CustomerScore.customer_id == Handoff.customer_id)
        .outerjoin(claimer, claimer.c.id == Handoff.claimed_by)
    )


def _entry(row: Any, position: int | None, now: dt.datetime) -> QueueEntry:
    handoff, key, customer, tier, band, claimer = row
    packet = handoff.packet or {}
    until = handoff.claimed_at or handoff.resolved_at or now
    name = customer.display_name if customer is not None else None
    return QueueEntry(
        handoff_id=handoff.id,
        position=position,
        conversation_id=handoff.conversation_id,
        tracker_key=key or packet.get("tracker_key"),
        channel=handoff.channel,
        customer_id=handoff.customer_id,
        customer_name=name or packet.get("customer_name"),
        value_tier=packet.get("value_tier") or tier,
        churn_band=packet.get("churn_band") or band,
        reason=handoff.reason,
        priority=handoff.priority,
        created_at=handoff.created_at,
        waited_seconds=max((until - handoff.created_at).total_seconds(), 0.0),
        summary=packet.get("summary"),
        status=handoff.status,
        claimed_by=claimer,
        claimed_at=handoff.claimed_at,
        resolved_at=handoff.resolved_at,
    )


def _limit(limit: int) -> int:
    if not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise InvalidInput("limit must be between 1 and 1000")
    return limit


def waiting_queue(
    session: Session, *, now: dt.datetime | None = None, limit: int = 200
) -> list[QueueEntry]:
    """Waiting handoffs in serving order (position 1 first)."""
    now = now or utcnow()
    stmt = (
        _entries_query()
        .where(Handoff.status == "waiting")
        .order_by(_QUEUE_KEY, Handoff.id)
        .limit(_limit(limit))
    )
    rows = session.execute(stmt).all()
    return [_entry(row, n, now) for n, row in enumerate(rows, start=1)]


def handoffs_by_status(
    session: Session,
    status: str,
    *,
    limit: int = 100,
    staff_id: int | None = None,
    now: dt.datetime | None = None,
) -> list[QueueEntry]:
    """Handoffs of one status, ``staff_id``: only that claimer's.

    Waiting in serving order, claimed by newest claim, resolved / handed back
    newest resolution first.
    """
    if status not in STATUSES:
        raise InvalidInput(f"status must be one of {STATUSES}")
    if status == "waiting" and staff_id is None:
        return waiting_queue(session, now=now, limit=limit)
    now = now or utcnow()
    stmt = _entries_query().where(Handoff.status == status)
    if staff_id is not None:
        stmt = stmt.where(Handoff.claimed_by == staff_id)
    if status == "waiting":
        stmt = stmt.order_by(_QUEUE_KEY, Handoff.id)
    elif status == "claimed":
        stmt = stmt.order_by(Handoff.claimed_at.desc(), Handoff.id.desc())
    else:
        stmt = stmt.order_by(Handoff.resolved_at.desc(), Handoff.id.desc())
    rows = session.execute(stmt.limit(_limit(limit))).all()
    return [_entry(row, None, now) for row in rows]


def _handle_stats(
    session: Session, now: dt.datetime, weights: QueueWeights
) -> tuple[float, int]:
    """(median handle seconds, agents working) behind ``expected_wait``."""
    since = now - dt.timedelta(days=weights.handle_time_window_days)
    rows = session.execute(
        select(Handoff.claimed_at, Handoff.resolved_at)
        .where(
            Handoff.status.in_(("resolved", "handed_back")),
            Handoff.resolved_at >= since,
            Handoff.resolved_at <= now,
            Handoff.claimed_at.is_not(None),
        )
        .order_by(Handoff.resolved_at.desc())
        .limit(HANDLE_SAMPLE_LIMIT)
    ).all()
    durations = [
        (resolved - claimed).total_seconds()
        for claimed, resolved in rows
        if resolved >= claimed
    ]
    if len(durations) >= MIN_HANDLE_SAMPLES:
        median = float(statistics.median(durations))
    else:
        median = weights.default_handle_minutes * 60.0
    busy_since = now - BUSY_WINDOW
    agents = session.execute(
        select(func.count(func.distinct(Handoff.claimed_by))).where(
            Handoff.claimed_by.is_not(None),
            or_(
                and_(Handoff.claimed_at >= busy_since, Handoff.claimed_at <= now),
                and_(Handoff.resolved_at >= busy_since, Handoff.resolved_at <= now),
            ),
        )
    ).scalar_one()
    return median, max(int(agents or 0), 1)


def _wait(position: int, median: float, agents: int) -> dt.timedelta:
    return dt.timedelta(seconds=median * math.ceil(position / agents))


def expected_wait(
    session: Session,
    position: int,
    *,
    now: dt.datetime | None = None,
    weights: QueueWeights | None = None,
) -> dt.timedelta:
    """Estimate how long the handoff at ``position`` waits for an agent.

    ``median handle time * ceil(position / agents)``. The handle time is
    ``resolved_at - claimed_at`` of the handoffs resolved (or handed back) in the
    last ``handle_time_window_days``; with fewer than 3 of them it is
    ``default_handle_minutes``. ``agents`` counts the distinct staff who claimed
    or resolved a handoff in the last hour (at least 1). Agent hours are not
    considered here (``request_handoff`` adds the time until opening).

    Raises:
        InvalidInput: ``position`` is not a positive whole number.
    """
    if not isinstance(position, int) or position < 1:
        raise InvalidInput("position must be a positive whole number")
    median, agents = _handle_stats(
        session, now or utcnow(), weights or default_weights()
    )
    return _wait(position, median, agents)


def _active_staff(session: Session, staff_id: int) -> StaffUser:
    staff = session.get(StaffUser, staff_id) if isinstance(staff_id, int) else None
    if staff is None or not staff.active:
        raise NotFound(f"staff user {staff_id} not found or inactive")
    return staff


def _audit(
    session: Session,
    *,
    actor: str,
    action: str,
    handoff_id: int,
    at: dt.datetime,
    details: dict | None = None,
) -> None:
    session.add(
        AuditLog(
            occurred_at=at,
            actor=actor,
            action=action,
            entity_type="handoff",
            entity_id=str(handoff_id),
            details=details or {},
        )
    )


def _username(session: Session, staff_id: int | None) -> str | None:
    if staff_id is None:
        return None
    staff = session.get(StaffUser, staff_id)
    return staff.username if staff is not None else None


def _state(session: Session, handoff: Handoff) -> str:
    if handoff.status == "claimed":
        who = _username(session, handoff.claimed_by) or "another agent"
        return f"handoff {handoff.id} is already claimed by {who}"
    return f"handoff {handoff.id} is {handoff.status.replace('_', ' ')}"


def _reload(session: Session, handoff_id: int) -> Handoff | None:
    return session.get(Handoff, handoff_id, populate_existing=True)


def claim(
    session: Session,
    handoff_id: int,
    staff_id: int,
    *,
    now: dt.datetime | None = None,
) -> Handoff:
    """Give a waiting handoff to an agent: one conditional UPDATE, race-safe.

    Raises:
        NotFound: no such handoff, or no such active staff user.
        Conflict: the handoff is no longer waiting (someone claimed it first, or
            it is resolved); the message says which and by whom.
    """
    staff = _active_staff(session, staff_id)
    now = now or utcnow()
    result = session.execute(
        update(Handoff)
        .where(Handoff.id == handoff_id, Handoff.status == "waiting")
        .values(status="claimed", claimed_by=staff.id, claimed_at=now)
        .execution_options(synchronize_session=False)
    )
    handoff = _reload(session, handoff_id)
    if result.rowcount != 1:
        if handoff is None:
            raise NotFound(f"handoff {handoff_id} not found")
        raise Conflict(_state(session, handoff))
    _audit(
        session,
        actor=staff.username,
        action="handoff_claimed",
        handoff_id=handoff_id,
        at=now,
    )
    session.flush()
    return handoff


def _clean_note(text: str | None, *, required: bool) -> str | None:
    if text is not None and not isinstance(text, str):
        raise InvalidInput("a note must be text")
    cleaned = (text or "").strip()
    if not cleaned:
        if required:
            raise InvalidInput("a note must not be empty")
        return None
    if len(cleaned) > MAX_NOTE:
        raise InvalidInput(f"a note is at most {MAX_NOTE} characters")
    return cleaned


def _check_resolvable(
    session: Session,
    handoff: Handoff | None,
    handoff_id: int,
    staff_id: int,
    allow_other: bool,
) -> Handoff:
    if handoff is None:
        raise NotFound(f"handoff {handoff_id} not found")
    if handoff.status != "claimed":
        raise Conflict(
            _state(session, handoff) + "; only a claimed handoff is resolved"
        )
    if not allow_other and handoff.claimed_by != staff_id:
        who = _username(session, handoff.claimed_by) or "another agent"
        raise Forbidden(f"handoff {handoff.id} is claimed by {who}")
    return handoff


def resolve(
    session: Session,
    handoff_id: int,
    staff_id: int,
    *,
    handback: bool,
    note: str | None,
    now: dt.datetime | None = None,
    allow_other: bool = False,
) -> Handoff:
    """Finish a claimed handoff: ``handed_back`` to the bot, or ``resolved``.

    Only its claimer may, unless ``allow_other`` (managers). Conditional UPDATE:
    two finishes at once cannot both succeed.

    Raises:
        NotFound: no such handoff or active staff user.
        Conflict: the handoff is not claimed (waiting, or already finished).
        Forbidden: claimed by another agent and not ``allow_other``.
        InvalidInput: a note over 4000 characters.
    """
    staff = _active_staff(session, staff_id)
    cleaned = _clean_note(note, required=False)
    now = now or utcnow()
    status = "handed_back" if handback else "resolved"
    conditions = [Handoff.id == handoff_id, Handoff.status == "claimed"]
    if not allow_other:
        conditions.append(Handoff.claimed_by == staff.id)
    result = session.execute(
        update(Handoff)
        .where(*conditions)
        .values(status=status, resolved_at=now, resolution_note=cleaned)
        .execution_options(synchronize_session=False)
    )
    handoff = _reload(session, handoff_id)
    if result.rowcount != 1:
        _check_resolvable(session, handoff, handoff_id, staff.id, allow_other)
        raise Conflict(f"handoff {handoff_id} changed meanwhile")
    _audit(
        session,
        actor=staff.username,
        action=f"handoff_{status}",
        handoff_id=handoff_id,
        at=now,
        details={"claimed_by": _username(session, handoff.claimed_by)},
    )
    session.flush()
    return handoff


def convert_to_ticket(
    session: Session,
    handoff_id: int,
    staff_id: int,
    *,
    subject: str,
    description: str | None = None,
    now: dt.datetime | None = None,
    allow_other: bool = False,
) -> str:
    """Open a ticket for the handoff's customer and resolve the handoff.

    The resolution note names the ticket; the description defaults to the
    packet's summary. Returns the ticket number.

    Raises:
        NotFound / Conflict / Forbidden: as ``resolve``.
        InvalidInput: empty subject, or the handoff has no known customer.
    """
    staff = _active_staff(session, staff_id)
    handoff = _check_resolvable(
        session, _reload(session, handoff_id), handoff_id, staff.id, allow_other
    )
    if not handoff.customer_id:
        raise InvalidInput(
            "this handoff has no known customer; a ticket needs one (resolve it "
            "with a note instead)"
        )
    now = now or utcnow()
    ticket = open_ticket(
        session,
        customer_id=handoff.customer_id,
        subject=subject,
        description=description or (handoff.packet or {}).get("summary"),
        conversation_id=handoff.conversation_id,
        at=now,
    )
    resolve(
        session,
        handoff_id,
        staff.id,
        handback=False,
        note=f"Converted to ticket {ticket.number}.",
        now=now,
        allow_other=allow_other,
    )
    return ticket.number


@dataclass(frozen=True)
class NoteView:
    """An internal note with its author's username."""

    id: int
    handoff_id: int
    author: str
    text: str
    created_at: dt.datetime


def add_note(
    session: Session,
    handoff_id: int,
    staff_id: int,
    text: str,
    *,
    now: dt.datetime | None = None,
) -> NoteView:
    """Add an internal note (never shown to the customer).

    Raises:
        InvalidInput: empty or over 4000 characters.
        NotFound: no such handoff or active staff user.
    """
    cleaned = _clean_note(text, required=True)
    staff = _active_staff(session, staff_id)
    if session.get(Handoff, handoff_id) is None:
        raise NotFound(f"handoff {handoff_id} not found")
    note = HandoffNote(
        handoff_id=handoff_id,
        staff_id=staff.id,
        text=cleaned,
        created_at=now or utcnow(),
    )
    session.add(note)
    session.flush()
    return NoteView(note.id, handoff_id, staff.username, note.text, note.created_at)


def notes_of(session: Session, handoff_id: int) -> list[NoteView]:
    """A handoff's notes, oldest first."""
    rows = session.execute(
        select(HandoffNote, StaffUser.username)
        .join(StaffUser, StaffUser.id == HandoffNote.staff_id)
        .where(HandoffNote.handoff_id == handoff_id)
        .order_by(HandoffNote.created_at, HandoffNote.id)
    ).all()
    return [
        NoteView(note.id, note.handoff_id, username, note.text, note.created_at)
        for note, username in rows
    ]


@dataclass(frozen=True)
class PositionUpdate:
    """A waiting customer whose queue position changed since they were told."""

    handoff_id: int
    conversation_id: str
    tracker_key: str | None
    channel: str
    position: int
    expected_wait: dt.timedelta


def position_updates(
    session: Session,
    *,
    now: dt.datetime | None = None,
    weights: QueueWeights | None = None,
) -> list[PositionUpdate]:
    """Record and return the positions that changed since last told.

    Each change is a conditional UPDATE of ``told_position``, so two callers at
    once report a change once. Handoffs without a conversation are updated but
    not returned (there is no one to tell).
    """
    now = now or utcnow()
    rows = session.execute(
        select(
            Handoff.id,
            Handoff.conversation_id,
            Handoff.channel,
            Handoff.told_position,
            Conversation.tracker_key,
        )
        .outerjoin(Conversation, Conversation.id == Handoff.conversation_id)
        .where(Handoff.status == "waiting")
        .order_by(_QUEUE_KEY, Handoff.id)
    ).all()
    changed = [
        (position, row)
        for position, row in enumerate(rows, start=1)
        if row.told_position != position
    ]
    if not changed:
        return []
    median, agents = _handle_stats(session, now, weights or default_weights())
    updates = []
    for position, row in changed:
        result = session.execute(
            update(Handoff)
            .where(
                Handoff.id == row.id,
                Handoff.status == "waiting",
                Handoff.told_position.is_distinct_from(position),
            )
            .values(told_position=position)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1 and row.conversation_id:
            updates.append(
                PositionUpdate(
                    row.id,
                    row.conversation_id,
                    row.tracker_key,
                    row.channel,
                    position,
                    _wait(position, median, agents),
                )
            )
    return updates


@dataclass(frozen=True)
class QueueStats:
    """Queue figures for ``/metrics`` and the manager page (windows: last 24 h).

    ``median_wait_seconds_24h`` (request -> claim of the handoffs claimed in
    the window) is None when none was claimed.
    """

    waiting: int
    claimed: int
    oldest_wait_seconds: float
    resolved_24h: int
    median_wait_seconds_24h: float | None
    messages_by_channel: dict[str, int]


def queue_stats(session: Session, *, now: dt.datetime | None = None) -> QueueStats:
    """Count the queue now and its last 24 hours."""
    now = now or utcnow()
    day_ago = now - dt.timedelta(hours=24)
    counts = dict(
        session.execute(
            select(Handoff.status, func.count())
            .where(Handoff.status.in_(("waiting", "claimed")))
            .group_by(Handoff.status)
        ).all()
    )
    oldest = session.execute(
        select(func.min(Handoff.created_at)).where(Handoff.status == "waiting")
    ).scalar_one()
    resolved = session.execute(
        select(func.count())
        .select_from(Handoff)
        .where(
            Handoff.status.in_(("resolved", "handed_back")),
            Handoff.resolved_at >= day_ago,
        )
    ).scalar_one()
    claims = session.execute(
        select(Handoff.created_at, Handoff.claimed_at).where(
            Handoff.claimed_at >= day_ago, Handoff.claimed_at <= now
        )
    ).all()
    waits = [(claimed - created).total_seconds() for created, claimed in claims]
    messages = session.execute(
        select(Interaction.channel, func.count())
        .where(
            Interaction.occurred_at >= day_ago,
            Interaction.occurred_at <= now,
            Interaction.text.is_not(None),
        )
        .group_by(Interaction.channel)
    ).all()
    return QueueStats(
        waiting=int(counts.get("waiting", 0)),
        claimed=int(counts.get("claimed", 0)),
        oldest_wait_seconds=max((now - oldest).total_seconds(), 0.0) if oldest else 0.0,
        resolved_24h=int(resolved),
        median_wait_seconds_24h=float(statistics.median(waits)) if waits else None,
        messages_by_channel={channel: int(n) for channel, n in messages},
    )


@dataclass(frozen=True)
class HandoffView:
    """A handoff with its packet, claimer and (while waiting) position."""

    id: int
    conversation_id: str | None
    tracker_key: str | None
    customer_id: str | None
    customer_name: str | None
    channel: str
    reason: str
    status: str
    priority: int
    packet: dict
    created_at: dt.datetime
    queue_at: dt.datetime | None
    claimed_by: int | None
    claimed_by_username: str | None
    claimed_at: dt.datetime | None
    first_response_at: dt.datetime | None
    resolved_at: dt.datetime | None
    resolution_note: str | None
    told_position: int | None
    position: int | None


def get_handoff(session: Session, handoff_id: int) -> HandoffView:
    """Return one handoff for the console.

    Raises:
        NotFound: no such handoff.
    """
    row = session.execute(_entries_query().where(Handoff.id == handoff_id)).first()
    if row is None:
        raise NotFound(f"handoff {handoff_id} not found")
    handoff, key, customer, _tier, _band, claimer = row
    packet = dict(handoff.packet or {})
    return HandoffView(
        id=handoff.id,
        conversation_id=handoff.conversation_id,
        tracker_key=key or packet.get("tracker_key"),
        customer_id=handoff.customer_id,
        customer_name=(customer.display_name if customer is not None else None)
        or packet.get("customer_name"),
        channel=handoff.channel,
        reason=handoff.reason,
        status=handoff.status,
        priority=handoff.priority,
        packet=packet,
        created_at=handoff.created_at,
        queue_at=handoff.queue_at,
        claimed_by=handoff.claimed_by,
        claimed_by_username=claimer,
        claimed_at=handoff.claimed_at,
        first_response_at=handoff.first_response_at,
        resolved_at=handoff.resolved_at,
        resolution_note=handoff.resolution_note,
        told_position=handoff.told_position,
        position=position_of(session, handoff) if handoff.status == "waiting" else None,
    )
