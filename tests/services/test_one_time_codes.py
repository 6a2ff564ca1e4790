"""One-time codes on SQLite and PostgreSQL: hashing, expiry, tries, invalidation."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput, NotFound
from crm_store.models import OneTimeCode
from crm_store.services.one_time_codes import (
    CODE_TTL,
    MAX_CODES_PER_HOUR,
    MAX_TRIES,
    TooManyCodes,
    check_code,
    code_matches,
    hash_code,
    issue_code,
)

T0 = dt.datetime(2026, 11, 20, 10, 0, 0)
CUSTOMER = "C0001"


def issue(session: Session, *, purpose: str = "change_email", now=T0) -> str:
    return issue_code(
        session,
        customer_id=CUSTOMER,
        purpose=purpose,
        kind="email",
        value="new@example.org",
        now=now,
    )


def check(session: Session, code, *, purpose: str = "change_email", now=T0):
    return check_code(
        session, customer_id=CUSTOMER, purpose=purpose, code=code, now=now
    )


def other_than(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def rows(session: Session) -> list[OneTimeCode]:
    return list(
        session.execute(
            select(OneTimeCode)
            .where(OneTimeCode.customer_id == CUSTOMER)
            .order_by(OneTimeCode.id)
        ).scalars()
    )


def test_code_is_six_digits_and_only_a_salted_hash_is_stored(session) -> None:
    code = issue(session)
    assert re.fullmatch(r"\d{6}", code)
    [row] = rows(session)
    salt, _, digest = row.code_hash.partition("$")
    assert len(salt) == 32 and len(digest) == 64
    assert code not in row.code_hash
    assert row.expires_at == T0 + CODE_TTL and row.attempts == 0
    assert code_matches(code, row.code_hash)
    assert not code_matches(other_than(code), row.code_hash)
    # per-row salt: the same code never hashes the same twice
    assert hash_code(code) != hash_code(code)
    assert not code_matches(code, "not-hex$00")


def test_right_code_confirms_once_and_names_the_address(session) -> None:
    code = issue(session)
    result = check(session, code, now=T0 + dt.timedelta(minutes=9))
    assert (result.status, result.kind, result.value) == (
        "ok",
        "email",
        "new@example.org",
    )
    assert check(session, code).status == "none"
    assert rows(session)[0].consumed_at is not None


def test_wrong_codes_count_down_and_the_fifth_voids_the_code(session) -> None:
    code = issue(session)
    wrong = other_than(code)
    lefts = [check(session, wrong).tries_left for _ in range(MAX_TRIES - 1)]
    assert lefts == [4, 3, 2, 1]
    assert check(session, wrong).status == "exhausted"
    # the right code no longer helps
    assert check(session, code).status == "none"


def test_code_expires_after_ten_minutes(session) -> None:
    code = issue(session)
    assert check(session, code, now=T0 + CODE_TTL).status == "expired"
    assert check(session, code, now=T0 + CODE_TTL).status == "none"


def test_new_code_for_the_same_purpose_voids_the_older(session) -> None:
    first = issue(session)
    second = issue(session, now=T0 + dt.timedelta(minutes=1))
    if first != second:  # one chance in a million that they are equal
        assert check(session, first).status == "wrong"
    assert check(session, second).status == "ok"
    older = rows(session)[0]
    assert older.consumed_at == T0 + dt.timedelta(minutes=1)


def test_purposes_are_separate(session) -> None:
    code = issue(session, purpose="change_phone")
    assert check(session, code, purpose="change_email").status == "none"
    assert check(session, code, purpose="change_phone").status == "ok"


@pytest.mark.parametrize(
    "bad",
    [123456, None, "12345", "1234567", "abcdef", " 123456", "123456\n", "12345６"],
)
def test_malformed_codes_are_refused_without_costing_a_try(session, bad) -> None:
    issue(session)
    with pytest.raises(InvalidInput):
        check(session, bad)
    assert rows(session)[0].attempts == 0


@pytest.mark.parametrize(
    "args",
    [
        {"customer_id": None},
        {"customer_id": 7},
        {"purpose": ""},
        {"purpose": "x" * 33},
        {"kind": None},
        {"value": 123},
        {"value": "a" * 255},
        {"kind": "x" * 17},
    ],
)
def test_issue_rejects_bad_arguments(session, args) -> None:
    base = {
        "customer_id": CUSTOMER,
        "purpose": "change_email",
        "kind": "email",
        "value": "new@example.org",
    }
    with pytest.raises(InvalidInput):
        issue_code(session, **{**base, **args}, now=T0)
    with pytest.raises(NotFound):
        issue_code(session, **{**base, "customer_id": "C9999"}, now=T0)
    assert rows(session) == []


def test_codes_per_customer_and_hour_are_limited(session) -> None:
    for minute in range(MAX_CODES_PER_HOUR):
        issue(session, now=T0 + dt.timedelta(minutes=minute))
    with pytest.raises(TooManyCodes):
        issue(session, now=T0 + dt.timedelta(minutes=30))
    issue(session, now=T0 + dt.timedelta(minutes=61))
