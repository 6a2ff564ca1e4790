"""Contact change with a one-time code, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput
from crm_store.models import AuditLog, Customer
from crm_store.services.contact_details import (
    IdentityInUse,
    SameAsCurrent,
    StepUpRequired,
    confirm_contact_change,
    recent_strong_verification,
    request_contact_change,
)
from crm_store.services.identities import find_customer_by_identity
from crm_store.services.notifier import list_outbox

NOW = dt.datetime(2026, 11, 20, 10, 0, 0)
EPOCH = NOW.replace(tzinfo=dt.timezone.utc).timestamp()


def request(session: Session, customer_id: str, field: str, value: str, **kw):
    args = {
        "actor": "bot:test",
        "verification_method": "order_postcode",
        "verified_at": EPOCH - 60,
        "step_up_minutes": 15,
        "now": NOW,
        **kw,
    }
    return request_contact_change(
        session, customer_id=customer_id, field=field, value=value, **args
    )


def code_sent_to(session: Session, recipient: str) -> str:
    latest = list_outbox(session, recipient=recipient, purpose="contact_change_code")
    return re.search(r"\b(\d{6})\b", latest[0].body).group(1)


@pytest.mark.parametrize(
    ("method", "age_minutes", "ok"),
    [
        ("order_postcode", 1, True),
        ("identity:email", 14.9, True),
        ("identity:telegram", 0, True),
        ("identity:phone", 1, False),
        ("order_postcode", 16, False),
        (None, 1, False),
        ("code:email", 1, False),
        ("code:login", 1, True),
        ("code:login", 16, False),
    ],
)
def test_strong_and_recent(method, age_minutes, ok) -> None:
    assert (
        recent_strong_verification(
            method=method,
            verified_at=EPOCH - age_minutes * 60,
            max_age_minutes=15,
            now=EPOCH,
        )
        is ok
    )


@pytest.mark.parametrize("verified_at", [None, "1764590000", True, float("nan")])
def test_missing_or_malformed_verification_time_is_not_recent(verified_at) -> None:
    assert not recent_strong_verification(
        method="order_postcode", verified_at=verified_at, max_age_minutes=15, now=EPOCH
    )


def test_new_email_stays_pending_until_the_code(session) -> None:
    customer = session.get(Customer, "C0003")
    old = customer.email
    pending = request(session, "C0003", "email", "Fresh.C0003@Example.org")
    assert pending.field == "email" and "fresh" not in pending.masked_value
    assert session.get(Customer, "C0003").email == old
    assert (
        find_customer_by_identity(
            session, kind="email", value="fresh.c0003@example.org"
        )
        is None
    )
    [notice] = list_outbox(session, recipient=old)
    assert notice.purpose == "contact_change_notice" and notice.channel == "email"
    assert "wasn't you" in notice.body and "fresh.c0003" not in notice.body
    code = code_sent_to(session, "fresh.c0003@example.org")

    wrong = f"{(int(code) + 1) % 10**6:06d}"
    result = confirm_contact_change(
        session,
        customer_id="C0003",
        field="email",
        code=wrong,
        actor="bot:test",
        now=NOW,
    )
    assert (result.status, result.tries_left) == ("wrong", 4)
    assert session.get(Customer, "C0003").email == old

    result = confirm_contact_change(
        session,
        customer_id="C0003",
        field="email",
        code=code,
        actor="bot:test",
        now=NOW,
    )
    assert result.status == "ok"
    assert session.get(Customer, "C0003").email == "fresh.c0003@example.org"
    match = find_customer_by_identity(
        session, kind="email", value="fresh.c0003@example.org"
    )
    assert match.customer_id == "C0003" and match.verified
    actions = set(
        session.execute(
            select(AuditLog.action).where(AuditLog.entity_id == "C0003")
        ).scalars()
    )
    assert {"customer.request_update_email", "customer.update_email"} <= actions


def test_new_phone_gets_its_code_by_sms(session) -> None:
    old = session.get(Customer, "C0004").phone
    request(session, "C0004", "phone", "+31 6 5555 0004")
    [code_message] = list_outbox(session, recipient="+31655550004")
    assert code_message.channel == "sms" and code_message.subject
    if old:
        [notice] = list_outbox(session, recipient=old)
        assert notice.channel == "sms"


def test_weak_or_old_verification_cannot_request(session) -> None:
    for kw in (
        {"verification_method": "identity:phone"},
        {"verified_at": EPOCH - 16 * 60},
        {"verified_at": None},
    ):
        with pytest.raises(StepUpRequired):
            request(session, "C0005", "email", "x.c0005@example.org", **kw)
    assert list_outbox(session, recipient="x.c0005@example.org") == []


def test_refusals_send_nothing(session) -> None:
    own = session.get(Customer, "C0006").email
    with pytest.raises(SameAsCurrent):
        request(session, "C0006", "email", own.upper())
    with pytest.raises(IdentityInUse):
        request(session, "C0006", "email", session.get(Customer, "C0007").email)
    with pytest.raises(InvalidInput):
        request(session, "C0006", "email", "not-an-address")
    with pytest.raises(InvalidInput):
        request(session, "C0006", "postcode", "1234 AB")
    sent = list_outbox(session, limit=1000)
    assert [m for m in sent if m.customer_id == "C0006"] == []


def test_confirm_without_a_pending_change(session) -> None:
    result = confirm_contact_change(
        session, customer_id="C0008", field="email", code="123456", actor="bot:test"
    )
    assert result.status == "none"
    with pytest.raises(InvalidInput):
        confirm_contact_change(
            session, customer_id="C0008", field="email", code="12", actor="bot:test"
        )
