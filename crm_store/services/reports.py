"""Manager reports: the KPIs and one row per conversation (CSV / parquet export).

Both read one per-conversation SQL selectable (``report_sql.conversation_facts``):
``conversation_rows`` streams it, ``kpi_report`` aggregates it in SQL, so the
export and the dashboard always agree. The definitions are in
``KPI_DEFINITIONS`` and ``docs/reports.md``. A period is [start, end) in naive
UTC; a conversation belongs to the UTC day (and period) it started in.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Date,
    Float,
    String,
    case,
    cast,
    func,
    literal,
    null,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput
from crm_store.services.moments import parse_moment
from crm_store.services.report_sql import (
    CONVERSATIONS,
    DAY,
    REPORT_FACT_COLUMNS,
    SELF_SERVED,
    conversation_facts,
    percentile,
    recontact_horizon,
    sort_text,
)

DEFAULT_RECONTACT_HOURS = 48
MAX_RECONTACT_HOURS = 24 * 366
MAX_PERIOD_DAYS = 3660
MAX_MOMENT_CHARS = 40
REPORT_COLUMNS: tuple[str, ...] = REPORT_FACT_COLUMNS

KPI_DEFINITIONS: dict[str, str] = {
    "conversations": "Conversations that started in the period (any channel).",
    "closed": "Of those, conversations that are closed now.",
    "open": "Of those, conversations that are still open now.",
    "self_served": "Closed with outcome self-served and never handed to a human.",
    "escalated": "Conversations with at least one handoff to a human or the "
    "outcome escalated.",
    "abandoned": "Conversations whose outcome is abandoned (the customer left).",
    "containment_eligible": "Conversations whose containment is decided: "
    "contained plus not contained.",
    "contained": "Self-served conversations whose customer did not come back on "
    "any channel within the re-contact window after the end.",
    "containment_pending": "Self-served conversations whose re-contact window is "
    "still open, so containment is not decided yet.",
    "containment_rate": "Contained divided by containment-eligible conversations "
    "(closed ones, pending ones left out).",
    "escalation_rate": "Escalated divided by all conversations of the period.",
    "abandonment_rate": "Abandoned divided by closed conversations.",
    "frt_median_seconds": "Median first response time: from the first escalation "
    "to an agent's first reply, over answered escalations.",
    "frt_p90_seconds": "90th percentile of the first response time "
    "(linear interpolation), over answered escalations.",
    "frt_answered": "Escalated conversations in which an agent replied.",
    "never_answered": "Escalated conversations in which no agent has replied "
    "(left out of the response times).",
    "aht_seconds": "Average handle time: per escalated conversation the time "
    "from claim to resolution summed over its handoffs, averaged.",
    "aht_count": "Escalated conversations with a handle time (claimed and resolved).",
    "csat_asked": (
        "Conversations in which the bot asked for a rating (a given rating counts "
        "as asked)."
    ),
    "csat_answered": "Conversations with a rating (1-5).",
    "csat_positive": "Conversations rated 4 or 5.",
    "csat_score": "Share of ratings that are positive (4 or 5).",
    "csat_response_rate": "Ratings given divided by ratings asked for.",
}

# Levels of the aggregate query (one UNION ALL over the same facts).
_ALL, _CHANNEL, _DAY, _REASON = 0, 1, 2, 3
_PERCENTILES = 10  # + a level: the first-response percentiles of its slices
_KPI_FACTS = (
    "channel",
    DAY,
    "status",
    "outcome",
    SELF_SERVED,
    "escalated",
    "escalation_reason",
    "contained",
    "first_response_at",
    "first_response_seconds",
    "handle_ms",
    "csat",
    "csat_requested",
)
_COUNTERS = (
    "conversations",
    "closed",
    "open",
    "self_served",
    "escalated",
    "abandoned",
    "contained",
    "containment_eligible",
    "containment_pending",
    "frt_answered",
    "never_answered",
    "handle_ms",
    "aht_count",
    "csat_asked",
    "csat_answered",
    "csat_positive",
)


@dataclass(frozen=True)
class KpiFigures:
    """The KPIs of one slice (overall, a channel or a day); see KPI_DEFINITIONS."""

    conversations: int
    closed: int
    open: int
    self_served: int
    escalated: int
    abandoned: int
    containment_eligible: int
    contained: int
    containment_pending: int
    containment_rate: float | None
    escalation_rate: float | None
    abandonment_rate: float | None
    frt_median_seconds: float | None
    frt_p90_seconds: float | None
    frt_answered: int
    never_answered: int
    aht_seconds: float | None
    aht_count: int
    csat_asked: int
    csat_answered: int
    csat_positive: int
    csat_score: float | None
    csat_response_rate: float | None

    def as_dict(self) -> dict[str, Any]:
        """The figures as a JSON-ready dict (keys as in ``KPI_DEFINITIONS``)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class KpiReport:
    """The KPIs of a period: overall, per channel, per UTC day, escalation reasons."""

    start: dt.datetime
    end: dt.datetime
    now: dt.datetime
    recontact_hours: float
    overall: KpiFigures
    by_channel: dict[str, KpiFigures]
    by_day: list[tuple[dt.date, KpiFigures]]
    escalation_reasons: list[tuple[str, int]]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (datetimes ISO 8601 with "Z", days YYYY-MM-DD)."""
        return {
            "start": _iso(self.start),
            "end": _iso(self.end),
            "now": _iso(self.now),
            "recontact_hours": self.recontact_hours,
            "overall": self.overall.as_dict(),
            "by_channel": {ch: f.as_dict() for ch, f in self.by_channel.items()},
            "by_day": [
                {"day": day.isoformat(), **f.as_dict()} for day, f in self.by_day
            ],
            "escalation_reasons": [
                {"reason": reason, "count": count}
                for reason, count in self.escalation_reasons
            ],
        }


def _iso(value: dt.datetime) -> str:
    return value.isoformat() + "Z"


def _naive_utc(value: dt.datetime, what: str) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        raise InvalidInput(f"{what} must be a datetime")
    if value.tzinfo is not None:
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def _parse_moment(what: str, value: str, *, end: bool) -> dt.datetime:
    """A date (as the end: the whole day, so the next midnight) or ISO datetime."""
    message = f"the period {what} must be a date (YYYY-MM-DD) or an ISO datetime"
    if not isinstance(value, str) or len(value) > MAX_MOMENT_CHARS:
        raise InvalidInput(message)
    try:
        return parse_moment(value, end=end)
    except ValueError as exc:
        raise InvalidInput(f"{message}, not {value!r}") from exc


def _blank(value: str | None) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def parse_period(
    start: str | None,
    end: str | None,
    *,
    now: dt.datetime,
    default_days: int = 30,
) -> tuple[dt.datetime, dt.datetime]:
    """Parse a report period into naive-UTC [start, end).

    ``start``/``end`` are ``YYYY-MM-DD`` (an end date counts as a whole day) or
    ISO datetimes (an offset or "Z" is converted to UTC). A missing end is
    ``now``; a missing start is ``default_days`` days before the end.

    Raises:
        InvalidInput: unreadable text, start not before end, or more than
            ``MAX_PERIOD_DAYS`` days.
    """
    if not isinstance(default_days, int) or not 0 < default_days <= MAX_PERIOD_DAYS:
        raise InvalidInput(f"default_days must be 1..{MAX_PERIOD_DAYS}")
    now = _naive_utc(now, "now")
    end_at = now if _blank(end) else _parse_moment("end", end.strip(), end=True)
    start_at = (
        end_at - dt.timedelta(days=default_days)
        if _blank(start)
        else _parse_moment("start", start.strip(), end=False)
    )
    _check_period(start_at, end_at)
    return start_at, end_at


def _check_period(start: dt.datetime, end: dt.datetime) -> None:
    if start >= end:
        raise InvalidInput("the period start must be before its end")
    if end - start > dt.timedelta(days=MAX_PERIOD_DAYS):
        raise InvalidInput(f"a period is at most {MAX_PERIOD_DAYS} days")


def _window(recontact_hours: float) -> dt.timedelta:
    if (
        isinstance(recontact_hours, bool)
        or not isinstance(recontact_hours, (int, float))
        or not 0 < recontact_hours <= MAX_RECONTACT_HOURS
    ):
        raise InvalidInput(
            f"recontact_hours must be more than 0 and at most {MAX_RECONTACT_HOURS}"
        )
    return dt.timedelta(hours=recontact_hours)


def _checked(start: dt.datetime, end: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    start, end = _naive_utc(start, "start"), _naive_utc(end, "end")
    _check_period(start, end)
    return start, end


def _facts(
    session: Session,
    *,
    start: dt.datetime,
    end: dt.datetime,
    now: dt.datetime,
    recontact_hours: float,
):  # noqa: ANN202
    """The facts selectable of a checked period (naive UTC)."""
    window = _window(recontact_hours)
    horizon = recontact_horizon(session, start=start, end=end, now=now, window=window)
    return conversation_facts(
        start=start, end=end, horizon=horizon, now=now, window=window
    )


def count_conversations(
    session: Session, *, start: dt.datetime, end: dt.datetime
) -> int:
    """Number of conversations started in [start, end) (for progress bars)."""
    start, end = _checked(start, end)
    c = CONVERSATIONS.c
    return session.execute(
        select(func.count())
        .select_from(CONVERSATIONS)
        .where(c.started_at >= start, c.started_at < end)
    ).scalar_one()


def conversation_rows(
    session: Session,
    *,
    start: dt.datetime,
    end: dt.datetime,
    now: dt.datetime,
    recontact_hours: float = DEFAULT_RECONTACT_HOURS,
    batch_size: int = 5000,
) -> Iterator[tuple]:
    """Stream one tuple per conversation started in [start, end), REPORT_COLUMNS order.

    Ordered by start time then id; fetched ``batch_size`` rows at a time (a
    server-side cursor on PostgreSQL), so memory stays constant. Datetimes are
    naive UTC, flags are bool, ``contained`` is None while undecided. Input is
    checked at the call; the rows are read as the iterator is consumed, inside
    the caller's session (keep it open until the end).

    Raises:
        InvalidInput: a bad period, window or batch size.
    """
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        raise InvalidInput("batch_size must be a positive integer")
    start, end = _checked(start, end)
    now = _naive_utc(now, "now")
    facts = _facts(
        session, start=start, end=end, now=now, recontact_hours=recontact_hours
    ).subquery("facts")
    stmt = (
        select(*(facts.c[name] for name in REPORT_COLUMNS))
        .order_by(facts.c.started_at, sort_text(facts.c.conversation_id))
        .execution_options(stream_results=True, yield_per=batch_size)
    )
    return _stream(session, stmt)


def _stream(session: Session, stmt: Any) -> Iterator[tuple]:
    """Run ``stmt`` when iteration starts; close its cursor when it stops."""
    result = session.execute(stmt)
    try:
        for batch in result.partitions():
            yield from map(tuple, batch)
    finally:
        result.close()


def _aggregates(f) -> list:  # noqa: ANN001
    """The additive counters of a set of facts rows, labelled as ``_COUNTERS``."""

    def count_if(condition):  # noqa: ANN001, ANN202
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    return [
        func.count().label("conversations"),
        count_if(f.status == "closed").label("closed"),
        count_if(f.status == "open").label("open"),
        count_if(f[SELF_SERVED].is_(True)).label("self_served"),
        count_if(f.escalated.is_(True)).label("escalated"),
        count_if(f.outcome == "abandoned").label("abandoned"),
        count_if(f.contained.is_(True)).label("contained"),
        func.count(f.contained).label("containment_eligible"),
        count_if(f[SELF_SERVED].is_(True) & f.contained.is_(None)).label(
            "containment_pending"
        ),
        func.count(f.first_response_seconds).label("frt_answered"),
        count_if(f.escalated.is_(True) & f.first_response_at.is_(None)).label(
            "never_answered"
        ),
        func.sum(f.handle_ms).label("handle_ms"),
        func.count(f.handle_ms).label("aht_count"),
        count_if(f.csat_requested.is_(True)).label("csat_asked"),
        func.count(f.csat).label("csat_answered"),
        count_if(f.csat.in_((4, 5))).label("csat_positive"),
    ]


def _aggregate_query(facts, *, native_percentiles: bool):  # noqa: ANN001, ANN202
    """One UNION ALL over the facts: the counters of every slice.

    Slices: overall, per channel, per day, per escalation reason. With
    ``native_percentiles`` (PostgreSQL) also the first-response percentiles of
    the first three (level + ``_PERCENTILES``), over the answered escalations
    only: a small sort, while the counters need none.
    """
    f = facts.c
    no_text, no_day = cast(null(), String), cast(null(), Date)
    slices = (
        (_ALL, no_text, no_day, ()),
        (_CHANNEL, f.channel, no_day, (f.channel,)),
        (_DAY, no_text, f[DAY], (f[DAY],)),
        (_REASON, f.escalation_reason, no_day, (f.escalation_reason,)),
    )
    counters = _aggregates(f)
    no_frt = [
        cast(null(), Float).label("frt_median"),
        cast(null(), Float).label("frt_p90"),
    ]

    def member(number: int, text, day, columns: list):  # noqa: ANN001, ANN202
        return select(
            literal(number).label("level"),
            text.label("key_text"),
            day.label("key_day"),
            *columns,
        ).select_from(facts)

    members = [
        member(number, text, day, [*counters, *no_frt]).group_by(*keys)
        for number, text, day, keys in slices
    ]
    members[-1] = members[-1].where(f.escalation_reason.isnot(None))
    if native_percentiles:
        frt = f.first_response_seconds
        percentiles = [
            func.percentile_cont(0.5).within_group(frt),
            func.percentile_cont(0.9).within_group(frt),
        ]
        members += [
            member(number + _PERCENTILES, text, day, [*_NULLS, *percentiles])
            .where(frt.isnot(None))
            .group_by(*keys)
            for number, text, day, keys in slices[:3]
        ]
    return union_all(*members)


def _python_percentiles(session: Session, facts) -> dict:  # noqa: ANN001
    """(median, p90) of the first response per slice, interpolated in Python."""
    f = facts.c
    values: dict[tuple, list[float]] = defaultdict(list)
    rows = session.execute(
        select(f.channel, f[DAY], f.first_response_seconds)
        .where(f.first_response_seconds.isnot(None))
        .order_by(f.first_response_seconds)
    )
    for channel, day, seconds in rows:
        for key in ((_ALL, None), (_CHANNEL, channel), (_DAY, _as_date(day))):
            values[key].append(seconds)
    return {key: (percentile(v, 0.5), percentile(v, 0.9)) for key, v in values.items()}


def _as_date(value: Any) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def _rate(numerator: float, denominator: float) -> float | None:
    return None if not denominator else numerator / denominator


def _figures(counters: dict[str, Any], frt: tuple) -> KpiFigures:
    n = {name: counters.get(name) or 0 for name in _COUNTERS}
    ints = {name: int(n[name]) for name in _COUNTERS if name != "handle_ms"}
    return KpiFigures(
        **{k: v for k, v in ints.items() if k in _FIGURE_FIELDS},
        containment_rate=_rate(n["contained"], n["containment_eligible"]),
        escalation_rate=_rate(n["escalated"], n["conversations"]),
        abandonment_rate=_rate(n["abandoned"], n["closed"]),
        frt_median_seconds=None if frt[0] is None else float(frt[0]),
        frt_p90_seconds=None if frt[1] is None else float(frt[1]),
        aht_seconds=_rate(float(n["handle_ms"]) / 1000, n["aht_count"]),
        csat_score=_rate(n["csat_positive"], n["csat_answered"]),
        csat_response_rate=_rate(n["csat_answered"], n["csat_asked"]),
    )


_FIGURE_FIELDS = frozenset(f.name for f in dataclasses.fields(KpiFigures))
_NULLS = [null() for _ in _COUNTERS]
_EMPTY = _figures({}, (None, None))


def _days(start: dt.datetime, end: dt.datetime) -> list[dt.date]:
    first, last = start.date(), (end - dt.timedelta(microseconds=1)).date()
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def _kpi_facts(session: Session, **period: Any) -> Any:
    """The facts the figures need, as a CTE.

    Narrower rows to aggregate, and PostgreSQL drops the joins of the unused
    columns (value tier, agent).
    """
    full = _facts(session, **period).subquery("all_facts")
    return select(*(full.c[name] for name in _KPI_FACTS)).cte("facts")


def kpi_report(
    session: Session,
    *,
    start: dt.datetime,
    end: dt.datetime,
    now: dt.datetime,
    recontact_hours: float = DEFAULT_RECONTACT_HOURS,
) -> KpiReport:
    """The KPIs of the conversations started in [start, end) (see KPI_DEFINITIONS).

    Aggregated in SQL from the same facts as ``conversation_rows``; ``by_day``
    lists every UTC day of the period, empty days included.

    Raises:
        InvalidInput: a bad period or window.
    """
    start, end = _checked(start, end)
    now = _naive_utc(now, "now")
    facts = _kpi_facts(
        session, start=start, end=end, now=now, recontact_hours=recontact_hours
    )
    native = session.get_bind().dialect.name == "postgresql"
    rows = session.execute(_aggregate_query(facts, native_percentiles=native))
    counters: dict[tuple, dict[str, Any]] = {}
    frt: dict[tuple, tuple] = {}
    for row in rows.mappings():
        level = row["level"] % _PERCENTILES
        key = _as_date(row["key_day"]) if level == _DAY else row["key_text"]
        if row["level"] >= _PERCENTILES:
            frt[(level, key)] = (row["frt_median"], row["frt_p90"])
        else:
            counters[(level, key)] = dict(row)
    if not native:
        frt = _python_percentiles(session, facts)
    figures = {
        slice_key: _figures(values, frt.get(slice_key, (None, None)))
        for slice_key, values in counters.items()
        if slice_key[0] != _REASON
    }
    reasons = [
        (key, int(values["conversations"]))
        for (level, key), values in counters.items()
        if level == _REASON
    ]
    reasons.sort(key=lambda item: (-item[1], item[0]))
    return KpiReport(
        start=start,
        end=end,
        now=now,
        recontact_hours=recontact_hours,
        overall=figures.get((_ALL, None), _EMPTY),
        by_channel={
            key: figures[(level, key)]
            for level, key in sorted(k for k in figures if k[0] == _CHANNEL)
        },
        by_day=[(day, figures.get((_DAY, day), _EMPTY)) for day in _days(start, end)],
        escalation_reasons=reasons,
    )
