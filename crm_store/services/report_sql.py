"""SQL building blocks of the reports (``crm_store.services.reports``).

One per-conversation selectable (``conversation_facts``) feeds both the report
rows and the KPI aggregates, so the CSV and the dashboard cannot disagree. It
reads ``conversations``, ``handoffs``, ``customer_scores`` and ``staff_users``
only, never the messages. Durations are exact milliseconds on both backends
(``millis_between``), so a boundary such as "exactly 48 hours" is decided the
same way on both.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    Float,
    and_,
    case,
    cast,
    false,
    func,
    null,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select
from sqlalchemy.sql.functions import FunctionElement

from crm_store.models import Conversation, CustomerScore, Handoff, StaffUser

CONVERSATIONS = Conversation.__table__
HANDOFFS = Handoff.__table__
SCORES = CustomerScore.__table__
STAFF = StaffUser.__table__

# A handoff is never requested this long before its conversation started
# (different processes' clocks differ by far less).
HANDOFF_SLACK = dt.timedelta(days=1)
# The columns of ``conversation_facts`` beyond the report's own.
DAY = "day"
SELF_SERVED = "self_served"


class millis_between(FunctionElement):  # noqa: N801 (a SQL function name)
    """Milliseconds from ``earlier`` to ``later`` (two naive-UTC timestamps).

    Exact on both backends: an integer on SQLite (whose timestamps carry
    milliseconds), a numeric on PostgreSQL. NULL when either is NULL.
    """

    name = "millis_between"
    type = Float()
    inherit_cache = True


@compiles(millis_between, "sqlite")
def _millis_between_sqlite(element, compiler, **kw) -> str:  # noqa: ANN001
    # julianday() is the internal integer milliseconds / 86400000, off by less
    # than 0.05 ms: rounding the difference recovers the milliseconds exactly.
    later, earlier = (compiler.process(arg, **kw) for arg in element.clauses)
    return (
        f"CAST(round((julianday({later}) - julianday({earlier})) * 86400000.0)"
        " AS INTEGER)"
    )


@compiles(millis_between, "postgresql")
def _millis_between_postgresql(element, compiler, **kw) -> str:  # noqa: ANN001
    later, earlier = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"(EXTRACT(EPOCH FROM ({later} - {earlier})) * 1000)"


class utc_day(FunctionElement):  # noqa: N801 (a SQL function name)
    """The UTC calendar day of a naive-UTC timestamp expression."""

    name = "utc_day"
    type = Date()
    inherit_cache = True


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element, compiler, **kw) -> str:  # noqa: ANN001
    (arg,) = list(element.clauses)
    return f"date({compiler.process(arg, **kw)})"


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element, compiler, **kw) -> str:  # noqa: ANN001
    (arg,) = list(element.clauses)
    return f"CAST({compiler.process(arg, **kw)} AS DATE)"


class sort_text(FunctionElement):  # noqa: N801 (a SQL function name)
    """A text expression compared byte-wise (PostgreSQL ``COLLATE "C"``).

    Sorting and partitioning by ids need no linguistic order; byte order is
    much faster on PostgreSQL and is what SQLite does anyway.
    """

    name = "sort_text"
    inherit_cache = True

    def __init__(self, expression) -> None:  # noqa: ANN001
        super().__init__(expression)
        self.type = expression.type


@compiles(sort_text, "sqlite")
def _sort_text_sqlite(element, compiler, **kw) -> str:  # noqa: ANN001
    (arg,) = list(element.clauses)
    return compiler.process(arg, **kw)


@compiles(sort_text, "postgresql")
def _sort_text_postgresql(element, compiler, **kw) -> str:  # noqa: ANN001
    (arg,) = list(element.clauses)
    return f'({compiler.process(arg, **kw)} COLLATE "C")'


def flag(condition):  # noqa: ANN001, ANN201
    """SQL expression: a condition as a non-NULL boolean column (bool in Python)."""
    return type_coerce(case((condition, true()), else_=false()), Boolean)


def seconds(milliseconds):  # noqa: ANN001, ANN201
    """SQL expression: a ``millis_between`` value in seconds (float)."""
    return cast(milliseconds / 1000.0, Float)


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Percentile by linear interpolation (PostgreSQL ``percentile_cont``, numpy).

    ``sorted_values`` must be ascending; None when it is empty. The arithmetic is
    PostgreSQL's own, so both backends report the same number.
    """
    if not sorted_values:
        return None
    position = fraction * (len(sorted_values) - 1)
    low, high = math.floor(position), math.ceil(position)
    first = float(sorted_values[low])
    if low == high:
        return first
    return first + (float(sorted_values[high]) - first) * (position - low)


