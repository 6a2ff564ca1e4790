"""Agent hours: the spec language, time zones and daylight-saving boundaries."""

from __future__ import annotations

import datetime as dt

import pytest

from crm_store.errors import InvalidInput
from crm_store.services.agent_hours import AgentHours, parse_agent_hours
from crm_store.services.handoff import agents_available

UTC = dt.timezone.utc


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args)


def test_default_is_the_policy_hours_in_amsterdam() -> None:
    for spec in (None, "", "   "):
        hours = parse_agent_hours(spec)
        assert hours.zone == "Europe/Amsterdam" and not hours.always
        assert hours.describe() == (
            "Mon-Fri 08:00-20:00, Sat 09:00-17:00 (Europe/Amsterdam)"
        )
    hours = parse_agent_hours(None)
    # November: Amsterdam is UTC+1.
    assert hours.is_open(utc(2026, 11, 2, 7, 0))  # Mon 08:00
    assert not hours.is_open(utc(2026, 11, 2, 6, 59))  # Mon 07:59
    assert hours.is_open(utc(2026, 11, 2, 18, 59))  # Mon 19:59
    assert not hours.is_open(utc(2026, 11, 2, 19, 0))  # Mon 20:00
    assert hours.is_open(utc(2026, 11, 7, 15, 59))  # Sat 16:59
    assert not hours.is_open(utc(2026, 11, 7, 16, 0))  # Sat 17:00
    assert not hours.is_open(utc(2026, 11, 8, 12, 0))  # Sunday
    # agents_available uses the same default, or the hours it is given.
    assert agents_available(utc(2026, 11, 8, 12, 0)) is False
    assert agents_available(utc(2026, 11, 8, 12, 0), parse_agent_hours("always"))


def test_always() -> None:
    hours = parse_agent_hours("always")
    assert hours.always and hours.describe() == "always"
    assert parse_agent_hours(" ALWAYS ").always
    moment = utc(2026, 12, 25, 3, 0)
    assert hours.is_open(moment) and hours.next_opening(moment) == moment


def test_zone_lists_and_full_day_names() -> None:
    hours = parse_agent_hours("mon,wed 10:00-12:00; Monday 13:00-17:00 Europe/London")
    assert hours.zone == "Europe/London"
    assert hours.describe() == (
        "Mon 10:00-12:00, 13:00-17:00, Wed 10:00-12:00 (Europe/London)"
    )
    # July: London is UTC+1; 2026-07-06 is a Monday.
    assert hours.is_open(utc(2026, 7, 6, 9, 0))  # 10:00
    assert not hours.is_open(utc(2026, 7, 6, 11, 30))  # 12:30, lunch
    assert hours.is_open(utc(2026, 7, 6, 12, 0))  # 13:00
    assert not hours.is_open(utc(2026, 7, 7, 9, 0))  # Tuesday
    assert hours.is_open(utc(2026, 7, 8, 10, 59))  # Wed 11:59
    mixed = parse_agent_hours("mon-wed,fri 09:00-10:00; sun 00:00-24:00 UTC")
    assert [bool(day) for day in mixed.week] == [1, 1, 1, 0, 1, 0, 1]
    assert mixed.is_open(utc(2026, 7, 12, 23, 59))  # Sunday until midnight
    assert not mixed.is_open(utc(2026, 7, 13, 10, 0))  # Monday 10:00 (end excl.)
    # Overlapping entries merge; a timezone-aware ``at`` works too.
    merged = parse_agent_hours("mon 09:00-12:00; mon 11:00-14:00 UTC")
    assert merged.week[0] == ((540, 840),)
    aware = dt.datetime(2026, 7, 6, 15, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert merged.is_open(aware)  # 13:30 UTC


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("mon-fri", "each entry is 'DAYS HH:MM-HH:MM'"),
        ("xyz 09:00-10:00", "unknown day 'xyz'"),
        ("mon 9-17", "bad time '9'; use HH:MM"),
        ("mon 09:00", "bad time range '09:00'"),
        ("mon 10:00-09:00", "must end after it starts"),
        ("mon 22:00-06:00", "split overnight hours"),
        ("mon 25:00-26:00", "out of range"),
        ("mon 09:75-10:00", "out of range"),
        ("mon 09:00-17:00 Mars/Base", "unknown time zone 'Mars/Base'"),
        ("mon 09:00-17:00 ../../etc/passwd", "unknown time zone"),
        ("fri-mon 09:00-10:00", "runs backwards"),
        ("mon,,tue 09:00-10:00", "empty day"),
        ("mon 09:00-17:00 Europe/London; tue 09:00-10:00", "goes at the very end"),
        ("always Europe/London", "'always' stands alone"),
        ("mon 09:00-10:00;; tue 09:00-10:00", "empty entry"),
        ("mon 09:00-10:00 11:00-12:00 12:00-13:00", "each entry is"),
        ("mon 09:00-10:00 11:00-12:00", "one time range per entry"),
    ],
)
def test_bad_specs_say_what_is_wrong_with_an_example(spec: str, says: str) -> None:
    with pytest.raises(InvalidInput) as error:
        parse_agent_hours(spec)
    message = str(error.value)
    assert says in message
    assert "example: 'mon-fri 08:00-20:00; sat 09:00-17:00 Europe/Amsterdam'" in message


