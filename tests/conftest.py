"""Shared fixtures: real SQLite files and real PostgreSQL databases (127.0.0.1:5432).

Every store test that takes ``backend``/``engine``/``factory`` runs once per backend.
PostgreSQL must be reachable (``.ci/run`` starts it); an unreachable server fails
the run rather than skipping it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import sessionmaker

from crm_store.db import make_engine, make_session_factory
from crm_store.migrate import upgrade
from crm_store.seeding import DEFAULT_AS_OF, seed_directory

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / "data" / "demo"
PG_ADMIN_URL = os.environ.get(
    "CRM_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ("sqlite", "postgresql")


class ScratchDatabases:
    """Creates empty databases of either backend and drops them at the end."""

    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = tmp_dir
        self.engines: list[Engine] = []
        self.pg_names: list[str] = []

    def url(self, backend: str) -> str:
        """Return the URL of a new, empty database."""
        name = f"crm_test_{uuid.uuid4().hex[:10]}"
        if backend == "sqlite":
            return f"sqlite:///{self.tmp_dir / (name + '.db')}"
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", future=True)
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        self.pg_names.append(name)
        return (
            make_url(PG_ADMIN_URL)
            .set(database=name)
            .render_as_string(hide_password=False)
        )

    def engine(self, backend: str, *, migrated: bool = True) -> Engine:
        """Return an engine on a new database, migrated to head by default."""
        engine = make_engine(self.url(backend))
        self.engines.append(engine)
        if migrated:
            upgrade(engine)
        return engine

    def close(self) -> None:
        for engine in self.engines:
            engine.dispose()
        if not self.pg_names:
            return
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", future=True)
        with admin.connect() as conn:
            for name in self.pg_names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScratchDatabases]:
    dbs = ScratchDatabases(tmp_path_factory.mktemp("db"))
    yield dbs
    dbs.close()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def seeded_engines(scratch: ScratchDatabases) -> dict[str, Engine]:
    """One database per backend, seeded once from data/demo with exact fixture times."""
    return {}


@pytest.fixture(scope="session")
def engine(backend: str, scratch: ScratchDatabases, seeded_engines) -> Engine:
    """A migrated database seeded from the demo fixture (``--no-shift``), per backend.

    Shared by the session: tests that write must use their own ids.
    """
    if backend not in seeded_engines:
        engine = scratch.engine(backend)
        with make_session_factory(engine).begin() as session:
            seed_directory(
                session, directory=DEMO_DIR, as_of=DEFAULT_AS_OF, shift=False
            )
        seeded_engines[backend] = engine
    return seeded_engines[backend]


@pytest.fixture(scope="session")
def factory(engine: Engine) -> sessionmaker:
    return make_session_factory(engine)


@pytest.fixture()
def empty_engine(backend: str, scratch: ScratchDatabases) -> Iterator[Engine]:
    """A new migrated, empty database of the current backend.

    Its pooled connections are closed after the test: PostgreSQL allows 100
    clients, and hundreds of tests each keeping an idle pool would run out.
    """
    engine = scratch.engine(backend)
    yield engine
    engine.dispose()
