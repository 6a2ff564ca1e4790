"""Single-use nonces of identity assertions (both backends)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput
from crm_store.models import UsedNonce
from crm_store.seeding import DEFAULT_AS_OF
from crm_store.services.nonces import consume_nonce

NOW = DEFAULT_AS_OF
LATER = NOW + dt.timedelta(minutes=5)


def test_a_nonce_is_accepted_once(session: Session) -> None:
    nonce = "ab" * 16
    assert consume_nonce(session, nonce=nonce, expires_at=LATER, now=NOW)
    assert not consume_nonce(session, nonce=nonce, expires_at=LATER, now=NOW)
    assert consume_nonce(session, nonce="cd" * 16, expires_at=LATER, now=NOW)
    assert session.get(UsedNonce, nonce).expires_at == LATER


def test_expired_nonces_are_purged(session: Session) -> None:
    old, fresh = "01" * 16, "02" * 16
    assert consume_nonce(session, nonce=old, expires_at=NOW, now=NOW)
    assert consume_nonce(session, nonce=fresh, expires_at=LATER, now=NOW)
    after = NOW + dt.timedelta(minutes=1)
    assert consume_nonce(session, nonce="03" * 16, expires_at=LATER, now=after)
    session.expire_all()
    assert session.get(UsedNonce, old) is None
    assert session.get(UsedNonce, fresh) is not None
    assert not consume_nonce(session, nonce=fresh, expires_at=LATER, now=after)


@pytest.mark.parametrize("nonce", ["", "a" * 65, None, 123])
def test_bad_nonces_are_refused(session: Session, nonce: object) -> None:
    with pytest.raises(InvalidInput):
        consume_nonce(session, nonce=nonce, expires_at=LATER)  # type: ignore[arg-type]