def _period(column, start: dt.datetime, end: dt.datetime):  # noqa: ANN001, ANN202
    return and_(column >= start, column < end)


def recontact_horizon(
    session: Session,
    *,
    start: dt.datetime,
    end: dt.datetime,
    now: dt.datetime,
    window: dt.timedelta,
) -> dt.datetime | None:
    """The latest start a re-contact of a conversation of [start, end) can have.

    ``end + window``, or later when a conversation of the period ended after
    ``end`` (its window runs from its own end). None (no bound, no query) when
    that reaches ``now``: nothing has started after now.
    """
    if end + window >= now:
        return None
    c = CONVERSATIONS.c
    last_end = session.execute(
        select(func.max(func.coalesce(c.ended_at, c.last_activity_at))).where(
            _period(c.started_at, start, end)
        )
    ).scalar_one()
    return max(end, last_end or end) + window


def _handoff_summary(  # noqa: ANN202
    start: dt.datetime, end: dt.datetime, *, recent: bool
):
    """Per conversation of the period: its handoffs aggregated (one row each).

    A handoff is requested during its conversation, so only handoffs created
    from a day before ``start`` are read. For a ``recent`` period (reaching
    ``now``) that is all it takes: the few rows of conversations started just
    before ``start`` find no partner in the final join. An older period also
    keeps only the handoffs of its own conversations.
    """
    h = HANDOFFS.c
    conditions = [h.created_at >= start - HANDOFF_SLACK]
    if not recent:
        period_ids = select(CONVERSATIONS.c.id).where(
            _period(CONVERSATIONS.c.started_at, start, end)
        )
        conditions.append(h.conversation_id.in_(period_ids))
    both = and_(h.claimed_at.isnot(None), h.resolved_at.isnot(None))
    conversation = sort_text(h.conversation_id)
    ranked = (
        select(
            h.conversation_id,
            h.reason,
            STAFF.c.username,
            h.claimed_at,
            h.created_at,
            h.first_response_at,
            case((both, millis_between(h.resolved_at, h.claimed_at))).label(
                "handle_ms"
            ),
            # Both windows share one sort (same partition).
            func.row_number()
            .over(partition_by=conversation, order_by=(h.created_at, h.id))
            .label("rank_created"),
            func.min(h.claimed_at)
            .over(partition_by=conversation)
            .label("first_claimed_at"),
        )
        .select_from(HANDOFFS.outerjoin(STAFF, STAFF.c.id == h.claimed_by))
        .where(*conditions)
        .subquery("ranked_handoffs")
    )
    r = ranked.c
    # Grouped by the window's partition key, so the rows come sorted already.
    group = sort_text(r.conversation_id)
    return (
        select(
            group.label("conversation_id"),
            func.min(r.created_at).label("escalated_at"),
            func.min(r.first_response_at).label("first_response_at"),
            func.sum(r.handle_ms).label("handle_ms"),
            func.max(case((r.rank_created == 1, r.reason))).label("reason"),
            # The agent of the first claim (on a tie, the last username).
            func.max(case((r.claimed_at == r.first_claimed_at, r.username))).label(
                "agent"
            ),
        )
        .group_by(group)
        .subquery("handoff_summary")
    )


