"""When human agents work: a small spec language, parsed once, evaluated in UTC.

Spec (``CRM_AGENT_HOURS``)::

    always
    mon-fri 08:00-20:00; sat 09:00-17:00                 (Europe/Amsterdam)
    mon-fri 09:00-17:00 Europe/London
    mon,wed 10:00-12:00; mon 13:00-17:00; sun 10:00-14:00 America/New_York

Entries are separated by ``;``. Each names days (``mon``..``sun`` or full names;
ranges ``mon-fri``, comma lists ``mon,wed``, mixed ``mon-wed,fri``) and one
``HH:MM-HH:MM`` range in local wall-clock time (end after start, ``24:00`` allowed
as end; split overnight hours in two entries). An optional IANA time zone ends
the spec (default Europe/Amsterdam). Hours follow the wall clock across daylight
saving changes: 08:00 is 08:00 local in summer and in winter.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crm_store.errors import InvalidInput

DEFAULT_SPEC = "mon-fri 08:00-20:00; sat 09:00-17:00"
DEFAULT_ZONE = "Europe/Amsterdam"
EXAMPLE = "mon-fri 08:00-20:00; sat 09:00-17:00 Europe/Amsterdam"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FULL_DAYS = (
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
)
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
MINUTES_PER_DAY = 24 * 60

Window = tuple[int, int]  # minutes since local midnight: [start, end)


@dataclass(frozen=True)
class AgentHours:
    """Parsed agent hours: per weekday (Monday = 0) the open windows, in a zone."""

    always: bool
    zone: str = DEFAULT_ZONE
    week: tuple[tuple[Window, ...], ...] = ((),) * 7

    @property
    def tz(self) -> ZoneInfo:
        """The time zone of the hours."""
        return ZoneInfo(self.zone)

    def is_open(self, at: dt.datetime) -> bool:
        """Tell whether agents work at ``at`` (naive UTC)."""
        if self.always:
            return True
        local = _utc(at).astimezone(self.tz)
        minute = local.hour * 60 + local.minute
        return any(s <= minute < e for s, e in self.week[local.weekday()])

    def next_opening(self, at: dt.datetime) -> dt.datetime | None:
        """Return ``at`` when open, else the first later moment agents work.

        Naive UTC in and out. A window that starts inside a spring-forward gap
        opens when the clocks jump; None only when no window ever opens.
        """
        if self.is_open(at):
            return at
        start = _utc(at).astimezone(self.tz).date()
        candidates = []
        for offset in range(9):
            day = start + dt.timedelta(days=offset)
            for begin, _end in self.week[day.weekday()]:
                moment = self._opening_utc(day, begin)
                if moment > at and self.is_open(moment):
                    candidates.append(moment)
            if candidates:
                return min(candidates)
        return None

    def _opening_utc(self, day: dt.date, minute: int) -> dt.datetime:
        """Naive UTC of local ``day`` + ``minute`` (first instant after a gap)."""
        local = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=minute)
        first = local.replace(tzinfo=self.tz)  # fold=0: the earlier of repeated times
        utc = first.astimezone(dt.timezone.utc)
        if utc.astimezone(self.tz).replace(tzinfo=None) == local:
            return utc.replace(tzinfo=None)
        # Nonexistent local time (clocks jumped over it): open at the jump.
        low = local.replace(tzinfo=self.tz, fold=1).astimezone(dt.timezone.utc)
        high = utc
        while high - low > dt.timedelta(minutes=1):
            mid = low + (high - low) / 2
            mid = mid.replace(second=0, microsecond=0)
            if mid.astimezone(self.tz).replace(tzinfo=None) >= local:
                high = mid
            else:
                low = mid
        return high.replace(tzinfo=None)

    def describe(self) -> str:
        """Human-readable hours, e.g. ``Mon-Fri 08:00-20:00, Sat 09:00-17:00 (…)``."""
        if self.always:
            return "always"
        parts: list[str] = []
        day = 0
        while day < 7:
            windows = self.week[day]
            last = day
            while last + 1 < 7 and self.week[last + 1] == windows:
                last += 1
            if windows:
                days = DAYS[day].title()
                if last > day:
                    days += "-" + DAYS[last].title()
                times = ", ".join(f"{_hhmm(s)}-{_hhmm(e)}" for s, e in windows)
                parts.append(f"{days} {times}")
            day = last + 1
        return f"{', '.join(parts)} ({self.zone})"


def _utc(at: dt.datetime) -> dt.datetime:
    if at.tzinfo is not None:
        return at.astimezone(dt.timezone.utc)
    return at.replace(tzinfo=dt.timezone.utc)


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _fail(problem: str) -> InvalidInput:
    return InvalidInput(f"agent hours: {problem} (example: {EXAMPLE!r}, or 'always')")


def _day(name: str) -> int:
    name = name.strip().lower()
    if name in DAYS:
        return DAYS.index(name)
    if name in FULL_DAYS:
        return FULL_DAYS.index(name)
    raise _fail(f"unknown day {name!r}; use mon, tue, wed, thu, fri, sat, sun")


def _days(text: str) -> list[int]:
    days: list[int] = []
    for part in text.split(","):
        if not part.strip():
            raise _fail(f"empty day in {text!r}")
        first, dash, last = part.partition("-")
        if not dash:
            days.append(_day(first))
            continue
        a, b = _day(first), _day(last)
        if b < a:
            raise _fail(
                f"day range {part!r} runs backwards; weeks start on monday "
                "(write e.g. 'fri-sun,mon')"
            )
        days.extend(range(a, b + 1))
    return days


def _minute(text: str, *, end: bool) -> int:
    match = _TIME.match(text)
    if not match:
        raise _fail(f"bad time {text!r}; use HH:MM")
    hour, minute = int(match.group(1)), int(match.group(2))
    value = hour * 60 + minute
    limit = MINUTES_PER_DAY if end else MINUTES_PER_DAY - 1
    if minute > 59 or value > limit:
        raise _fail(f"time {text!r} is out of range (00:00-24:00)")
    return value


def _window(text: str) -> Window:
    begin, dash, end = text.partition("-")
    if not dash:
        raise _fail(f"bad time range {text!r}; use HH:MM-HH:MM")
    start, stop = _minute(begin, end=False), _minute(end, end=True)
    if stop <= start:
        raise _fail(
            f"time range {text!r} must end after it starts; split overnight hours "
            "('mon 22:00-24:00; tue 00:00-06:00')"
        )
    return start, stop


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _fail(
            f"unknown time zone {name!r}; use an IANA name such as Europe/London"
        ) from None
    return name


def _merge(windows: list[Window]) -> tuple[Window, ...]:
    merged: list[list[int]] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple((s, e) for s, e in merged)


@lru_cache(maxsize=32)
def parse_agent_hours(spec: str | None) -> AgentHours:
    """Parse an agent-hours spec (see the module docstring); None/"" = policies.

    Raises:
        InvalidInput: says what is wrong and shows an example.
    """
    if spec is not None and not isinstance(spec, str):
        raise _fail("the spec must be text")
    text = (spec or "").strip() or DEFAULT_SPEC
    if text.lower() == "always":
        return AgentHours(always=True)
    entries = [e.strip() for e in text.split(";")]
    zone = DEFAULT_ZONE
    last = entries[-1].split()
    if len(last) == 3:
        if _TIME.match(last[2].partition("-")[0]):
            raise _fail(
                f"one time range per entry, not {entries[-1]!r}; repeat the days "
                "('mon 09:00-12:00; mon 13:00-17:00')"
            )
        zone = _zone(last[2])
        entries[-1] = " ".join(last[:2])
    windows: list[list[Window]] = [[] for _ in range(7)]
    for entry in entries:
        tokens = entry.split()
        if not tokens:
            raise _fail("empty entry between ';'")
        if tokens[0].lower() == "always":
            raise _fail("'always' stands alone, without days, hours or zone")
        if len(tokens) != 2:
            if any("/" in token for token in tokens):
                raise _fail(f"the time zone goes at the very end, not in {entry!r}")
            raise _fail(f"each entry is 'DAYS HH:MM-HH:MM', not {entry!r}")
        window = _window(tokens[1])
        for day in _days(tokens[0]):
            windows[day].append(window)
    return AgentHours(
        always=False, zone=zone, week=tuple(_merge(day) for day in windows)
    )


DEFAULT_HOURS = parse_agent_hours(None)
