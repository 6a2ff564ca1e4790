"""Manager review in the console: transcripts, scorecards, KPIs, CSV, audit log.

The console runs on a real store of each backend (SQLite and PostgreSQL),
filled with a handful of conversations written by hand, so that every
expected value below can be worked out from ``seed``.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import yaml
from console_support import CSRF_FIELD, CSRF_META, PASSWORD, SECRET, LiveServer
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from markupsafe import escape
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from console import charts
from console.app import create_app
from crm_settings import Settings
from crm_store.db import make_session_factory
from crm_store.models import (
    AuditLog,
    Conversation,
    Customer,
    CustomerScore,
    Handoff,
    HandoffNote,
    Interaction,
    Scorecard,
    StaffUser,
)
from crm_store.services import reports, scorecards, test_stories
from crm_store.services.report_format import csv_cell
from crm_store.services.staff import ensure_demo_staff

D = dt.datetime
SCRIPT = "<script>alert('pwned')</script>"
PERIOD = {"from": "2026-03-01", "to": "2026-03-31"}
START, END = D(2026, 3, 1), D(2026, 4, 1)
IN_PERIOD = ["cv_rv_1", "cv_rv_2", "cv_rv_3", "cv_rv_5"]  # by start time
INJECTION = "=HYPERLINK(1)"
MANAGER_PREFIXES = (
    "/manager",
    "/admin",
    "/api/reports",
    "/api/scorecards",
    "/api/conversations",
    "/api/audit",
)
AGENT_CONVERSATION_ROUTE = "/api/conversations/{conversation_id}"


@dataclass
class Review:
    """The console app on a seeded store of one backend."""

    app: object
    factory: sessionmaker
    backend: str


def _customer(session: Session, cid: str, first: str, last: str, tier: str) -> None:
    session.add(Customer(id=cid, first_name=first, last_name=last))
    session.add(
        CustomerScore(
            customer_id=cid,
            as_of=D(2026, 2, 1),
            frequency=1,
            monetary=0,
            value_tier=tier,
            churn_band="low",
        )
    )


def _conversation(
    session: Session,
    cid: str,
    channel: str,
    started: D,
    *,
    customer: str | None,
    status: str = "closed",
    outcome: str | None = None,
    csat: int | None = None,
    minutes: int = 10,
) -> None:
    ended = started + dt.timedelta(minutes=minutes) if status == "closed" else None
    session.add(
        Conversation(
            id=cid,
            tracker_key=f"test:{cid}",
            customer_id=customer,
            channel=channel,
            started_at=started,
            last_activity_at=ended or started,
            ended_at=ended,
            status=status,
            outcome=outcome,
            csat=csat,
            csat_requested_at=ended - dt.timedelta(minutes=1) if csat else None,
        )
    )


def _line(
    session: Session,
    cid: str,
    at: D,
    author: str,
    text: str,
    *,
    intent: str | None = None,
    confidence: float | None = None,
    meta: dict | None = None,
    customer: str | None = None,
) -> None:
    session.add(
        Interaction(
            event_id=f"{cid}:{at.isoformat()}:{author}",
            customer_id=customer,
            conversation_id=cid,
            channel="chat",
            direction="in" if author == "customer" else "out",
            author=author,
            text=text,
            intent=intent,
            confidence=confidence,
            occurred_at=at,
            meta=meta or {},
        )
    )


def seed(session: Session) -> None:
    """Five conversations, four in March 2026, two with handoffs."""
    ensure_demo_staff(session, PASSWORD)
    agent_id = session.execute(
        select(StaffUser.id).where(StaffUser.username == "agent")
    ).scalar_one()
    _customer(session, "RV001", "Ada", "Lovelace", "gold")
    _customer(session, "RV002", "Grace", "Hopper", "platinum")
    session.flush()

    t1 = D(2026, 3, 3, 10, 0)
    _conversation(
        session, "cv_rv_1", "chat", t1, customer="RV001", outcome="self_served", csat=5
    )
    _line(
        session,
        "cv_rv_1",
        t1 + dt.timedelta(seconds=10),
        "customer",
        "Where is my parcel?",
        intent="order_status",
        confidence=0.93,
        customer="RV001",
    )
    _line(
        session,
        "cv_rv_1",
        t1 + dt.timedelta(seconds=12),
        "bot",
        "It is on its way.",
        meta={
            "steps": [
                {"action": "action_order_status"},
                {"slot": "order_number", "value": "A1"},
            ]
        },
        customer="RV001",
    )

    t2 = D(2026, 3, 4, 11, 0)
    _conversation(
        session,
        "cv_rv_2",
        "telegram",
        t2,
        customer="RV002",
        outcome="escalated",
        csat=2,
        minutes=30,
    )
    _line(
        session,
        "cv_rv_2",
        t2 + dt.timedelta(seconds=5),
        "customer",
        SCRIPT,
        intent="complaint",
        confidence=0.81,
        customer="RV002",
    )
    _line(
        session,
        "cv_rv_2",
        t2 + dt.timedelta(seconds=10),
        "bot",
        "A colleague will take over.",
        customer="RV002",
    )
    _line(
        session,
        "cv_rv_2",
        t2 + dt.timedelta(minutes=3, seconds=10),
        "agent",
        "Hello, Sam here.",
        meta={"staff": "agent"},
        customer="RV002",
    )
    handoff = Handoff(
        conversation_id="cv_rv_2",
        customer_id="RV002",
        channel="telegram",
        reason="complaint",
        status="resolved",
        packet={
            "summary": "Angry about a <b>late</b> parcel",
            "verified": True,
            "slots": {"order_number": "A2", "remark": SCRIPT},
            "last_intents": ["complaint"],
        },
        created_at=t2 + dt.timedelta(seconds=10),
        claimed_by=agent_id,
        claimed_at=t2 + dt.timedelta(minutes=2),
        first_response_at=t2 + dt.timedelta(minutes=3, seconds=10),
        resolved_at=t2 + dt.timedelta(minutes=20),
        resolution_note="Refund promised.",
    )
    session.add(handoff)
    session.flush()
    session.add(
        HandoffNote(
            handoff_id=handoff.id,
            staff_id=agent_id,
            text=SCRIPT + " called the depot",
            created_at=t2 + dt.timedelta(minutes=5),
        )
    )

    t3 = D(2026, 3, 5, 8, 0)
    _conversation(session, "cv_rv_3", "sms", t3, customer=None, outcome="abandoned")
    _line(session, "cv_rv_3", t3 + dt.timedelta(seconds=3), "customer", "=1+2")
    session.add(
        Handoff(
            conversation_id="cv_rv_3",
            channel="sms",
            reason=INJECTION,
            status="waiting",
            packet={},
            created_at=t3 + dt.timedelta(seconds=4),
        )
    )
    _conversation(
        session,
        "cv_rv_4",
        "chat",
        D(2026, 2, 20, 9, 0),
        customer="RV001",
        outcome="self_served",
    )
    _conversation(
        session,
        "cv_rv_5",
        "chat",
        D(2026, 3, 31, 23, 30),
        customer="RV001",
        status="open",
    )
    _line(
        session,
        "cv_rv_5",
        D(2026, 3, 31, 23, 30, 5),
        "customer",
        "Hello again",
        customer="RV001",
    )


@pytest.fixture(scope="module")
def review(backend: str, scratch) -> Iterator[Review]:  # noqa: ANN001
    engine = scratch.engine(backend)
    factory = make_session_factory(engine)
    with factory.begin() as session:
        seed(session)
    settings = Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        console_secret=SECRET,
        rasa_internal_url="http://127.0.0.1:9",
        agent_hours="always",
        environment="development",
        chat_socket_url=None,
    )
    app = create_app(settings, factory, watch_seconds=0.05, queue_watch_seconds=None)
    yield Review(app, factory, backend)
    engine.dispose()


@pytest.fixture()
def client(review: Review) -> Iterator[TestClient]:
    with TestClient(review.app) as client:
        client.follow_redirects = False
        yield client


def bearer(client: TestClient, username: str) -> dict[str, str]:
    answer = client.post(
        "/api/auth/token", json={"username": username, "password": PASSWORD}
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def login(client: TestClient, username: str) -> str:
    """Sign in with the form (cookie session); return the CSRF token."""
    form = client.get("/login")
    token = CSRF_FIELD.search(form.text).group(1)
    answer = client.post(
        "/login",
        data={"username": username, "password": PASSWORD, "csrf_token": token},
    )
    assert answer.status_code == 303, answer.text
    return CSRF_META.search(client.get("/").text).group(1)


def audits(review: Review, action: str) -> list[AuditLog]:
    with review.factory() as session:
        return list(
            session.execute(
                select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)
            ).scalars()
        )


def review_routes(app) -> list[tuple[str, str, str]]:  # noqa: ANN001
    """(method, path template, concrete path) of every manager-only route."""
    found = []
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        if not route.path.startswith(MANAGER_PREFIXES):
            continue
        if route.path == AGENT_CONVERSATION_ROUTE:
            continue  # the agents' transcript, open to every role
        path = re.sub(r"\{[^}]+\}", "cv_rv_2", route.path)
        for method in sorted(route.methods - {"HEAD"}):
            found.append((method, route.path, path))
    return found


# --- Roles -------------------------------------------------------------------


def test_agents_get_403_on_every_manager_route(review: Review, client) -> None:
    routes = review_routes(review.app)
    templates = {path for _, path, _ in routes}
    expected = {
        "/manager",
        "/admin",
        "/admin/audit",
        "/manager/transcripts",
        "/manager/transcripts/{conversation_id}",
        "/manager/transcripts/{conversation_id}/scorecard",
        "/manager/transcripts/{conversation_id}/story.yml",
        "/manager/kpis",
        "/manager/scorecards",
        "/api/conversations",
        "/api/conversations/{conversation_id}/transcript",
        "/api/conversations/{conversation_id}/story",
        "/api/conversations/{conversation_id}/scorecard",
        "/api/scorecards",
        "/api/scorecards.csv",
        "/api/reports/kpis",
        "/api/reports/conversations.csv",
        "/api/audit",
    }
    assert expected <= templates
    agent = bearer(client, "agent")
    for method, _, path in routes:
        answer = client.request(method, path, headers=agent, json={"scores": {}})
        assert answer.status_code == 403, (method, path, answer.status_code)
    # The agents' own transcript route stays open to them.
    assert client.get("/api/conversations/cv_rv_2", headers=agent).status_code == 200
    # Nobody signed in: the API answers 401, pages send to the login form.
    assert client.get("/api/reports/kpis").status_code == 401
    page = client.get("/manager/kpis")
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    # The 403s left no trace: no export was audited for the agent.
    with review.factory() as session:
        assert (
            session.execute(
                select(func.count())
                .select_from(AuditLog)
                .where(AuditLog.actor == "agent", AuditLog.action.like("%exported"))
            ).scalar_one()
            == 0
        )


def test_managers_see_the_pages_and_only_admins_the_audit_log(client) -> None:
    manager = bearer(client, "manager")
    for path in (
        "/manager",
        "/manager/transcripts",
        "/manager/transcripts/cv_rv_1",
        "/manager/kpis",
        "/manager/scorecards",
    ):
        page = client.get(path, headers=manager)
        assert page.status_code == 200, (path, page.text[:300])
        assert 'aria-label="Manager"' in page.text  # the sub-navigation
        assert 'href="/admin/audit"' not in page.text
    assert client.get("/admin/audit", headers=manager).status_code == 403
    assert client.get("/api/audit", headers=manager).status_code == 403
    admin = bearer(client, "admin")
    page = client.get("/admin/audit", headers=admin)
    assert page.status_code == 200 and 'href="/admin/audit"' in page.text
    assert client.get("/api/audit", headers=admin).status_code == 200
    assert 'href="/admin/audit"' in client.get("/admin", headers=admin).text


# --- Transcripts ---------------------------------------------------------------


def test_transcript_search_api_filters_and_pages(client) -> None:
    manager = bearer(client, "manager")

    def ids(**params: str) -> list[str]:
        answer = client.get(
            "/api/conversations", params={**PERIOD, **params}, headers=manager
        )
        assert answer.status_code == 200, answer.text
        return [item["id"] for item in answer.json()["items"]]

    newest_first = list(reversed(IN_PERIOD))
    assert ids() == newest_first
    assert ids(channel="telegram") == ["cv_rv_2"]
    assert ids(outcome="abandoned") == ["cv_rv_3"]
    assert ids(outcome="open") == ["cv_rv_5"]
    assert ids(csat="positive") == ["cv_rv_1"]
    assert ids(csat="negative") == ["cv_rv_2"]
    assert ids(agent="agent") == ["cv_rv_2"]
    assert ids(tier="platinum") == ["cv_rv_2"]
    assert ids(customer="RV001") == ["cv_rv_5", "cv_rv_1"]
    assert ids(intent="order_status") == ["cv_rv_1"]
    assert ids(q="parcel") == ["cv_rv_1"]
    first = client.get(
        "/api/conversations", params={**PERIOD, "limit": "3"}, headers=manager
    ).json()
    assert [i["id"] for i in first["items"]] == newest_first[:3]
    item = first["items"][2]  # cv_rv_2
    assert item["customer_name"] == "Grace Hopper" and item["agent"] == "agent"
    assert item["messages"] == 3 and item["first_customer_text"] == SCRIPT
    rest = client.get(
        "/api/conversations",
        params={**PERIOD, "limit": "3", "cursor": first["next_cursor"]},
        headers=manager,
    ).json()
    assert [i["id"] for i in rest["items"]] == newest_first[3:]
    assert rest["next_cursor"] is None
    for bad in (
        {"outcome": "bogus"},
        {"from": "yesterday"},
        {"limit": "0"},
        {"limit": "many"},
        {"cursor": "not-a-cursor"},
        {"from": "2026-03-10", "to": "2026-03-01"},
    ):
        answer = client.get("/api/conversations", params=bad, headers=manager)
        assert answer.status_code == 400, bad
        assert answer.json()["error"]


def test_transcripts_page_filters_and_errors(client, monkeypatch) -> None:
    manager = bearer(client, "manager")
    page = client.get(
        "/manager/transcripts",
        params={**PERIOD, "channel": "telegram"},
        headers=manager,
    )
    assert page.status_code == 200
    assert 'href="/manager/transcripts/cv_rv_2"' in page.text
    assert "/manager/transcripts/cv_rv_1" not in page.text
    assert SCRIPT not in page.text and str(escape(SCRIPT)) in page.text
    for field in ("from", "to", "channel", "intent", "outcome", "csat", "agent"):
        assert f'<label for="f-{field}">' in page.text
    for field in ("customer", "tier", "q"):
        assert f'<label for="f-{field}"' in page.text
    assert (
        'href="/api/reports/conversations.csv?from=2026-03-01&amp;to=2026-03-31"'
        in page.text
    )
    bad = client.get("/manager/transcripts?outcome=bogus", headers=manager)
    assert bad.status_code == 400
    assert "outcome must be one of" in bad.text and 'id="f-outcome"' in bad.text
    # "Older" carries the cursor and the filters.
    monkeypatch.setattr("console.reports.PAGE", 2)
    first = client.get("/manager/transcripts", params=PERIOD, headers=manager)
    older = re.search(r'href="([^"]+)" rel="next">Older', first.text).group(1)
    older = html.unescape(older)
    assert "cursor=" in older and "from=2026-03-01" in older
    second = client.get(older, headers=manager)
    assert second.status_code == 200
    shown = re.findall(r'href="/manager/transcripts/(cv_rv_\d)"', second.text)
    assert shown == ["cv_rv_2", "cv_rv_1"]  # page one held cv_rv_5 and cv_rv_3
    assert "Older" not in second.text


def test_review_page_shows_everything_escaped(client) -> None:
    manager = bearer(client, "manager")
    page = client.get("/manager/transcripts/cv_rv_2", headers=manager)
    assert page.status_code == 200
    text = page.text
    assert "<script>alert" not in text and "<b>late</b>" not in text
    # The message, the note and the packet's slot: all escaped.
    assert text.count(str(escape(SCRIPT))) >= 2
    assert "called the depot" in text and "Refund promised." in text
    assert "Angry about a &lt;b&gt;late&lt;/b&gt; parcel" in text
    assert 'href="/customers/RV002"' in text
    assert "complaint · 81%" in text  # intent with its confidence
    assert "<dt>last intents</dt>" in text  # packet keys as a definition list
    assert str(escape('{"order_number": "A2"')) in text  # nested JSON
    assert "Hello, Sam here." in text and ">agent</span>" in text
    assert 'href="/manager/transcripts/cv_rv_2/story.yml"' in text
    first = client.get("/manager/transcripts/cv_rv_1", headers=manager).text
    assert "action_order_status" in first and "order_status · 93%" in first
    missing = client.get("/manager/transcripts/cv_nope", headers=manager)
    assert missing.status_code == 404
    api = client.get("/api/conversations/cv_rv_2/transcript", headers=manager)
    assert api.status_code == 200
    body = api.json()
    assert [m["author"] for m in body["messages"]] == ["customer", "bot", "agent"]
    assert body["handoffs"][0]["notes"][0]["text"] == SCRIPT + " called the depot"
    assert (
        client.get("/api/conversations/cv_nope/transcript", headers=manager).status_code
        == 404
    )


# --- Scorecards ----------------------------------------------------------------


def _criteria() -> scorecards.ScorecardCriteria:
    return scorecards.load_criteria()  # config/scorecard.yml, read afresh


def test_scorecard_form_csrf_validation_and_save(review: Review, client) -> None:
    criteria = _criteria()
    keys = [c.key for c in criteria.criteria]
    csrf = login(client, "manager")
    page = client.get("/manager/transcripts/cv_rv_1")
    for c in criteria.criteria:
        assert f'name="points_{c.key}"' in page.text
        assert f'max="{c.max_points}"' in page.text
        assert str(escape(c.description)) in page.text
    full = {f"points_{c.key}": str(c.max_points) for c in criteria.criteria}

    def count() -> int:
        with review.factory() as session:
            return session.execute(
                select(func.count())
                .select_from(Scorecard)
                .where(Scorecard.conversation_id == "cv_rv_1")
            ).scalar_one()

    before = count()
    no_csrf = client.post(
        "/manager/transcripts/cv_rv_1/scorecard", data={**full, "comment": "x"}
    )
    assert no_csrf.status_code == 403 and count() == before
    too_many = {**full, f"points_{keys[0]}": str(criteria.criteria[0].max_points + 1)}
    bad = client.post(
        "/manager/transcripts/cv_rv_1/scorecard",
        data={**too_many, "comment": "bad", "csrf_token": csrf},
    )
    assert bad.status_code == 400 and count() == before
    assert 'class="flash flash-error"' in bad.text
    assert 'name="points_' in bad.text  # the form is shown again
    not_a_number = client.post(
        "/manager/transcripts/cv_rv_1/scorecard",
        data={**full, f"points_{keys[0]}": "lots", "csrf_token": csrf},
    )
    assert not_a_number.status_code == 400 and count() == before

    comment = "Good answer " + SCRIPT
    saved = client.post(
        "/manager/transcripts/cv_rv_1/scorecard",
        data={**full, "comment": comment, "csrf_token": csrf},
    )
    assert saved.status_code == 303
    assert saved.headers["location"].startswith(
        "/manager/transcripts/cv_rv_1?notice=scored"
    )
    assert count() == before + 1
    with review.factory() as session:
        row = session.execute(
            select(Scorecard).where(Scorecard.conversation_id == "cv_rv_1")
        ).scalar_one()
        assert row.score == 100.0  # every criterion at its maximum
        assert row.scores == {c.key: c.max_points for c in criteria.criteria}
        assert row.comment == comment
    saved_audit = audits(review, "scorecard_saved")[-1]
    assert (saved_audit.actor, saved_audit.entity_id) == ("manager", "cv_rv_1")
    after = client.get(saved.headers["location"])
    assert "Scorecard saved." in after.text
    assert str(escape(comment)) in after.text and SCRIPT not in after.text
    # Saving again updates the reviewer's one scorecard.
    zero = {f"points_{c.key}": "0" for c in criteria.criteria}
    again = client.post(
        "/manager/transcripts/cv_rv_1/scorecard",
        data={**zero, "comment": "", "csrf_token": csrf},
    )
    assert again.status_code == 303 and count() == before + 1


def test_scorecard_api_list_and_csv(review: Review, client) -> None:
    criteria = _criteria()
    admin = bearer(client, "admin")
    points = {c.key: 0 for c in criteria.criteria}
    points[criteria.criteria[0].key] = criteria.criteria[0].max_points
    saved = client.post(
        "/api/conversations/cv_rv_2/scorecard",
        json={"scores": points, "comment": "API review"},
        headers=admin,
    )
    assert saved.status_code == 201, saved.text
    body = saved.json()
    assert body["conversation_id"] == "cv_rv_2" and body["reviewer"] == "admin"
    total = sum(c.max_points for c in criteria.criteria)
    # score = 100 * points / maximum, rounded to one decimal (config/scorecard.yml)
    assert body["score"] == round(100 * criteria.criteria[0].max_points / total, 1)
    bad = client.post(
        "/api/conversations/cv_rv_2/scorecard",
        json={"scores": {**points, "no_such_criterion": 1}},
        headers=admin,
    )
    assert bad.status_code == 400 and bad.json()["error"]
    unknown = client.post(
        "/api/conversations/cv_nope/scorecard", json={"scores": points}, headers=admin
    )
    assert unknown.status_code == 404
    listed = client.get("/api/scorecards", headers=admin).json()["items"]
    assert "cv_rv_2" in [s["conversation_id"] for s in listed]
    assert client.get("/api/scorecards?from=never", headers=admin).status_code == 400
    page = client.get("/manager/scorecards", headers=admin)
    assert page.status_code == 200 and "API review" in page.text
    assert 'href="/api/scorecards.csv"' in page.text
    assert client.get("/manager/scorecards?to=never", headers=admin).status_code == 400

    exported = client.get("/api/scorecards.csv", headers=admin)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0] == list(scorecards.scorecard_columns())
    assert any("cv_rv_2" in row for row in rows[1:])
    assert [a.actor for a in audits(review, "scorecards_exported")][-1] == "admin"


# --- Test stories ----------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/manager/transcripts/cv_rv_1/story.yml", "/api/conversations/cv_rv_1/story"],
)
def test_story_download(review: Review, client, path: str) -> None:
    manager = bearer(client, "manager")
    before = len(audits(review, "story_exported"))
    answer = client.get(path, headers=manager)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/yaml")
    name = test_stories.story_file_name("cv_rv_1")
    assert answer.headers["content-disposition"] == f'attachment; filename="{name}"'
    story = yaml.safe_load(answer.text)
    assert len(story["stories"]) == 1
    exported = audits(review, "story_exported")
    assert len(exported) == before + 1
    assert (exported[-1].actor, exported[-1].entity_id) == ("manager", "cv_rv_1")
    assert (
        client.get(path.replace("cv_rv_1", "cv_nope"), headers=manager).status_code
        == 404
    )
    assert len(audits(review, "story_exported")) == before + 1


# --- KPIs ------------------------------------------------------------------------


def _expected_kpis(review: Review, now: D, hours: int = 48) -> dict:
    with review.factory() as session:
        report = reports.kpi_report(
            session, start=START, end=END, now=now, recontact_hours=hours
        )
    return {**report.as_dict(), "definitions": reports.KPI_DEFINITIONS}


def test_kpi_json_equals_the_report(review: Review, client) -> None:
    manager = bearer(client, "manager")
    answer = client.get("/api/reports/kpis", params=PERIOD, headers=manager)
    assert answer.status_code == 200
    body = answer.json()
    now = D.fromisoformat(body["now"].rstrip("Z"))
    assert body == _expected_kpis(review, now)
    overall = body["overall"]
    assert overall["conversations"] == 4  # cv_rv_4 started in February
    assert (overall["self_served"], overall["abandoned"], overall["open"]) == (1, 1, 1)
    assert overall["escalated"] == 2  # cv_rv_2 and cv_rv_3 were handed off
    assert overall["escalation_rate"] == 0.5
    assert overall["frt_median_seconds"] == 180.0  # 11:00:10 -> 11:03:10
    assert overall["aht_seconds"] == 1080.0  # claimed 11:02, resolved 11:20
    # Decided: cv_rv_1 (contained), cv_rv_2 and cv_rv_3 (not); cv_rv_5 is open.
    assert (overall["containment_eligible"], overall["contained"]) == (3, 1)
    assert overall["csat_answered"] == 2 and overall["csat_positive"] == 1
    assert [d["day"] for d in body["by_day"]][:2] == ["2026-03-01", "2026-03-02"]
    assert len(body["by_day"]) == 31
    assert sorted(body["by_channel"]) == ["chat", "sms", "telegram"]
    assert {r["reason"] for r in body["escalation_reasons"]} == {"complaint", INJECTION}
    hours = client.get(
        "/api/reports/kpis", params={**PERIOD, "recontact_hours": "6"}, headers=manager
    ).json()
    assert hours["recontact_hours"] == 6
    for bad in ({"recontact_hours": "0"}, {"recontact_hours": "721"}, {"to": "soon"}):
        answer = client.get("/api/reports/kpis", params=bad, headers=manager)
        assert answer.status_code == 400, bad


def test_kpi_page_renders_charts_with_definitions(client) -> None:
    manager = bearer(client, "manager")
    page = client.get("/manager/kpis", params=PERIOD, headers=manager)
    assert page.status_code == 200
    text = page.text
    assert text.count('<svg class="chart"') == 4
    assert text.count("<details") >= 4 and "<title id=" in text
    assert "style=" not in text and "<script>" not in text
    for key in (
        "conversations",
        "containment_rate",
        "containment_pending",
        "escalation_rate",
        "frt_median_seconds",
        "frt_p90_seconds",
        "aht_seconds",
        "csat_score",
        "csat_response_rate",
        "abandonment_rate",
    ):
        assert str(escape(reports.KPI_DEFINITIONS[key])) in text, key
    assert "<strong>48 hours</strong>" in text
    assert 'value="2026-03-01"' in text and 'value="2026-03-31"' in text
    assert "50.0%" in text  # escalation rate
    assert "=HYPERLINK(1)" in text  # the reason as text, in the chart and its table
    six = client.get(
        "/manager/kpis", params={**PERIOD, "recontact_hours": "6"}, headers=manager
    )
    assert "<strong>6 hours</strong>" in six.text
    default = client.get("/manager/kpis", headers=manager)
    assert default.status_code == 200  # the last 30 days
    for bad in ({"recontact_hours": "0"}, {"from": "2026-04-01", "to": "2026-03-01"}):
        answer = client.get("/manager/kpis", params=bad, headers=manager)
        assert answer.status_code == 400
        assert 'class="flash flash-error"' in answer.text and "<svg" not in answer.text


def test_charts_escape_labels_and_draw_numbers_only() -> None:
    svg = charts.bar_list("chart-x", "Reasons <b>", [(SCRIPT, 3), ("plain", 1)])
    assert SCRIPT not in svg and str(escape(SCRIPT)) in svg
    assert '<title id="chart-x-title">Reasons &lt;b&gt;</title>' in svg
    assert 'role="img"' in svg and "style=" not in svg
    bars = charts.stacked_bars(
        "chart-y",
        "Per day",
        ["03-01", "03-02"],
        [charts.Series("a", "A", "#112233"), charts.Series("b", "B", "#445566")],
        {"a": [1, 2], "b": [3, 0]},
    )
    assert bars.count("<rect") == 2 + 3  # legend squares + three non-empty bars
    empty = charts.line_chart("chart-z", "Rate", ["03-01"], [None])
    assert "No data in this period" in empty
    with pytest.raises(ValueError):
        charts.bar_list('bad" id', "t", [])
    with pytest.raises(ValueError):
        charts.grouped_bars(
            "chart-w", "t", ["x"], [charts.Series("a", "A", "red;x")], {"a": [1]}
        )


# --- Conversations CSV -----------------------------------------------------------


def _expected_rows(review: Review, now: D) -> list[list[str]]:
    with review.factory() as session:
        return [
            [csv_cell(value) for value in row]
            for row in reports.conversation_rows(session, start=START, end=END, now=now)
        ]


def test_conversations_csv_is_streamed_and_matches_the_rows(review: Review) -> None:
    with (
        LiveServer(review.app) as server,
        httpx.Client(base_url=server.url, timeout=20) as http,
    ):
        token = http.post(
            "/api/auth/token", json={"username": "manager", "password": PASSWORD}
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        before = len(audits(review, "report_exported"))
        with http.stream(
            "GET", "/api/reports/conversations.csv", params=PERIOD, headers=headers
        ) as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/csv")
            assert answer.headers["content-disposition"] == (
                'attachment; filename="conversations_2026-03-01_2026-03-31.csv"'
            )
            assert "content-length" not in answer.headers
            assert answer.headers.get("transfer-encoding") == "chunked"
            lines = [line for line in answer.iter_lines() if line]
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        rows = list(csv.reader(lines))
        assert rows[0] == list(reports.REPORT_COLUMNS)
        body = rows[1:]
        assert [row[0] for row in body] == IN_PERIOD
        assert body == _expected_rows(review, now)
        column = reports.REPORT_COLUMNS.index("escalation_reason")
        assert body[2][column] == "'" + INJECTION  # CSV-injection guard
        started = reports.REPORT_COLUMNS.index("started_at")
        assert body[0][started] == "2026-03-03T10:00:00Z"
        escalated = reports.REPORT_COLUMNS.index("escalated")
        assert [row[escalated] for row in body] == ["false", "true", "true", "false"]
        exported = audits(review, "report_exported")
        assert len(exported) == before + 1
        assert exported[-1].actor == "manager"
        assert exported[-1].details["from"] == "2026-03-01T00:00:00Z"
        assert exported[-1].details["to"] == "2026-04-01T00:00:00Z"
        bad = http.get(
            "/api/reports/conversations.csv",
            params={"from": "2026-03-31", "to": "2026-03-01"},
            headers=headers,
        )
        assert bad.status_code == 400 and bad.json()["error"]
        assert len(audits(review, "report_exported")) == before + 1


# --- Audit log -------------------------------------------------------------------


def test_audit_page_and_api_filters(review: Review, client) -> None:
    admin = bearer(client, "admin")
    client.post("/api/auth/token", json={"username": "agent", "password": "wrong!"})
    client.get("/api/conversations/cv_rv_1/story", headers=admin)
    logins = client.get("/admin/audit?group=logins", headers=admin)
    assert logins.status_code == 200
    text = logins.text
    assert ">login</span>" in text and ">login_failed</span>" in text
    assert "story_exported" not in text.split("<tbody>", 1)[1]
    with review.factory() as session:
        hashed = (
            session.execute(
                select(AuditLog.entity_id).where(AuditLog.action == "login_failed")
            )
            .scalars()
            .first()
        )
    assert hashed and hashed not in text and hashed[:10] + "…" in text
    exports = client.get("/admin/audit?group=exports&actor=admin", headers=admin)
    rows = exports.text.split("<tbody>", 1)[1]
    assert ">story_exported</span>" in rows and ">login</span>" not in rows
    assert 'value="exports" selected' in exports.text
    bad = client.get("/admin/audit?group=everything", headers=admin)
    assert bad.status_code == 400 and "group must be one of" in bad.text
    assert client.get("/admin/audit?from=soon", headers=admin).status_code == 400
    api = client.get("/api/audit", params={"group": "exports"}, headers=admin).json()
    assert api["items"] and {i["group"] for i in api["items"]} == {"exports"}
    first = client.get("/api/audit", params={"limit": "1"}, headers=admin).json()
    older = client.get(
        "/api/audit",
        params={"limit": "1", "before_id": str(first["next_before_id"])},
        headers=admin,
    ).json()
    assert older["items"][0]["id"] < first["items"][0]["id"]
    assert client.get("/api/audit?group=x", headers=admin).status_code == 400
    assert client.get("/api/audit?before_id=-1", headers=admin).status_code == 400
