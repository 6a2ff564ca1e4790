"""Engine and session factories for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from crm_store.errors import InvalidInput

SQLITE_BUSY_TIMEOUT_MS = 30_000
T = TypeVar("T")


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine for ``url``.

    SQLite files get WAL journaling, a busy timeout and enforced foreign keys, so
    several processes (Rasa, action server, console) can share one file safely.
    The parent directory of a SQLite file is created when missing.

    Args:
        url: SQLAlchemy URL (callers take it from ``crm_settings``).
        echo: log every SQL statement (debugging only).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        pooling: dict = {}
        connect_args: dict = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            # SQLAlchemy 1.4 opens a new connection per transaction on SQLite
            # files (NullPool): ~2 ms to connect, set the PRAGMAs and close,
            # more than the write itself. Pool them; connections are only ever
            # used by one thread at a time, so they may cross threads.
            pooling = {"poolclass": QueuePool, "pool_size": 5, "max_overflow": 10}
            connect_args["check_same_thread"] = False
        engine = create_engine(
            url, future=True, echo=echo, connect_args=connect_args, **pooling
        )
        event.listen(engine, "connect", _configure_sqlite)
        return engine
    return create_engine(
        url, future=True, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20
    )


def _configure_sqlite(dbapi_connection, _record) -> None:  # noqa: ANN001
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker:
    """Return a 2.0-style session factory bound to ``engine``."""
    return sessionmaker(bind=engine, future=True, expire_on_commit=False)


def dialect_insert(session: Session) -> Any:
    """The session's dialect ``insert`` construct (it has ``on_conflict_do_nothing``).

    Raises:
        InvalidInput: the database is neither PostgreSQL nor SQLite.
    """
    dialect = session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(dialect)
    if insert is None:
        raise InvalidInput(f"unsupported database dialect {dialect}")
    return insert


def retry_when_locked(func: Callable[[], T], *, attempts: int = 8) -> T:
    """Run ``func`` again when SQLite reports a lock it could not wait out.

    SQLite raises ``database is locked`` without waiting when two transactions that
    both read first then try to write; retrying the whole unit of work is the fix.
    Other errors propagate unchanged.
    """
    delay = 0.01
    for attempt in range(attempts):
        try:
            return func()
        except OperationalError as exc:
            if "locked" not in str(exc).lower() or attempt == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
    raise AssertionError("unreachable")


def run_unit(factory: sessionmaker, work: Callable[[Session], T]) -> T:
    """Run ``work`` in a new session and commit (roll back on error), retried on locks.

    The one unit of work of every caller outside a request's own transaction:
    console handlers, channels, delivery workers. Blocking: call it in a thread
    from an event loop.
    """

    def attempt() -> T:
        with factory() as session:
            try:
                result = work(session)
                session.commit()
                return result
            except BaseException:
                session.rollback()
                raise

    return retry_when_locked(attempt)


@cache
def engine_for(url: str, *, echo: bool = False) -> Engine:
    """Return the process-wide engine for ``url`` (created on first use)."""
    return make_engine(url, echo=echo)


def session_factory(url: str, *, echo: bool = False) -> sessionmaker:
    """Return a session factory on the process-wide engine for ``url``."""
    return make_session_factory(engine_for(url, echo=echo))


def safe_url(url: str) -> str:
    """Render a database URL without its password, for logs and messages."""
    return make_url(url).render_as_string(hide_password=True)
