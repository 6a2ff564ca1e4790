"""The audit log service: writing entries, filtering and paging them, masking."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from crm_store.db import make_session_factory
from crm_store.errors import InvalidInput, LoginFailed
from crm_store.models import AuditLog
from crm_store.services import audit
from crm_store.services.staff import authenticate, create_staff

T0 = dt.datetime(2026, 3, 1, 9, 0)


@pytest.fixture()
def session(empty_engine: Engine) -> Iterator[Session]:
    with make_session_factory(empty_engine)() as session:
        yield session


def add(session: Session, action: str, *, minutes: int, actor: str = "manager"):
    audit.record_audit(
        session,
        actor=actor,
        action=action,
        entity_type="report",
        entity_id=f"e{minutes}",
        details={"n": minutes},
        at=T0 + dt.timedelta(minutes=minutes),
    )


def test_record_audit_writes_one_row(session: Session) -> None:
    audit.record_audit(
        session,
        actor="manager",
        action="report_exported",
        entity_type="report",
        entity_id="conversations.csv",
        details={"from": "2026-01-01", "to": "2026-02-01"},
        at=T0,
    )
    session.commit()
    row = session.execute(select(AuditLog)).scalar_one()
    assert (row.actor, row.action, row.entity_type, row.entity_id) == (
        "manager",
        "report_exported",
        "report",
        "conversations.csv",
    )
    assert row.details == {"from": "2026-01-01", "to": "2026-02-01"}
    assert row.occurred_at == T0


@pytest.mark.parametrize(
    "changes",
    [
        {"actor": ""},
        {"actor": "x" * 65},
        {"action": "   "},
        {"entity_type": "t" * 33},
        {"entity_id": None},
        {"details": ["not", "a", "dict"]},
    ],
)
def test_record_audit_rejects_bad_values(session: Session, changes: dict) -> None:
    values = {
        "actor": "manager",
        "action": "report_exported",
        "entity_type": "report",
        "entity_id": "x",
        **changes,
    }
    with pytest.raises(InvalidInput):
        audit.record_audit(session, **values)
    assert session.execute(select(func.count()).select_from(AuditLog)).scalar() == 0


def test_entries_newest_first_with_keyset_pages(session: Session) -> None:
    for minute in range(7):
        add(session, "report_exported", minutes=minute)
    session.commit()
    first = audit.audit_entries(session, limit=3)
    assert [e.entity_id for e in first.items] == ["e6", "e5", "e4"]
    assert first.next_before_id == first.items[-1].id
    second = audit.audit_entries(session, limit=3, before_id=first.next_before_id)
    assert [e.entity_id for e in second.items] == ["e3", "e2", "e1"]
    last = audit.audit_entries(session, limit=3, before_id=second.next_before_id)
    assert [e.entity_id for e in last.items] == ["e0"]
    assert last.next_before_id is None
    # Exactly a page left: no further page is offered.
    exact = audit.audit_entries(session, limit=7)
    assert len(exact.items) == 7 and exact.next_before_id is None


def test_filters_by_group_action_actor_and_period(session: Session) -> None:
    add(session, "login", minutes=0, actor="agent")
    add(session, "login_failed", minutes=1, actor="nobody")
    add(session, "handoff_claimed", minutes=2, actor="agent")
    add(session, "story_exported", minutes=3)
    add(session, "report_exported", minutes=4)
    add(session, "identity.link", minutes=5, actor="bot")
    add(session, "customer.update_email", minutes=6, actor="bot")
    session.commit()

    def actions(**filters: object) -> list[str]:
        return [e.action for e in audit.audit_entries(session, **filters).items]

    assert actions(group="logins") == ["login_failed", "login"]
    assert actions(group="exports") == ["report_exported", "story_exported"]
    assert actions(group="claims") == ["handoff_claimed"]
    assert actions(group="identity links") == ["customer.update_email", "identity.link"]
    assert actions(action="story_exported") == ["story_exported"]
    assert actions(group="logins", action="story_exported") == []
    assert actions(actor="agent") == ["handoff_claimed", "login"]
    start, end = T0 + dt.timedelta(minutes=2), T0 + dt.timedelta(minutes=4)
    assert actions(start=start, end=end) == ["story_exported", "handoff_claimed"]
    entry = audit.audit_entries(session, action="login").items[0]
    assert entry.group == "logins"
    assert entry.as_dict()["occurred_at"] == "2026-03-01T09:00:00Z"
    assert entry.as_dict()["details"] == {"n": 0}


@pytest.mark.parametrize(
    "filters",
    [
        {"group": "secrets"},
        {"action": "DROP TABLE"},
        {"actor": "a" * 65},
        {"limit": 0},
        {"limit": 501},
        {"before_id": 0},
        {"start": T0, "end": T0},
        {"start": T0, "end": T0 + dt.timedelta(days=4000)},
    ],
)
def test_bad_filters_are_refused(session: Session, filters: dict) -> None:
    with pytest.raises(InvalidInput):
        audit.audit_entries(session, **filters)


def test_parse_audit_filters() -> None:
    parsed = audit.parse_audit_filters(
        {
            "group": "logins",
            "actor": " agent ",
            "from": "2026-03-01",
            "to": "2026-03-02",
        }
    )
    assert parsed.group == "logins" and parsed.actor == "agent"
    assert parsed.start == dt.datetime(2026, 3, 1)
    assert parsed.end == dt.datetime(2026, 3, 3)  # the whole last day
    utc = audit.parse_audit_filters({"from": "2026-03-01T10:00:00+02:00", "to": ""})
    assert utc.start == dt.datetime(2026, 3, 1, 8, 0) and utc.end is None
    assert audit.parse_audit_filters({}) == audit.AuditFilters()
    for bad in (
        {"from": "yesterday"},
        {"from": "2026-03-05", "to": "2026-03-01"},
        {"group": "everything"},
    ):
        with pytest.raises(InvalidInput):
            audit.parse_audit_filters(bad)


def test_network_data_is_never_shown_in_full(session: Session) -> None:
    create_staff(session, username="casey", password="casey-password", role="agent")
    authenticate(
        session,
        username="casey",
        password="casey-password",
        client_ip="203.0.113.77",
        now=T0,
    )
    with pytest.raises(LoginFailed):
        authenticate(
            session,
            username="casey",
            password="wrong",
            client_ip="2001:db8:1:2::9",
            now=T0,
        )
    session.commit()
    stored_failure = session.execute(
        select(AuditLog).where(AuditLog.action == "login_failed")
    ).scalar_one()
    entries = {e.action: e for e in audit.audit_entries(session, group="logins").items}
    assert entries["login"].details == {"ip": "203.0.113.x"}
    assert entries["login_failed"].details == {"ip": "2001:0db8:0001:…"}
    hashed = stored_failure.entity_id
    assert len(hashed) == 64
    assert entries["login_failed"].entity_id == hashed[:10] + "…"
    assert "203.0.113.77" not in str(entries["login"].as_dict())
    assert audit.mask_ip("not an address") == "(hidden)"
    assert audit.mask_ip(None) is None
