"""Dates and times typed by people (report periods, filters): one parser.

``parse_moment`` reads ``YYYY-MM-DD`` or an ISO 8601 datetime (``Z`` or an
offset converted to UTC) as a naive-UTC datetime; a date read as an end means
the whole day (its next midnight). Callers word their own error messages.
"""

from __future__ import annotations

import datetime as dt
import re

MAX_MOMENT_CHARS = 40
DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


def naive_utc(moment: dt.datetime) -> dt.datetime:
    """``moment`` in UTC without tzinfo (naive values are taken as UTC already)."""
    if moment.tzinfo is not None:
        return moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return moment


def parse_moment(value: str, *, end: bool = False) -> dt.datetime:
    """Parse a date or ISO datetime as naive UTC (a date as ``end``: next midnight).

    Raises:
        ValueError: not a date or datetime, or longer than ``MAX_MOMENT_CHARS``.
    """
    if not isinstance(value, str) or len(value) > MAX_MOMENT_CHARS:
        raise ValueError("not a date or datetime")
    try:
        if DATE_ONLY.fullmatch(value):
            day = dt.date.fromisoformat(value)
            if end:
                day += dt.timedelta(days=1)
            return dt.datetime.combine(day, dt.time())
        text = value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value
        return naive_utc(dt.datetime.fromisoformat(text))
    except OverflowError as exc:
        raise ValueError("date out of range") from exc