def test_non_text_spec_is_refused() -> None:
    with pytest.raises(InvalidInput, match="must be text"):
        parse_agent_hours(42)  # type: ignore[arg-type]


def test_hours_follow_the_wall_clock_across_dst() -> None:
    hours = parse_agent_hours(None)
    # Spring forward 2026-03-29 (Amsterdam UTC+1 -> UTC+2).
    assert hours.is_open(utc(2026, 3, 27, 7, 0))  # Fri 08:00 CET = 07:00 UTC
    assert not hours.is_open(utc(2026, 3, 30, 5, 30))  # Mon 07:30 CEST
    assert hours.is_open(utc(2026, 3, 30, 6, 0))  # Mon 08:00 CEST = 06:00 UTC
    assert not hours.is_open(utc(2026, 3, 30, 18, 0))  # Mon 20:00 CEST
    # Saturday 17:00 -> Monday 08:00 over the change: 06:00 UTC.
    assert hours.next_opening(utc(2026, 3, 28, 16, 0)) == utc(2026, 3, 30, 6, 0)
    # Fall back 2026-10-25 (UTC+2 -> UTC+1): Monday 08:00 CET = 07:00 UTC.
    assert hours.next_opening(utc(2026, 10, 24, 15, 0)) == utc(2026, 10, 26, 7, 0)
    assert not hours.is_open(utc(2026, 10, 26, 6, 30))  # 07:30 CET
    # Open now: next_opening is now.
    now = utc(2026, 10, 26, 9, 0)
    assert hours.next_opening(now) == now


def test_window_inside_the_spring_forward_gap_opens_at_the_jump() -> None:
    # 2026-03-29 Amsterdam: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
    hours = parse_agent_hours("sun 02:30-04:00")
    assert hours.next_opening(utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 1, 0)
    assert not hours.is_open(utc(2026, 3, 29, 0, 59))  # 01:59 CET
    assert hours.is_open(utc(2026, 3, 29, 1, 0))  # 03:00 CEST
    # A window wholly inside the gap does not happen that day.
    vanished = parse_agent_hours("sun 02:00-02:30")
    assert vanished.next_opening(utc(2026, 3, 28, 12, 0)) == utc(2026, 4, 5, 0, 0)


def test_repeated_hour_at_fall_back_is_open_twice() -> None:
    # 2026-10-25 Amsterdam: 02:00-03:00 happens at 00:00-01:00 and 01:00-02:00 UTC.
    hours = parse_agent_hours("sun 02:00-03:00")
    assert hours.next_opening(utc(2026, 10, 24, 12, 0)) == utc(2026, 10, 25, 0, 0)
    assert hours.is_open(utc(2026, 10, 25, 0, 30))
    assert hours.is_open(utc(2026, 10, 25, 1, 30))
    assert not hours.is_open(utc(2026, 10, 25, 2, 0))  # 03:00 CET


def test_other_zones_change_dst_on_their_own_dates() -> None:
    # New York springs forward on 2026-03-08, Europe only on 2026-03-29.
    hours = parse_agent_hours("mon-fri 09:00-17:00 America/New_York")
    assert hours.is_open(utc(2026, 3, 6, 14, 0))  # Fri 09:00 EST
    assert not hours.is_open(utc(2026, 3, 9, 12, 59))  # Mon 08:59 EDT
    assert hours.is_open(utc(2026, 3, 9, 13, 0))  # Mon 09:00 EDT
    assert hours.next_opening(utc(2026, 3, 6, 22, 0)) == utc(2026, 3, 9, 13, 0)


def test_agent_hours_is_frozen() -> None:
    hours = parse_agent_hours(None)
    with pytest.raises(AttributeError):
        hours.always = True  # type: ignore[misc]
    assert isinstance(hours, AgentHours)
    assert hours.next_opening(utc(2026, 11, 8, 12, 0)).tzinfo is None
