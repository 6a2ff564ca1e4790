"""The action server's handle on the customer store, created lazily on first use."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker


def session_factory() -> sessionmaker:
    """Return the process-wide session factory (engine from ``CRM_DATABASE_URL``)."""
    from bot.store import session_factory as factory

    return factory()


@contextmanager
def transaction() -> Iterator[Session]:
    """Open a session in a transaction: commit on success, roll back on error."""
    with session_factory().begin() as session:
        yield session
