"""Single-use nonces of signed identity assertions (table ``used_nonces``)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete
from sqlalchemy.orm import Session

from crm_store.db import dialect_insert
from crm_store.errors import InvalidInput
from crm_store.models import UsedNonce, utcnow

MAX_NONCE_CHARS = 64


def consume_nonce(
    session: Session,
    *,
    nonce: str,
    expires_at: dt.datetime,
    now: dt.datetime | None = None,
) -> bool:
    """Mark ``nonce`` used until ``expires_at``; False if it was used already.

    Rows whose assertion has expired are purged on the way (an expired
    assertion is refused anyway, so its nonce need not be remembered). Safe
    under concurrency: the insert ignores a duplicate key and its row count
    tells which caller won.

    Raises:
        InvalidInput: an empty or over-long nonce.
    """
    if not isinstance(nonce, str) or not 0 < len(nonce) <= MAX_NONCE_CHARS:
        raise InvalidInput(f"a nonce is 1 to {MAX_NONCE_CHARS} characters")
    now = now or utcnow()
    session.execute(delete(UsedNonce).where(UsedNonce.expires_at < now))
    insert = dialect_insert(session)(UsedNonce.__table__).values(
        nonce=nonce, expires_at=expires_at
    )
    result = session.execute(insert.on_conflict_do_nothing(index_elements=["nonce"]))
    return (result.rowcount or 0) == 1
