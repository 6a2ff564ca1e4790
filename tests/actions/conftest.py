"""Fixtures for running actions on trackers against a real, seeded SQLite store.

The demo fixture is seeded once per session (timestamps shifted to now, as in
``make run``) into a template file; every test gets its own copy, and the
actions are pointed at it through ``CRM_DATABASE_URL`` (see ``actions.store``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from action_support import SECRET
from sqlalchemy.orm import sessionmaker

from crm_settings import get_settings
from crm_store.db import engine_for, make_engine, make_session_factory, session_factory
from crm_store.migrate import upgrade
from crm_store.seeding import DEFAULT_AS_OF, seed_directory

DEMO_DIR = Path(__file__).resolve().parents[2] / "data" / "demo"


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file with the demo data, shifted so ``as_of`` is now."""
    path = tmp_path_factory.mktemp("actions-store") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with make_session_factory(engine).begin() as session:
        seed_directory(session, directory=DEMO_DIR, as_of=DEFAULT_AS_OF)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture()
def store(
    seeded_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[sessionmaker]:
    """A private copy of the seeded store that the actions use; yields its factory."""
    path = tmp_path / "crm.db"
    shutil.copyfile(seeded_template, path)
    url = f"sqlite:///{path}"
    monkeypatch.setenv("CRM_DATABASE_URL", url)
    monkeypatch.setenv("CRM_IDENTITY_SECRET", SECRET)
    monkeypatch.delenv("CRM_TREATMENT_RULES", raising=False)
    monkeypatch.delenv("CRM_ECHO_SQL", raising=False)
    get_settings.cache_clear()
    yield session_factory(url)
    get_settings.cache_clear()
    engine_for(url).dispose()
