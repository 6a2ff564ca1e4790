"""KPIs and report rows on a hand-computed data set (both backends).

Period [2026-03-01, 2026-03-06) (UTC days Mar 1..5, Mar 4 has no conversation),
now = 2026-03-08 00:45, re-contact window 48 h unless a test says otherwise.

id  channel  customer     start         end           status outcome / notes
c00 chat     C1           Feb 28 20:00  Feb 28 20:30  closed self_served, before period
c01 chat     C1 (gold)    Mar 1 09:00   Mar 1 09:10   closed self_served, CSAT 5
c02 chat     C2 (silver)  Mar 1 10:00   Mar 1 10:20   closed self_served, CSAT 2
c03 chat     C3           Mar 1 11:00   Mar 1 11:30   closed escalated h1, CSAT asked
c04 telegram C4           Mar 1 12:00   Mar 1 12:40   closed escalated h2 + h3
c05 sms      C5           Mar 1 13:00   Mar 1 13:30   closed escalated h4, no reply
c06 chat     rest:anon1   Mar 1 23:30   Mar 2 00:20   closed self_served (midnight)
c07 chat     rest:anon1   Mar 2 10:00   Mar 2 10:05   closed abandoned
c08 voice    C3           Mar 2 14:00   -             open
c14 voice    C5           Mar 2 16:00   Mar 2 16:10   closed escalated, no handoff
c09 telegram C1           Mar 3 08:10   Mar 3 08:40   closed escalated h5, CSAT 4
c10 sms      C2           Mar 3 11:20   Mar 3 11:30   closed self_served
c11 email    C4           Mar 5 20:00   Mar 6 01:00   closed self_served, CSAT asked
c12 chat     C6           Mar 5 23:30   Mar 6 00:30   closed self_served
c13 chat     C6           Mar 8 00:20   Mar 8 00:25   closed self_served, after period
(rest:anon1 = no customer, matched by tracker key.)

Re-contacts (next conversation of the same customer / tracker key):
c01 -> c09 (telegram) at c01 end + 47 h: re-contact, not contained.
c02 -> c10 (sms) at c02 end + 49 h: no re-contact; window over -> contained.
c03 -> c08 after 26.5 h; c05 -> c14 after 26.5 h;
c06 -> c07 (by tracker key) after 9h40.
c12 -> c13 at Mar 8 00:20 = c12 end + 47h50: found although after end + 48 h
(Mar 8 00:00), because c12 ended after the period end.
c10: window ended Mar 5 11:30 <= now -> contained. c11: window ends Mar 8 01:00 >
now -> pending. c08 is open -> undecided.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections import defaultdict

import numpy
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from crm_store.db import make_session_factory
from crm_store.errors import InvalidInput
from crm_store.models import (
    Conversation,
    Customer,
    CustomerScore,
    Handoff,
    StaffUser,
)
from crm_store.services.report_sql import percentile
from crm_store.services.reports import (
    DEFAULT_RECONTACT_HOURS,
    KPI_DEFINITIONS,
    REPORT_COLUMNS,
    KpiFigures,
    conversation_rows,
    count_conversations,
    kpi_report,
    parse_period,
)

START = dt.datetime(2026, 3, 1)
END = dt.datetime(2026, 3, 6)
NOW = dt.datetime(2026, 3, 8, 0, 45)


def at(day: int, hour: int, minute: int = 0, month: int = 3) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute)


# (id, channel, customer, tracker, start, end, status, outcome, csat asked, csat)
CONVERSATIONS = [
    ("c00", "chat", "C1", "rest:c1a", at(28, 20, 0, 2), at(28, 20, 30, 2),
     "closed", "self_served", None, None),
    ("c01", "chat", "C1", "rest:c1b", at(1, 9), at(1, 9, 10),
     "closed", "self_served", at(1, 9, 9), 5),
    ("c02", "chat", "C2", "rest:c2", at(1, 10), at(1, 10, 20),
     "closed", "self_served", at(1, 10, 19), 2),
    ("c03", "chat", "C3", "rest:c3", at(1, 11), at(1, 11, 30),
     "closed", "escalated", at(1, 11, 29), None),
    ("c04", "telegram", "C4", "telegram:4", at(1, 12), at(1, 12, 40),
     "closed", "escalated", None, None),
    ("c05", "sms", "C5", "sms:5", at(1, 13), at(1, 13, 30),
     "closed", "escalated", None, None),
    ("c06", "chat", None, "rest:anon1", at(1, 23, 30), at(2, 0, 20),
     "closed", "self_served", None, None),
    ("c07", "chat", None, "rest:anon1", at(2, 10), at(2, 10, 5),
     "closed", "abandoned", None, None),
    ("c08", "voice", "C3", "voice:3", at(2, 14), None,
     "open", None, None, None),
    ("c14", "voice", "C5", "voice:5", at(2, 16), at(2, 16, 10),
     "closed", "escalated", None, None),
    ("c09", "telegram", "C1", "telegram:1", at(3, 8, 10), at(3, 8, 40),
     "closed", "escalated", at(3, 8, 39), 4),
    ("c10", "sms", "C2", "sms:2", at(3, 11, 20), at(3, 11, 30),
     "closed", "self_served", None, None),
    ("c11", "email", "C4", "email:4", at(5, 20), at(6, 1),
     "closed", "self_served", at(6, 0, 59), None),
    ("c12", "chat", "C6", "rest:c6a", at(5, 23, 30), at(6, 0, 30),
     "closed", "self_served", None, None),
    ("c13", "chat", "C6", "rest:c6b", at(8, 0, 20), at(8, 0, 25),
     "closed", "self_served", None, None),
]  # fmt: skip

# (id, conversation, reason, status, created, claimed by, claimed, first reply, end)
HANDOFFS = [
    (1, "c03", "complaint", "resolved", at(1, 11, 5), "alice", at(1, 11, 7),
     at(1, 11, 8), at(1, 11, 25)),
    (2, "c04", "low_confidence", "handed_back", at(1, 12, 5), "bob", at(1, 12, 10),
     at(1, 12, 15), at(1, 12, 20)),
    (3, "c04", "customer_request", "resolved", at(1, 12, 25), "alice",
     at(1, 12, 26), at(1, 12, 27), at(1, 12, 35)),
    (4, "c05", "complaint", "ticket", at(1, 13, 2), None, None, None, None),
    (5, "c09", "complaint", "resolved", at(3, 8, 12), "alice", at(3, 8, 13),
     at(3, 8, 27), at(3, 8, 30)),
    # Handoffs of conversations outside the period: never counted.
    (6, "c00", "fallback", "resolved", at(28, 20, 10, 2), "bob", at(28, 20, 11, 2),
     at(28, 20, 12, 2), at(28, 20, 20, 2)),
    (7, "c13", "fallback", "waiting", at(8, 0, 21), None, None, None, None),
]  # fmt: skip


def load(session: Session) -> None:
    staff = {"alice": 1, "bob": 2}
    for name, staff_id in staff.items():
        session.add(
            StaffUser(id=staff_id, username=name, password_hash="x", role="agent")
        )
    for number in range(1, 7):
        session.add(Customer(id=f"C{number}", first_name=f"N{number}"))
    session.flush()
    for customer_id, tier in (("C1", "gold"), ("C2", "silver")):
        session.add(
            CustomerScore(customer_id=customer_id, as_of=START, value_tier=tier)
        )
    for (
        cid,
        channel,
        customer,
        key,
        start,
        end,
        status,
        outcome,
        asked,
        csat,
    ) in CONVERSATIONS:
        session.add(
            Conversation(
                id=cid,
                tracker_key=key,
                customer_id=customer,
                channel=channel,
                started_at=start,
                last_activity_at=end or start + dt.timedelta(minutes=5),
                ended_at=end,
                status=status,
                outcome=outcome,
                csat=csat,
                csat_requested_at=asked,
            )
        )
    session.flush()
    for hid, cid, reason, status, created, agent, claimed, first, done in HANDOFFS:
        session.add(
            Handoff(
                id=hid,
                conversation_id=cid,
                channel="chat",
                reason=reason,
                status=status,
                created_at=created,
                claimed_by=staff.get(agent),
                claimed_at=claimed,
                first_response_at=first,
                resolved_at=done,
            )
        )
    session.flush()


@pytest.fixture()
def session(empty_engine: Engine):
    with make_session_factory(empty_engine)() as session:
        load(session)
        session.commit()
        yield session


def figures(**values) -> KpiFigures:
    """KpiFigures with zeros/None for everything not given."""
    base = {
        name: None if name.endswith(("_rate", "_seconds", "_score")) else 0
        for name in KpiFigures.__dataclass_fields__
    }
    base.update(values)
    return KpiFigures(**base)


# Overall, by hand:
# 13 conversations (c01-c12, c14); open c08 -> 1, closed 12.
# self_served (closed, outcome self_served, no handoff): c01 c02 c06 c10 c11 c12 = 6.
# escalated: c03 c04 c05 c09 (handoffs) + c14 (outcome) = 5 -> 5/13.
# abandoned: c07 = 1 -> 1/12 closed.
# contained True: c02 c10 = 2; False: c01 c03 c04 c05 c06 c07 c09 c12 c14 = 9;
#   eligible 11 -> 2/11; pending: c11 = 1 (c08 open, not self-served).
# FRT: c03 11:08-11:05 = 180 s; c04 min(12:15, 12:27) - min(12:05, 12:25) = 600 s;
#   c09 08:27-08:12 = 900 s; sorted [180, 600, 900]: median = 600,
#   p90 at 0.9*2 = 1.8 -> 600 + 0.8*(900-600) = 840; never answered: c05, c14 = 2.
# AHT: c03 11:25-11:07 = 1080; c04 (12:20-12:10) + (12:35-12:26) = 600+540 = 1140;
#   c09 08:30-08:13 = 1020 -> (1080+1140+1020)/3 = 1080, count 3.
# CSAT asked c01 c02 c03 c09 c11 = 5; answered c01(5) c02(2) c09(4) = 3;
#   positive c01 c09 = 2 -> score 2/3, response rate 3/5.
OVERALL = figures(
    conversations=13, closed=12, open=1, self_served=6, escalated=5, abandoned=1,
    containment_eligible=11, contained=2, containment_pending=1,
    containment_rate=2 / 11, escalation_rate=5 / 13, abandonment_rate=1 / 12,
    frt_median_seconds=600.0, frt_p90_seconds=840.0, frt_answered=3,
    never_answered=2, aht_seconds=1080.0, aht_count=3, csat_asked=5,
    csat_answered=3, csat_positive=2, csat_score=2 / 3, csat_response_rate=3 / 5,
)  # fmt: skip

BY_CHANNEL = {
    # chat: c01 c02 c03 c06 c07 c12; self-served c01 c02 c06 c12; escalated c03;
    # abandoned c07; contained c02 only, all 6 decided; FRT [180]; AHT 1080;
    # CSAT asked c01 c02 c03, answered c01 c02, positive c01.
    "chat": figures(
        conversations=6, closed=6, self_served=4, escalated=1, abandoned=1,
        containment_eligible=6, contained=1, containment_rate=1 / 6,
        escalation_rate=1 / 6, abandonment_rate=1 / 6, frt_median_seconds=180.0,
        frt_p90_seconds=180.0, frt_answered=1, aht_seconds=1080.0, aht_count=1,
        csat_asked=3, csat_answered=2, csat_positive=1, csat_score=1 / 2,
        csat_response_rate=2 / 3,
    ),
    # email: c11, self-served and pending; CSAT asked, not answered.
    "email": figures(
        conversations=1, closed=1, self_served=1, containment_pending=1,
        escalation_rate=0.0, abandonment_rate=0.0, csat_asked=1,
        csat_response_rate=0.0,
    ),
    # sms: c05 (escalated, never answered, not contained) c10 (contained).
    "sms": figures(
        conversations=2, closed=2, self_served=1, escalated=1,
        containment_eligible=2, contained=1, containment_rate=0.5,
        escalation_rate=0.5, abandonment_rate=0.0, never_answered=1,
    ),
    # telegram: c04 c09; FRT [600, 900] -> median 750, p90 600 + 0.9*300 = 870;
    # AHT (1140+1020)/2 = 1080; CSAT c09: asked, 4.
    "telegram": figures(
        conversations=2, closed=2, escalated=2, containment_eligible=2,
        containment_rate=0.0, escalation_rate=1.0, abandonment_rate=0.0,
        frt_median_seconds=750.0, frt_p90_seconds=870.0, frt_answered=2,
        aht_seconds=1080.0, aht_count=2, csat_asked=1, csat_answered=1,
        csat_positive=1, csat_score=1.0, csat_response_rate=1.0,
    ),
    # voice: c08 (open) c14 (escalated by outcome, never answered).
    "voice": figures(
        conversations=2, closed=1, open=1, escalated=1, containment_eligible=1,
        containment_rate=0.0, escalation_rate=0.5, abandonment_rate=0.0,
        never_answered=1,
    ),
}  # fmt: skip

BY_DAY = [
    # Mar 1: c01-c06 (c06 ends on Mar 2 but started Mar 1). FRT [180, 600]:
    # median 390, p90 180 + 0.9*420 = 558; AHT (1080+1140)/2 = 1110.
    (dt.date(2026, 3, 1), figures(
        conversations=6, closed=6, self_served=3, escalated=3,
        containment_eligible=6, contained=1, containment_rate=1 / 6,
        escalation_rate=0.5, abandonment_rate=0.0, frt_median_seconds=390.0,
        frt_p90_seconds=558.0, frt_answered=2, never_answered=1,
        aht_seconds=1110.0, aht_count=2, csat_asked=3, csat_answered=2,
        csat_positive=1, csat_score=0.5, csat_response_rate=2 / 3,
    )),
    # Mar 2: c07 (abandoned) c08 (open) c14 (escalated by outcome).
    (dt.date(2026, 3, 2), figures(
        conversations=3, closed=2, open=1, escalated=1, abandoned=1,
        containment_eligible=2, containment_rate=0.0, escalation_rate=1 / 3,
        abandonment_rate=0.5, never_answered=1,
    )),
    # Mar 3: c09 (escalated, FRT 900, AHT 1020, CSAT 4) c10 (contained).
    (dt.date(2026, 3, 3), figures(
        conversations=2, closed=2, self_served=1, escalated=1,
        containment_eligible=2, contained=1, containment_rate=0.5,
        escalation_rate=0.5, abandonment_rate=0.0, frt_median_seconds=900.0,
        frt_p90_seconds=900.0, frt_answered=1, aht_seconds=1020.0, aht_count=1,
        csat_asked=1, csat_answered=1, csat_positive=1, csat_score=1.0,
        csat_response_rate=1.0,
    )),
    (dt.date(2026, 3, 4), figures()),
    # Mar 5: c11 (pending, CSAT asked) c12 (re-contacted after the period).
    (dt.date(2026, 3, 5), figures(
        conversations=2, closed=2, self_served=2, containment_eligible=1,
        containment_pending=1, containment_rate=0.0, escalation_rate=0.0,
        abandonment_rate=0.0, csat_asked=1, csat_response_rate=0.0,
    )),
]  # fmt: skip


def approx(value: KpiFigures) -> dict:
    return {k: pytest.approx(v) for k, v in value.as_dict().items()}


def test_kpis_overall_by_channel_and_day(session: Session) -> None:
    report = kpi_report(session, start=START, end=END, now=NOW)
    assert report.recontact_hours == DEFAULT_RECONTACT_HOURS == 48
    assert (report.start, report.end, report.now) == (START, END, NOW)
    assert report.overall.as_dict() == approx(OVERALL)
    assert list(report.by_channel) == ["chat", "email", "sms", "telegram", "voice"]
    for channel, expected in BY_CHANNEL.items():
        assert report.by_channel[channel].as_dict() == approx(expected), channel
    assert [day for day, _ in report.by_day] == [day for day, _ in BY_DAY]
    for (day, got), (_, expected) in zip(report.by_day, BY_DAY, strict=True):
        assert got.as_dict() == approx(expected), day
    # First handoff of each escalated conversation: c03 complaint, c04
    # low_confidence (h2 before h3), c05 complaint, c09 complaint; c14 has none.
    assert report.escalation_reasons == [("complaint", 3), ("low_confidence", 1)]
    assert set(KPI_DEFINITIONS) == set(KpiFigures.__dataclass_fields__)


def test_report_as_dict(session: Session) -> None:
    data = kpi_report(session, start=START, end=END, now=NOW).as_dict()
    assert data["start"] == "2026-03-01T00:00:00Z"
    assert data["now"] == "2026-03-08T00:45:00Z"
    assert data["by_day"][3] == {"day": "2026-03-04", **figures().as_dict()}
    assert data["escalation_reasons"][0] == {"reason": "complaint", "count": 3}
    assert data["overall"]["conversations"] == 13


def rows_by_id(session: Session, **kwargs) -> dict[str, dict]:
    rows = list(conversation_rows(session, start=START, end=END, now=NOW, **kwargs))
    return {row[0]: dict(zip(REPORT_COLUMNS, row, strict=True)) for row in rows}


def test_rows_one_per_conversation_in_start_order(session: Session) -> None:
    rows = list(conversation_rows(session, start=START, end=END, now=NOW, batch_size=2))
    assert [r[0] for r in rows] == [
        "c01", "c02", "c03", "c04", "c05", "c06", "c07", "c08", "c14", "c09",
        "c10", "c11", "c12",
    ]  # fmt: skip
    assert all(len(r) == len(REPORT_COLUMNS) for r in rows)
    assert count_conversations(session, start=START, end=END) == 13


def test_row_values(session: Session) -> None:
    rows = rows_by_id(session)
    assert rows["c04"] == {
        "conversation_id": "c04",
        "channel": "telegram",
        "customer_id": "C4",
        "value_tier": None,
        "started_at": at(1, 12),
        "ended_at": at(1, 12, 40),
        "status": "closed",
        "outcome": "escalated",
        "escalated": True,
        "escalation_reason": "low_confidence",
        "escalated_at": at(1, 12, 5),
        "agent": "bob",  # claimed the first claimed handoff (h2)
        "first_response_at": at(1, 12, 15),
        "first_response_seconds": 600.0,
        "handle_seconds": 1140.0,
        "csat": None,
        "csat_requested": False,
        "recontact_at": None,  # next of C4 is c11, 4 days later
        "contained": False,
    }
    c01 = rows["c01"]
    assert (c01["value_tier"], c01["csat"], c01["csat_requested"]) == ("gold", 5, True)
    assert (c01["escalated"], c01["agent"], c01["handle_seconds"]) == (
        False,
        None,
        None,
    )
    assert c01["recontact_at"] == at(3, 8, 10)  # c09 on telegram, 47 h later
    assert c01["contained"] is False
    assert (rows["c02"]["recontact_at"], rows["c02"]["contained"]) == (None, True)
    assert rows["c02"]["value_tier"] == "silver"
    assert rows["c06"]["recontact_at"] == at(2, 10)  # by tracker key
    assert rows["c06"]["started_at"] == at(1, 23, 30)
    assert rows["c07"]["recontact_at"] is None
    assert rows["c08"]["contained"] is None and rows["c08"]["ended_at"] is None
    assert rows["c11"]["contained"] is None  # window open until Mar 8 01:00
    assert rows["c12"]["recontact_at"] == at(8, 0, 20)  # found beyond end + 48 h
    c05 = rows["c05"]
    assert (c05["escalated"], c05["first_response_at"], c05["agent"]) == (
        True,
        None,
        None,
    )
    assert c05["escalated_at"] == at(1, 13, 2)
    c14 = rows["c14"]
    assert (c14["escalated"], c14["escalation_reason"], c14["escalated_at"]) == (
        True,
        None,
        None,
    )
    assert rows["c03"]["recontact_at"] == at(2, 14)  # voice c08, 26.5 h later
    assert isinstance(rows["c03"]["first_response_seconds"], float)


def test_recontact_window_is_configurable_and_inclusive(session: Session) -> None:
    # c02 ends Mar 1 10:20, c10 starts 49 h later: 72 h and exactly 49 h
    # (at most the window) make it a re-contact; 48 h does not.
    for hours in (72, 49):
        rows = rows_by_id(session, recontact_hours=hours)
        assert rows["c02"]["recontact_at"] == at(3, 11, 20), hours
        assert rows["c02"]["contained"] is False
        report = kpi_report(
            session, start=START, end=END, now=NOW, recontact_hours=hours
        )
        # Only c10 stays contained: its window (ends Mar 3 11:30 + 72 h = Mar 6
        # 11:30) is over, nothing follows; 11 still eligible.
        assert (report.overall.contained, report.overall.containment_eligible) == (
            1,
            11,
        )
        assert report.overall.containment_rate == pytest.approx(1 / 11)
        # Nothing else changes (handoffs outside the period still ignored).
        assert report.escalation_reasons == [("complaint", 3), ("low_confidence", 1)]
        assert report.overall.as_dict() == approx(
            dataclasses.replace(OVERALL, contained=1, containment_rate=1 / 11)
        )
    # 47 h: c01's re-contact at exactly 47 h still counts, c02's does not.
    rows = rows_by_id(session, recontact_hours=47)
    assert rows["c01"]["recontact_at"] == at(3, 8, 10)
    assert rows["c02"]["recontact_at"] is None


def test_pending_until_the_window_passes(session: Session) -> None:
    # At c11's window end (Mar 6 01:00 + 48 h) it is decided: contained.
    later = dt.datetime(2026, 3, 8, 1, 0)
    rows = list(conversation_rows(session, start=START, end=END, now=later))
    c11 = dict(zip(REPORT_COLUMNS, rows[-2], strict=True))
    assert (c11["conversation_id"], c11["contained"]) == ("c11", True)
    report = kpi_report(session, start=START, end=END, now=later)
    assert (report.overall.contained, report.overall.containment_pending) == (3, 0)


def python_percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    position = fraction * (len(values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def aggregate(rows: list[dict]) -> KpiFigures:
    """The KPI definitions applied in Python to report rows."""

    def count(test) -> int:
        return sum(1 for r in rows if test(r))

    def rate(a: int, b: int) -> float | None:
        return a / b if b else None

    closed = count(lambda r: r["status"] == "closed")
    escalated = count(lambda r: r["escalated"])
    abandoned = count(lambda r: r["outcome"] == "abandoned")
    contained = count(lambda r: r["contained"] is True)
    eligible = count(lambda r: r["contained"] is not None)
    frt = [r["first_response_seconds"] for r in rows if r["escalated"]]
    answered = [s for s in frt if s is not None]
    handle = [r["handle_seconds"] for r in rows if r["handle_seconds"] is not None]
    asked = count(lambda r: r["csat_requested"])
    given = count(lambda r: r["csat"] is not None)
    positive = count(lambda r: r["csat"] in (4, 5))
    self_served = count(
        lambda r: (
            r["status"] == "closed"
            and r["outcome"] == "self_served"
            and not r["escalated"]
        )
    )
    return KpiFigures(
        conversations=len(rows),
        closed=closed,
        open=count(lambda r: r["status"] == "open"),
        self_served=self_served,
        escalated=escalated,
        abandoned=abandoned,
        containment_eligible=eligible,
        contained=contained,
        containment_pending=count(
            lambda r: (
                r["contained"] is None
                and r["status"] == "closed"
                and r["outcome"] == "self_served"
                and not r["escalated"]
            )
        ),
        containment_rate=rate(contained, eligible),
        escalation_rate=rate(escalated, len(rows)),
        abandonment_rate=rate(abandoned, closed),
        frt_median_seconds=python_percentile(answered, 0.5),
        frt_p90_seconds=python_percentile(answered, 0.9),
        frt_answered=len(answered),
        never_answered=len(frt) - len(answered),
        aht_seconds=sum(handle) / len(handle) if handle else None,
        aht_count=len(handle),
        csat_asked=asked,
        csat_answered=given,
        csat_positive=positive,
        csat_score=rate(positive, given),
        csat_response_rate=rate(given, asked),
    )


@pytest.mark.parametrize("hours", [48, 72])
def test_rows_and_kpis_agree(session: Session, hours: int) -> None:
    rows = list(rows_by_id(session, recontact_hours=hours).values())
    report = kpi_report(session, start=START, end=END, now=NOW, recontact_hours=hours)
    assert report.overall == aggregate(rows)
    by_channel = defaultdict(list)
    by_day = defaultdict(list)
    for row in rows:
        by_channel[row["channel"]].append(row)
        by_day[row["started_at"].date()].append(row)
    assert report.by_channel == {k: aggregate(v) for k, v in sorted(by_channel.items())}
    assert report.by_day == [(day, aggregate(by_day[day])) for day, _ in BY_DAY]


def test_empty_period(empty_engine: Engine) -> None:
    with make_session_factory(empty_engine)() as session:
        report = kpi_report(
            session, start=START, end=dt.datetime(2026, 3, 3, 12), now=NOW
        )
        assert report.overall == figures()
        # A period ending at noon still lists that day.
        assert [d.day for d, _ in report.by_day] == [1, 2, 3]
        assert report.by_channel == {} and report.escalation_reasons == []
        assert list(conversation_rows(session, start=START, end=END, now=NOW)) == []


def test_a_rating_without_its_request_time_counts_as_asked(
    empty_engine: Engine,
) -> None:
    # Ratings loaded from another system carry no request time: 2 rated (one of
    # them with no request time) + 1 asked and not answered = 3 asked, 2 answered.
    with make_session_factory(empty_engine)() as session:
        for cid, asked, csat in (
            ("r1", None, 4),
            ("r2", at(2, 10), 2),
            ("r3", at(2, 11), None),
        ):
            session.add(
                Conversation(
                    id=cid,
                    tracker_key=f"rest:{cid}",
                    channel="chat",
                    started_at=at(2, 9),
                    last_activity_at=at(2, 12),
                    ended_at=at(2, 12),
                    status="closed",
                    outcome="self_served",
                    csat=csat,
                    csat_requested_at=asked,
                )
            )
        session.flush()
        overall = kpi_report(session, start=START, end=END, now=NOW).overall
        assert (overall.csat_asked, overall.csat_answered) == (3, 2)
        assert overall.csat_response_rate == pytest.approx(2 / 3)
        assert overall.csat_score == pytest.approx(1 / 2)
        rows = {
            r[0]: r for r in conversation_rows(session, start=START, end=END, now=NOW)
        }
        asked = REPORT_COLUMNS.index("csat_requested")
        assert [rows[c][asked] for c in ("r1", "r2", "r3")] == [True, True, True]


def test_percentile_matches_numpy_and_postgresql(empty_engine: Engine) -> None:
    samples = [[7.0], [3.0, 1.0], [5.0, 1.5, 9.25, 2.0, 4.0, 11.0, 0.5]]
    for values in samples:
        ordered = sorted(values)
        for fraction in (0.0, 0.5, 0.9, 1.0):
            expected = float(numpy.percentile(values, fraction * 100))
            assert percentile(ordered, fraction) == pytest.approx(expected)
    assert percentile([], 0.5) is None
    if empty_engine.dialect.name == "postgresql":
        with empty_engine.connect() as conn:
            got = conn.execute(
                text(
                    "SELECT percentile_cont(0.9) WITHIN GROUP (ORDER BY v) "
                    "FROM unnest(CAST(:v AS float8[])) AS v"
                ),
                {"v": samples[2]},
            ).scalar_one()
        assert got == percentile(sorted(samples[2]), 0.9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"recontact_hours": 0}, "recontact_hours"),
        ({"recontact_hours": -5}, "recontact_hours"),
        ({"recontact_hours": "48"}, "recontact_hours"),
        ({"end": START}, "before its end"),
        ({"end": START + dt.timedelta(days=3661)}, "at most 3660 days"),
    ],
)
def test_report_refuses_bad_input(session: Session, kwargs: dict, message: str) -> None:
    arguments = {"start": START, "end": END, "now": NOW, **kwargs}
    with pytest.raises(InvalidInput, match=message):
        kpi_report(session, **arguments)
    with pytest.raises(InvalidInput, match=message):
        conversation_rows(session, **arguments)


def test_rows_refuse_bad_batch_size(session: Session) -> None:
    for size in (0, -1, 2.5, True):
        with pytest.raises(InvalidInput, match="batch_size"):
            conversation_rows(session, start=START, end=END, now=NOW, batch_size=size)


NOW_PARSE = dt.datetime(2026, 3, 20, 15, 30)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        # Defaults: the last 30 days up to now.
        (None, None, (dt.datetime(2026, 2, 18, 15, 30), NOW_PARSE)),
        ("", "  ", (dt.datetime(2026, 2, 18, 15, 30), NOW_PARSE)),
        # An end date covers its whole day.
        ("2026-03-01", "2026-03-01", (START, dt.datetime(2026, 3, 2))),
        ("2026-03-01", "2026-03-05", (START, END)),
        ("2026-03-01", None, (START, NOW_PARSE)),
        (None, "2026-03-10", (dt.datetime(2026, 2, 9), dt.datetime(2026, 3, 11))),
        # ISO datetimes, offsets converted to UTC.
        ("2026-03-01T08:00:00Z", "2026-03-01T10:30:00", (at(1, 8), at(1, 10, 30))),
        ("2026-03-01T08:00:00+02:00", "2026-03-01T09:00Z", (at(1, 6), at(1, 9))),
        (
            "2016-03-01",
            "2026-02-26",
            (dt.datetime(2016, 3, 1), dt.datetime(2026, 2, 27)),
        ),
    ],
)
def test_parse_period(start, end, expected) -> None:
    assert parse_period(start, end, now=NOW_PARSE) == expected


def test_parse_period_default_days() -> None:
    assert parse_period(None, None, now=NOW_PARSE, default_days=7) == (
        dt.datetime(2026, 3, 13, 15, 30),
        NOW_PARSE,
    )


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("yesterday", None, "start must be a date"),
        ("2026-02-30", None, "start must be a date"),
        ("2026-03-01", "03/05/2026", "end must be a date"),
        ("2026-03-01" + "0" * 50, None, "start must be a date"),
        ("2026-03-05", "2026-03-01", "before its end"),
        ("2026-03-05T10:00", "2026-03-05T10:00", "before its end"),
        ("2026-03-25", None, "before its end"),  # after now
        ("2016-01-01", "2026-03-01", "at most 3660 days"),
    ],
)
def test_parse_period_refuses(start, end, message) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_period(start, end, now=NOW_PARSE)


def test_parse_period_refuses_bad_default_days() -> None:
    with pytest.raises(InvalidInput, match="default_days"):
        parse_period(None, None, now=NOW_PARSE, default_days=0)
