"""Human-readable reference numbers (tickets ``T-XXXXXX``, returns ``RMA-XXXXXX``)."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import InstrumentedAttribute

# No 0/O or 1/I: numbers are read out over the phone.
ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
LENGTH = 6
MAX_TRIES = 20


def new_reference(
    session: Session, *, prefix: str, column: InstrumentedAttribute
) -> str:
    """Return ``prefix-XXXXXX`` not yet used in ``column``.

    The unique constraint on ``column`` is the final guard; with 32**6 values a
    collision is rare, and the pre-check makes it rarer still.
    """
    for _ in range(MAX_TRIES):
        code = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
        candidate = f"{prefix}-{code}"
        taken = session.execute(select(column).where(column == candidate)).first()
        if taken is None:
            return candidate
    raise RuntimeError(f"could not allocate a unique {prefix} number")
