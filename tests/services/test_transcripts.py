"""Transcript search (every filter, full text, pages) and the review view."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from crm_store.db import make_session_factory
from crm_store.errors import InvalidInput, NotFound
from crm_store.models import (
    Conversation,
    Customer,
    CustomerScore,
    Handoff,
    Interaction,
    Scorecard,
    StaffUser,
)
from crm_store.services import queue
from crm_store.services.transcripts import (
    TranscriptFilters,
    parse_filters,
    search_conversations,
    transcript,
)

D = dt.datetime
LONG_TEXT = "I need a refund for the broken lamp " + "x" * 200


@pytest.fixture()
def db(empty_engine: Engine) -> Iterator[Session]:
    with make_session_factory(empty_engine)() as session:
        build(session)
        session.commit()
        yield session
        session.rollback()


def staff(session: Session, username: str) -> int:
    user = StaffUser(username=username, password_hash="-", role="agent")
    session.add(user)
    session.flush()
    return user.id


def conversation(
    session: Session,
    conv_id: str,
    channel: str,
    started: D,
    *,
    customer: str | None,
    status: str = "closed",
    outcome: str | None = None,
    csat: int | None = None,
) -> None:
    session.add(
        Conversation(
            id=conv_id,
            tracker_key=f"x:{conv_id}",
            channel=channel,
            customer_id=customer,
            started_at=started,
            last_activity_at=started,
            ended_at=None if status == "open" else started + dt.timedelta(minutes=9),
            status=status,
            outcome=outcome,
            csat=csat,
        )
    )
    session.flush()


def line(
    session: Session,
    conv_id: str,
    at: D,
    author: str,
    body: str | None,
    *,
    intent: str | None = None,
    meta: dict | None = None,
) -> None:
    conv = session.get(Conversation, conv_id)
    session.add(
        Interaction(
            event_id=f"{conv_id}:{at.isoformat()}:{author}",
            customer_id=conv.customer_id,
            conversation_id=conv_id,
            channel=conv.channel,
            direction="in" if author == "customer" else "out",
            author=author,
            text=body,
            intent=intent,
            confidence=0.91 if intent else None,
            occurred_at=at,
            meta=meta or {},
        )
    )
    session.flush()


def build(session: Session) -> None:
    """Six conversations: cv1..cv4 on four days, cv5 and cv6 at the same moment."""
    session.add_all(
        [
            Customer(id="C1", first_name="Anna", last_name="Berg"),
            Customer(id="C2", first_name="Jonas", last_name="Müller", language="de"),
            Customer(id="C3", is_prospect=True),
        ]
    )
    session.flush()
    for cid, tier, band in (("C1", "gold", "high"), ("C2", "platinum", "low")):
        session.add(
            CustomerScore(
                customer_id=cid, as_of=D(2026, 3, 1), value_tier=tier, churn_band=band
            )
        )
    sam = staff(session, "sam")
    kim = staff(session, "kim")
    boss = staff(session, "boss")

    t1 = D(2026, 3, 1, 9, 0)
    conversation(
        session, "cv1", "chat", t1, customer="C1", outcome="self_served", csat=5
    )
    line(session, "cv1", t1, "customer", "Where is my order?", intent="track_order")
    steps = [
        {"action": "action_track_order"},
        {"slot": "order_id", "value": "A1"},
        {"active_loop": None},
        {"action": "utter_order_status"},
    ]
    line(
        session,
        "cv1",
        t1 + dt.timedelta(seconds=5),
        "bot",
        "Your order is 50% shipped",
        meta={"steps": steps},
    )

    t2 = D(2026, 3, 2, 10, 0)
    conversation(
        session, "cv2", "telegram", t2, customer="C2", outcome="escalated", csat=2
    )
    # Inserted out of order: the transcript sorts by time.
    line(
        session,
        "cv2",
        t2 + dt.timedelta(minutes=3),
        "agent",
        "Hallo, ich helfe Ihnen gern",
        meta={"staff": "sam"},
    )
    line(session, "cv2", t2, "system", "Conversation started")
    line(
        session,
        "cv2",
        t2 + dt.timedelta(seconds=1),
        "customer",
        "Ich möchte eine Rücksendung für Bestellung A-77",
        intent="return_item",
    )
    line(
        session,
        "cv2",
        t2 + dt.timedelta(seconds=4),
        "bot",
        "Ich verbinde Sie mit einem Mitarbeiter",
        meta={"steps": "garbage"},
    )
    first = Handoff(
        conversation_id="cv2",
        customer_id="C2",
        channel="telegram",
        reason="customer_request",
        status="resolved",
        packet={"summary": "wants to return A-77", "intent": "return_item"},
        created_at=t2 + dt.timedelta(seconds=5),
        claimed_by=sam,
        claimed_at=t2 + dt.timedelta(minutes=2),
        first_response_at=t2 + dt.timedelta(minutes=3),
        resolved_at=t2 + dt.timedelta(minutes=8),
        resolution_note="Label sent.",
    )
    second = Handoff(
        conversation_id="cv2",
        customer_id="C2",
        channel="telegram",
        reason="complaint",
        status="claimed",
        packet={},
        created_at=t2 + dt.timedelta(minutes=9),
        claimed_by=kim,
        claimed_at=t2 + dt.timedelta(minutes=10),
    )
    session.add_all([first, second])
    session.flush()
    queue.add_note(
        session,
        first.id,
        sam,
        "Customer wants a refund",
        now=t2 + dt.timedelta(minutes=4),
    )
    queue.add_note(
        session, first.id, boss, "OK by me", now=t2 + dt.timedelta(minutes=5)
    )
    session.add_all(
        [
            Scorecard(
                conversation_id="cv2",
                reviewer_id=boss,
                scores={"a": 4},
                score=80.0,
                created_at=t2,
                updated_at=t2,
            ),
            Scorecard(
                conversation_id="cv2",
                reviewer_id=kim,
                scores={"a": 5},
                score=90.0,
                created_at=t2,
                updated_at=t2,
            ),
        ]
    )

    t3 = D(2026, 3, 3, 11, 0)
    conversation(session, "cv3", "sms", t3, customer="C3", outcome="abandoned")
    line(
        session,
        "cv3",
        t3,
        "customer",
        "RETURN label please, 500 items",
        intent="return_item",
    )
    line(
        session,
        "cv3",
        t3 + dt.timedelta(seconds=9),
        "customer",
        "my snake_case id is a\\b",
    )

    t4 = D(2026, 3, 4, 8, 0)
    conversation(session, "cv4", "email", t4, customer="C1", status="open")
    line(session, "cv4", t4, "customer", None)  # e.g. an attachment only
    line(session, "cv4", t4 + dt.timedelta(seconds=1), "customer", LONG_TEXT)
    line(session, "cv4", t4 + dt.timedelta(seconds=2), "customer", "snakeXcase ab")

    t5 = D(2026, 3, 4, 23, 30)
    conversation(
        session, "cv5", "chat", t5, customer=None, outcome="self_served", csat=4
    )
    line(session, "cv5", t5, "customer", "hello", intent="greet")
    conversation(session, "cv6", "voice", t5, customer=None, outcome="abandoned")


def ids(session: Session, **params: str) -> list[str]:
    page = search_conversations(session, parse_filters(params), limit=200)
    assert page.next_cursor is None
    return [item.id for item in page.items]


def test_no_filter_lists_everything_newest_first(db: Session) -> None:
    assert ids(db) == ["cv6", "cv5", "cv4", "cv3", "cv2", "cv1"]
    assert ids(db, q="   ", channel="", tier=None, cursor="ignored") == ids(db)


def test_each_filter_alone(db: Session) -> None:
    cases = [
        ({"channel": "telegram"}, ["cv2"]),
        ({"channel": "console"}, []),
        ({"intent": "return_item"}, ["cv3", "cv2"]),
        ({"intent": "greet"}, ["cv5"]),
        ({"intent": "unknown_intent"}, []),
        ({"outcome": "self_served"}, ["cv5", "cv1"]),
        ({"outcome": "escalated"}, ["cv2"]),
        ({"outcome": "abandoned"}, ["cv6", "cv3"]),
        ({"outcome": "open"}, ["cv4"]),
        ({"csat": "5"}, ["cv1"]),
        ({"csat": "2"}, ["cv2"]),
        ({"csat": "3"}, []),
        ({"csat": "none"}, ["cv6", "cv4", "cv3"]),
        ({"csat": "positive"}, ["cv5", "cv1"]),
        ({"csat": "negative"}, ["cv2"]),
        ({"agent": "sam"}, ["cv2"]),
        ({"agent": "kim"}, ["cv2"]),  # claimed the second handoff
        ({"agent": "boss"}, []),  # wrote a note, claimed nothing
        ({"customer": "C1"}, ["cv4", "cv1"]),
        ({"customer": " C2 "}, ["cv2"]),
        ({"customer": "C9"}, []),
        ({"tier": "gold"}, ["cv4", "cv1"]),
        ({"tier": "platinum"}, ["cv2"]),
        ({"tier": "bronze"}, []),
        ({"from": "2026-03-02", "to": "2026-03-03"}, ["cv3", "cv2"]),
        ({"from": "2026-03-04"}, ["cv6", "cv5", "cv4"]),
        ({"to": "2026-03-01"}, ["cv1"]),  # a date as "to" is the whole day
        ({"from": "2026-03-02T10:00:00", "to": "2026-03-03T11:00:00"}, ["cv2"]),
        ({"from": "2026-03-02T10:00:01"}, ["cv6", "cv5", "cv4", "cv3"]),
        # 11:00 in UTC+1 is 10:00 UTC; "Z" is UTC.
        ({"from": "2026-03-02T11:00:00+01:00", "to": "2026-03-02T10:00:01Z"}, ["cv2"]),
    ]
    for params, expected in cases:
        assert ids(db, **params) == expected, params


def test_filters_combined(db: Session) -> None:
    assert ids(db, intent="return_item", tier="platinum") == ["cv2"]
    assert ids(db, outcome="self_served", csat="positive", channel="chat") == [
        "cv5",
        "cv1",
    ]
    assert ids(db, outcome="self_served", csat="positive", customer="C1") == ["cv1"]
    assert ids(db, agent="sam", csat="negative", q="Bestellung") == ["cv2"]
    assert ids(db, agent="sam", q="order") == []
    assert ids(db, tier="gold", outcome="open", to="2026-03-03") == []
    assert ids(db, tier="gold", outcome="open", **{"from": "2026-03-04"}) == ["cv4"]


def test_full_text_search(db: Session, backend: str) -> None:
    assert ids(db, q="order") == ["cv1"]
    # Case-insensitive, and each word may be in a different message.
    assert ids(db, q="ORDER Shipped") == ["cv1"]
    assert ids(db, q="order hello") == []
    assert ids(db, q="bestellung") == ["cv2"]
    assert ids(db, q="Rücksendung") == ["cv2"]  # the German transcript
    assert ids(db, q="return") == ["cv3"]
    assert ids(db, q="refund") == ["cv4"]  # in the customer's text, not the note
    # "%" and "_" are not wildcards: "50%" is not "500", "snake_case" not "snakeXcase".
    assert ids(db, q="50%") == ["cv1"]
    assert ids(db, q="snake_case") == ["cv3"]
    if backend == "postgresql":
        # Whole words of the "simple" dictionary, not substrings.
        assert ids(db, q="orde") == []
        assert ids(db, q="items, please!") == ["cv3"]
    else:
        assert ids(db, q="orde") == ["cv1"]  # LIKE: a part of a word
        assert ids(db, q="a\\b") == ["cv3"]  # "\" is literal too ("ab" is in cv4)
        assert ids(db, q="%") == ["cv1"]
        assert ids(db, q="_") == ["cv3"]


def test_each_backend_searches_with_its_own_sql(db: Session, backend: str) -> None:
    """PostgreSQL: the GIN-indexed tsvector expression; SQLite: an escaped LIKE."""
    statements: list[str] = []

    def capture(_conn, _cursor, statement, _params, _context, _many) -> None:  # noqa: ANN001
        statements.append(statement)

    engine = db.get_bind()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        assert ids(db, q="order shipped") == ["cv1"]
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    expression = "to_tsvector('simple', coalesce(interactions.text, ''))"
    if backend == "sqlite":
        search = [s for s in statements if "LIKE" in s.upper()]
        assert search and "ESCAPE" in search[0].upper()
        assert not any("plainto_tsquery" in s for s in statements)
        return
    search = [s for s in statements if "plainto_tsquery" in s]
    assert search and search[0].count(f"{expression} @@ plainto_tsquery(") == 2
    # The planner can answer exactly that expression from the GIN index.
    db.execute(text("SET LOCAL enable_seqscan = off"))
    plan = db.execute(
        text(
            "EXPLAIN SELECT id FROM interactions WHERE "
            f"{expression} @@ plainto_tsquery('simple', :q)"
        ),
        {"q": "order"},
    ).scalars()
    assert "ix_interactions_text_fts" in "\n".join(plan)


def test_summaries_of_a_page(db: Session) -> None:
    items = {i.id: i for i in search_conversations(db, TranscriptFilters()).items}
    cv2 = items["cv2"]
    assert (cv2.customer_id, cv2.customer_name, cv2.value_tier) == (
        "C2",
        "Jonas Müller",
        "platinum",
    )
    assert cv2.messages == 4  # the system line counts too
    assert cv2.first_customer_text == "Ich möchte eine Rücksendung für Bestellung A-77"
    assert cv2.agent == "sam"  # claimer of the first claimed handoff, not kim
    assert cv2.score == pytest.approx(85.0)
    assert (cv2.status, cv2.outcome, cv2.csat) == ("closed", "escalated", 2)
    assert cv2.ended_at == D(2026, 3, 2, 10, 9)
    cv4 = items["cv4"]
    # The first customer line without text is skipped; long texts are cut to 160.
    assert cv4.first_customer_text == LONG_TEXT[:159] + "…"
    assert len(cv4.first_customer_text) == 160
    assert (cv4.messages, cv4.agent, cv4.score, cv4.value_tier) == (
        3,
        None,
        None,
        "gold",
    )
    assert items["cv3"].customer_name is None  # a prospect without a name
    assert items["cv3"].value_tier is None
    cv6 = items["cv6"]
    assert (cv6.messages, cv6.first_customer_text, cv6.customer_id) == (0, None, None)
    data = items["cv1"].as_dict()
    assert data["started_at"] == "2026-03-01T09:00:00Z"
    assert data["first_customer_text"] == "Where is my order?"
    assert data["customer_name"] == "Anna Berg" and data["messages"] == 2
    json.dumps(search_conversations(db, TranscriptFilters()).as_dict())


def test_pagination_has_no_duplicates_or_gaps(db: Session) -> None:
    everything = ids(db)
    for limit in (1, 2, 4, 5):
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = search_conversations(
                db, TranscriptFilters(), limit=limit, cursor=cursor
            )
            pages += 1
            assert len(page.items) <= limit
            seen.extend(item.id for item in page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == everything, limit
        assert pages == -(-len(everything) // limit)  # no empty trailing page
    # cv5 and cv6 started at the same moment: the page break falls between them.
    first = search_conversations(db, TranscriptFilters(), limit=1)
    assert [i.id for i in first.items] == ["cv6"]
    second = search_conversations(
        db, TranscriptFilters(), limit=1, cursor=first.next_cursor
    )
    assert [i.id for i in second.items] == ["cv5"]
    # A cursor pages within a filter too.
    filters = parse_filters({"intent": "return_item"})
    page = search_conversations(db, filters, limit=1)
    assert [i.id for i in page.items] == ["cv3"]
    rest = search_conversations(db, filters, limit=1, cursor=page.next_cursor)
    assert [i.id for i in rest.items] == ["cv2"] and rest.next_cursor is None


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-13-01"}, "from"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-03-01T25:00"}, "from"),
        ({"from": "2026-03-01" + " " * 3 + "x" * 40}, "from"),
        ({"to": "03/04/2026"}, "to"),
        ({"to": "9999-12-31"}, "to"),  # the day after does not exist
        ({"from": "2026-03-05", "to": "2026-03-04"}, "from"),
        ({"from": "2026-03-04T10:00", "to": "2026-03-04T10:00"}, "from"),
        ({"channel": "fax"}, "channel"),
        ({"outcome": "closed"}, "outcome"),
        ({"csat": "6"}, "csat"),
        ({"csat": "0"}, "csat"),
        ({"csat": "good"}, "csat"),
        ({"tier": "diamond"}, "tier"),
        ({"intent": "i" * 101}, "intent"),
        ({"agent": "a" * 65}, "agent"),
        ({"customer": "C" * 33}, "customer"),
        ({"q": "x" * 201}, "q"),
        ({"q": "one two three four five six seven eight nine"}, "q"),
        ({"channel": 5}, "channel"),
    ],
)
def test_bad_filters(params: dict, field: str) -> None:
    with pytest.raises(InvalidInput, match=field):
        parse_filters(params)


def test_limits_of_good_filters() -> None:
    filters = parse_filters(
        {
            "from": "2026-03-04",
            "to": "2026-03-04",  # the same day: from 00:00 to the next 00:00
            "intent": "i" * 100,
            "agent": "a" * 64,
            "customer": "C" * 32,
            "q": "  one two  three four five six seven eight  ",
            "csat": "negative",
            "tier": "silver",
            "outcome": "open",
            "channel": "sms",
        }
    )
    assert (filters.start, filters.end) == (D(2026, 3, 4), D(2026, 3, 5))
    assert filters.text == "one two three four five six seven eight"
    assert filters.words == filters.text.split()
    assert filters.as_dict()["start"] == "2026-03-04T00:00:00Z"
    assert parse_filters({"q": "x" * 200}).text == "x" * 200
    assert parse_filters({}) == TranscriptFilters()


def test_bad_page_arguments(db: Session) -> None:
    filters = TranscriptFilters()
    for limit in (0, 201, -1, True, "5"):
        with pytest.raises(InvalidInput, match="limit"):
            search_conversations(db, filters, limit=limit)  # type: ignore[arg-type]
    for cursor in (
        "not a cursor!",
        b64(b"not json"),
        b64(b'{"started_at": "2026-03-01", "id": "cv1"}'),
        b64(b'["2026-03-01T00:00:00", 5]'),
        b64(b'["someday", "cv1"]'),
        b64(b'["2026-03-01T00:00:00+00:00", "cv1"]'),
        b64(b'["2026-03-01T00:00:00", "cv1", "extra"]'),
        b64(b"\xff\xfe"),
        "A" * 1000,
    ):
        with pytest.raises(InvalidInput, match="cursor"):
            search_conversations(db, filters, cursor=cursor)
    # Filters built by hand are checked as well.
    with pytest.raises(InvalidInput, match="csat"):
        search_conversations(db, TranscriptFilters(csat="7"))
    with pytest.raises(InvalidInput, match="outcome"):
        search_conversations(db, TranscriptFilters(outcome="lost"))


def test_transcript(db: Session) -> None:
    view = transcript(db, conversation_id="cv2")
    assert (view.id, view.tracker_key, view.channel) == ("cv2", "x:cv2", "telegram")
    assert (view.status, view.outcome, view.csat) == ("closed", "escalated", 2)
    assert view.customer is not None
    assert view.customer.as_dict() == {
        "id": "C2",
        "name": "Jonas Müller",
        "value_tier": "platinum",
        "churn_band": "low",
    }
    assert [(m.author, m.direction) for m in view.messages] == [
        ("system", "out"),
        ("customer", "in"),
        ("bot", "out"),
        ("agent", "out"),
    ]
    customer_line = view.messages[1]
    assert (customer_line.intent, customer_line.confidence) == ("return_item", 0.91)
    assert view.messages[2].actions == []  # malformed steps are ignored
    assert view.messages[3].staff == "sam" and view.messages[0].staff is None
    first, second = view.handoffs
    assert (first.reason, first.status, first.agent) == (
        "customer_request",
        "resolved",
        "sam",
    )
    assert first.packet == {"summary": "wants to return A-77", "intent": "return_item"}
    assert first.resolution_note == "Label sent."
    assert first.first_response_at == D(2026, 3, 2, 10, 3)
    assert [(n.staff, n.text) for n in first.notes] == [
        ("sam", "Customer wants a refund"),
        ("boss", "OK by me"),
    ]
    staff_name, note_text, created_at = first.notes[0]
    assert created_at == D(2026, 3, 2, 10, 4)
    assert (second.agent, second.notes, second.packet) == ("kim", [], {})
    assert sorted(card.score for card in view.scorecards) == [80.0, 90.0]
    data = json.loads(json.dumps(view.as_dict()))
    assert data["started_at"] == "2026-03-02T10:00:00Z"
    assert data["messages"][3]["occurred_at"] == "2026-03-02T10:03:00Z"
    assert data["handoffs"][0]["notes"][1] == {
        "staff": "boss",
        "text": "OK by me",
        "created_at": "2026-03-02T10:05:00Z",
    }
    assert data["handoffs"][1]["resolved_at"] is None


def test_transcript_actions_and_missing_customer(db: Session) -> None:
    cv1 = transcript(db, conversation_id="cv1")
    assert [m.actions for m in cv1.messages] == [
        [],
        ["action_track_order", "utter_order_status"],
    ]
    assert cv1.messages[0].text == "Where is my order?"
    assert cv1.handoffs == [] and cv1.customer.churn_band == "high"
    cv6 = transcript(db, conversation_id="cv6")
    assert (cv6.customer, cv6.messages, cv6.handoffs) == (None, [], [])
    assert transcript(db, conversation_id="cv3").customer.as_dict() == {
        "id": "C3",
        "name": None,
        "value_tier": None,
        "churn_band": None,
    }
    with pytest.raises(NotFound):
        transcript(db, conversation_id="nope")
