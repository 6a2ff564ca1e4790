"""Console staff: accounts, login throttling by user and by address, sessions."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.errors import Conflict, InvalidInput, LoginFailed, LoginThrottled
from crm_store.models import AuditLog, StaffSession, StaffUser
from crm_store.seeding import DEFAULT_AS_OF
from crm_store.services import staff

NOW = DEFAULT_AS_OF
PASSWORD = "correct horse battery"


def login(session: Session, username: str, password: str, ip: str, at: dt.datetime):  # noqa: ANN201
    return staff.authenticate(
        session,
        username=username,
        password=password,
        client_ip=ip,
        now=at,
        max_failures=3,
        lock_minutes=15,
    )


def test_roles_rank() -> None:
    assert staff.ROLES == ("agent", "manager", "admin")
    assert staff.role_at_least("admin", "manager")
    assert staff.role_at_least("manager", "manager")
    assert not staff.role_at_least("agent", "manager")
    assert not staff.role_at_least("visitor", "agent")
    with pytest.raises(InvalidInput):
        staff.role_at_least("admin", "owner")


@pytest.mark.parametrize(
    ("username", "password", "role", "says"),
    [
        ("ab", PASSWORD, "agent", "3-64 characters"),
        ("Anna", PASSWORD, "agent", "lowercase"),
        ("anna smith", PASSWORD, "agent", "3-64 characters"),
        ("a" * 65, PASSWORD, "agent", "3-64 characters"),
        ("anna", "short", "agent", "at least 10 characters"),
        ("anna", "é" * 40, "agent", "at most 72 bytes"),
        ("anna", PASSWORD, "owner", "role must be one of"),
    ],
)
def test_bad_staff_accounts_are_refused(
    session: Session, username: str, password: str, role: str, says: str
) -> None:
    with pytest.raises(InvalidInput, match=says):
        staff.create_staff(session, username=username, password=password, role=role)


def test_create_and_demo_staff(session: Session) -> None:
    account = staff.create_staff(
        session, username="svc-st.anna_1", password=PASSWORD, role="manager"
    )
    row = session.get(StaffUser, account.id)
    assert (row.username, row.role, row.active) == ("svc-st.anna_1", "manager", True)
    assert row.password_hash.startswith("$2b$") and PASSWORD not in row.password_hash
    with pytest.raises(Conflict, match="already exists"):
        staff.create_staff(
            session, username="svc-st.anna_1", password=PASSWORD, role="agent"
        )
    names = staff.ensure_demo_staff(session, "demo password 1")
    assert names == ["admin", "manager", "agent"]
    agent = session.execute(
        select(StaffUser).where(StaffUser.username == "agent")
    ).scalar_one()
    agent.active, agent.role = False, "admin"
    staff.ensure_demo_staff(session, "demo password 2")
    assert (agent.active, agent.role) == (True, "agent")
    ok = login(session, "agent", "demo password 2", "198.51.100.1", NOW)
    assert (ok.username, ok.role) == ("agent", "agent")
    with pytest.raises(LoginFailed):
        login(session, "agent", "demo password 1", "198.51.100.1", NOW)
    with pytest.raises(InvalidInput):
        staff.ensure_demo_staff(session, "short")


def test_login_success_and_failures_are_audited(session: Session) -> None:
    account = staff.create_staff(
        session, username="svc-st-bo", password=PASSWORD, role="agent"
    )
    ip = "192.0.2.10"
    who = login(session, "svc-st-bo", PASSWORD, ip, NOW)
    assert (who.id, who.username, who.role) == (account.id, "svc-st-bo", "agent")
    assert session.get(StaffUser, account.id).last_login_at == NOW
    with pytest.raises(LoginFailed) as wrong:
        login(session, "svc-st-bo", "wrong password!", ip, NOW)
    with pytest.raises(LoginFailed) as unknown:
        login(session, "svc-st-nobody", PASSWORD, ip, NOW)
    assert str(wrong.value) == str(unknown.value)  # one message for both
    rows = session.execute(
        select(AuditLog.action, AuditLog.actor, AuditLog.details)
        .where(AuditLog.action.in_(("login", "login_failed")))
        .where(AuditLog.occurred_at == NOW)
        .order_by(AuditLog.id)
    ).all()
    mine = [r for r in rows if r.actor in ("svc-st-bo", "svc-st-nobody")]
    assert [(r.action, r.actor) for r in mine] == [
        ("login", "svc-st-bo"),
        ("login_failed", "svc-st-bo"),
        ("login_failed", "svc-st-nobody"),
    ]
    assert all(r.details == {"ip": ip} for r in mine)
    assert not any(PASSWORD in str(r.details) for r in mine)
    # An inactive user cannot log in, with the same message.
    session.get(StaffUser, account.id).active = False
    with pytest.raises(LoginFailed, match=str(wrong.value)):
        login(session, "svc-st-bo", PASSWORD, "192.0.2.11", NOW)


def test_throttled_by_username_even_with_the_right_password(session: Session) -> None:
    staff.create_staff(session, username="svc-st-cy", password=PASSWORD, role="agent")
    for n in range(3):  # max_failures=3, each from another address
        with pytest.raises(LoginFailed):
            login(
                session, "svc-st-cy", "guess number " + str(n), f"192.0.2.{20 + n}", NOW
            )
    later = NOW + dt.timedelta(minutes=5)
    with pytest.raises(LoginThrottled) as throttled:
        login(session, "svc-st-cy", PASSWORD, "192.0.2.99", later)
    assert throttled.value.retry_after_seconds == 10 * 60
    # A throttled attempt is not counted as a failure (the lock does not grow).
    failures = session.execute(
        select(AuditLog).where(
            AuditLog.action == "login_failed", AuditLog.actor == "svc-st-cy"
        )
    ).all()
    assert len(failures) == 3
    # Other users from the same addresses are not affected.
    staff.create_staff(session, username="svc-st-cy2", password=PASSWORD, role="agent")
    assert login(session, "svc-st-cy2", PASSWORD, "192.0.2.20", later).username
    # When the oldest failure leaves the 15-minute window, the lock lifts.
    after = NOW + dt.timedelta(minutes=15, seconds=1)
    assert login(session, "svc-st-cy", PASSWORD, "192.0.2.99", after).username
    # A success clears the username's count.
    for n in range(2):
        with pytest.raises(LoginFailed):
            login(session, "svc-st-cy", "again wrong " + str(n), "192.0.2.30", after)
    assert login(session, "svc-st-cy", PASSWORD, "192.0.2.31", after).username


def test_throttled_by_client_address_across_usernames(session: Session) -> None:
    staff.create_staff(session, username="svc-st-dee", password=PASSWORD, role="agent")
    attacker = "2001:db8:aa:bb::1"
    # max_failures=3 per user; an address may fail CLIENT_FACTOR times as often.
    names = [f"svc-st-x{n}" for n in range(3 * staff.CLIENT_FACTOR)]
    for name in names[:-1]:
        with pytest.raises(LoginFailed):
            login(session, name, "password guess", attacker, NOW)
    # One failure short of the address limit: a colleague still gets in.
    assert login(session, "svc-st-dee", PASSWORD, "2001:db8:aa:bb::9", NOW).username
    with pytest.raises(LoginFailed):
        login(session, names[-1], "password guess", attacker, NOW)
    # Same /64 network, a real user's correct password: still refused.
    with pytest.raises(LoginThrottled) as throttled:
        login(session, "svc-st-dee", PASSWORD, "2001:db8:aa:bb::7", NOW)
    assert throttled.value.retry_after_seconds == 15 * 60
    assert "try again in 900 seconds" in str(throttled.value)
    # Another network is fine.
    assert login(session, "svc-st-dee", PASSWORD, "2001:db8:aa:cc::7", NOW).username


def test_sessions_tokens_hashed_expiry_and_logout(session: Session) -> None:
    account = staff.create_staff(
        session, username="svc-st-eve", password=PASSWORD, role="admin"
    )
    token, identity = staff.open_session(session, account.id, hours=8, now=NOW)
    assert len(token) >= 40
    assert (identity.staff_id, identity.username, identity.role) == (
        account.id,
        "svc-st-eve",
        "admin",
    )
    assert identity.expires_at == NOW + dt.timedelta(hours=8)
    row = session.get(StaffSession, identity.session_id)
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    stored = " ".join(str(v) for v in vars(row).values())
    assert token not in stored
    assert identity.csrf_token == row.csrf_token and identity.csrf_token != token
    # Lookups: within the session, last_seen_at moves at most once a minute.
    soon = NOW + dt.timedelta(seconds=30)
    assert staff.identity_for_token(session, token, now=soon) == identity
    assert row.last_seen_at == NOW
    later = NOW + dt.timedelta(minutes=2)
    assert staff.identity_for_token(session, token, now=later) == identity
    assert row.last_seen_at == later
    assert staff.agents_online(session, now=later) >= 1
    # Wrong, empty, oversized tokens are nobody.
    for bad in ("nope", "", None, token + "x", "x" * 1000):
        assert staff.identity_for_token(session, bad, now=later) is None
    # Expired.
    expired = NOW + dt.timedelta(hours=8)
    assert staff.identity_for_token(session, token, now=expired) is None
    # A deactivated user's session is dead too.
    session.get(StaffUser, account.id).active = False
    assert staff.identity_for_token(session, token, now=later) is None
    session.get(StaffUser, account.id).active = True
    # Logout.
    assert staff.close_session(session, token) is True
    assert staff.identity_for_token(session, token, now=later) is None
    assert staff.close_session(session, token) is False


def test_open_session_validates_and_cleans_expired(session: Session) -> None:
    account = staff.create_staff(
        session, username="svc-st-fay", password=PASSWORD, role="agent"
    )
    old_token, old = staff.open_session(session, account.id, hours=1, now=NOW)
    later = NOW + dt.timedelta(hours=2)
    _token, _new = staff.open_session(session, account.id, hours=1, now=later)
    left = session.execute(
        select(StaffSession.token_hash).where(StaffSession.staff_id == account.id)
    ).scalars()
    assert list(left) == [staff.token_hash(_token)]  # the expired one is gone
    assert old.session_id is not None
    for hours in (0, -1, 169):
        with pytest.raises(InvalidInput, match="session hours"):
            staff.open_session(session, account.id, hours=hours, now=NOW)
    with pytest.raises(InvalidInput, match="not found or inactive"):
        staff.open_session(session, 999_999, hours=1, now=NOW)
    assert staff.identity_for_token(session, old_token, now=later) is None


def test_agents_online_counts_recent_live_sessions(session: Session) -> None:
    base = staff.agents_online(session, now=NOW)
    a = staff.create_staff(
        session, username="svc-st-on1", password=PASSWORD, role="agent"
    )
    b = staff.create_staff(
        session, username="svc-st-on2", password=PASSWORD, role="agent"
    )
    staff.open_session(session, a.id, hours=8, now=NOW)
    staff.open_session(session, a.id, hours=8, now=NOW)  # two tabs: one agent
    staff.open_session(session, b.id, hours=8, now=NOW - dt.timedelta(minutes=10))
    assert staff.agents_online(session, now=NOW) == base + 1
    assert staff.agents_online(session, now=NOW, minutes=15) == base + 2