def _with_next_start(  # noqa: ANN202
    start: dt.datetime, horizon: dt.datetime | None
):
    """Conversations started in [start, horizon] with the customer's next start.

    Partitioned by customer, or by tracker key for conversations without one
    (tracker keys, ``rest:…``, never look like customer ids).
    """
    c = CONVERSATIONS.c
    key = sort_text(func.coalesce(c.customer_id, c.tracker_key))
    next_start = func.lead(c.started_at, type_=DateTime).over(
        partition_by=key, order_by=(c.started_at, sort_text(c.id))
    )
    bounds = [c.started_at >= start]
    if horizon is not None:
        bounds.append(c.started_at <= horizon)
    return (
        select(
            c.id,
            c.channel,
            c.customer_id,
            c.tracker_key,
            c.started_at,
            c.ended_at,
            c.last_activity_at,
            c.status,
            c.outcome,
            c.csat,
            c.csat_requested_at,
            next_start.label("next_started_at"),
        )
        .where(*bounds)
        .subquery("with_next")
    )


def conversation_facts(
    *,
    start: dt.datetime,
    end: dt.datetime,
    horizon: dt.datetime | None,
    now: dt.datetime,
    window: dt.timedelta,
) -> Select:
    """One row per conversation started in [start, end): the report columns.

    Columns: the report's (``REPORT_COLUMNS``, values as the report shows
    them) plus ``day`` (UTC day of the start), ``self_served`` (bool) and
    ``handle_ms`` (exact, for sums).
    ``horizon`` comes from ``recontact_horizon``.
    """
    conv = _with_next_start(start, horizon)
    c = conv.c
    hs = _handoff_summary(start, end, recent=horizon is None)
    window_ms = round(window.total_seconds() * 1000)
    ended = func.coalesce(c.ended_at, c.last_activity_at)
    has_key = or_(c.customer_id.isnot(None), c.tracker_key.isnot(None))
    recontact_at = case(
        (
            and_(
                has_key,
                c.next_started_at.isnot(None),
                millis_between(c.next_started_at, ended) <= window_ms,
            ),
            c.next_started_at,
        )
    )
    escalated = or_(hs.c.conversation_id.isnot(None), c.outcome == "escalated")
    self_served = and_(
        c.status == "closed",
        c.outcome == "self_served",
        hs.c.conversation_id.is_(None),
    )
    joined = (
        select(
            c.id.label("conversation_id"),
            c.channel,
            c.customer_id,
            SCORES.c.value_tier,
            c.started_at,
            c.ended_at,
            c.status,
            c.outcome,
            flag(escalated).label("escalated"),
            hs.c.reason.label("escalation_reason"),
            hs.c.escalated_at,
            hs.c.agent,
            hs.c.first_response_at,
            seconds(millis_between(hs.c.first_response_at, hs.c.escalated_at)).label(
                "first_response_seconds"
            ),
            seconds(hs.c.handle_ms).label("handle_seconds"),
            hs.c.handle_ms,
            c.csat,
            # A rating given was asked for, also when its request time is unknown
            # (ratings imported from another system).
            flag(or_(c.csat_requested_at.isnot(None), c.csat.isnot(None))).label(
                "csat_requested"
            ),
            recontact_at.label("recontact_at"),
            ended.label("window_from"),
            flag(self_served).label(SELF_SERVED),
        )
        .select_from(
            conv.outerjoin(hs, hs.c.conversation_id == c.id).outerjoin(
                SCORES, SCORES.c.customer_id == c.customer_id
            )
        )
        .where(c.started_at < end)
        .subquery("joined")
    )
    j = joined.c
    contained = type_coerce(
        case(
            (j.status != "closed", null()),
            (j.self_served.isnot(True), false()),
            (j.recontact_at.isnot(None), false()),
            (j.window_from > now - window, null()),
            else_=true(),
        ),
        Boolean,
    )
    return select(
        *(j[name] for name in REPORT_FACT_COLUMNS[:-1]),
        contained.label("contained"),
        utc_day(j.started_at).label(DAY),
        j.self_served,
        j.handle_ms,
    )


# The report columns, in order (``reports.REPORT_COLUMNS`` re-exports them).
REPORT_FACT_COLUMNS: tuple[str, ...] = (
    "conversation_id",
    "channel",
    "customer_id",
    "value_tier",
    "started_at",
    "ended_at",
    "status",
    "outcome",
    "escalated",
    "escalation_reason",
    "escalated_at",
    "agent",
    "first_response_at",
    "first_response_seconds",
    "handle_seconds",
    "csat",
    "csat_requested",
    "recontact_at",
    "contained",
)
