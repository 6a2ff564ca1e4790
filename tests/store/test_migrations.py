"""Alembic migrations: round trip on both backends, and the models match the head."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from crm_store.migrate import downgrade, upgrade
from crm_store.models import metadata


def test_upgrade_downgrade_upgrade(scratch, backend):
    engine = scratch.engine(backend, migrated=False)
    upgrade(engine)
    assert {"customers", "interactions", "orders"} <= set(
        inspect(engine).get_table_names()
    )
    downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(engine)
    assert "handoffs" in inspect(engine).get_table_names()


def test_models_match_the_migrated_schema(scratch, backend):
    engine = scratch.engine(backend)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, metadata)
    assert diff == []
