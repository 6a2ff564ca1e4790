"""``crm bench reports`` at a smoke-test size on PostgreSQL (figures, not timings)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from bench.reports_data import drop_database
from cli.main import app
from tests.conftest import PG_ADMIN_URL

CONVERSATIONS = 2000
PER = 4


@pytest.fixture()
def database() -> Iterator[str]:
    name = f"crm_test_{uuid.uuid4().hex[:10]}"
    yield name
    drop_database(PG_ADMIN_URL, name)


def bench(database: str, json_path: Path) -> object:
    return CliRunner(mix_stderr=False).invoke(
        app,
        [
            "bench",
            "reports",
            "--conversations",
            str(CONVERSATIONS),
            "--messages-per-conversation",
            str(PER),
            "--runs",
            "1",
            "--database",
            database,
            "--pg-url",
            PG_ADMIN_URL,
            "--json",
            str(json_path),
        ],
    )


@pytest.mark.slow
def test_bench_reports_at_smoke_size(database: str, tmp_path: Path) -> None:
    result = bench(database, tmp_path / "first.json")
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    data = json.loads((tmp_path / "first.json").read_text())
    dataset = data["dataset"]
    assert dataset["generated"] is True
    assert dataset["conversations"] == CONVERSATIONS
    assert dataset["customers"] == CONVERSATIONS // 5
    assert dataset["rows"]["conversations"] == CONVERSATIONS
    assert dataset["rows"]["interactions"] == CONVERSATIONS * PER
    assert "password" not in json.dumps(dataset)

    year = data["kpi"]["365d"]
    figures = year["figures"]
    # Every conversation starts within the 365 days before the anchor.
    assert year["conversations"] == figures["conversations"] == CONVERSATIONS
    assert year["days"] == 365 and year["channels"] == 5
    assert year["escalation_reasons"] >= 5
    # The dataset's shape: ~20 % escalated (one handoff each), ~15 % abandoned,
    # a rating asked in ~60 %, answered in ~40 % of those, some never answered.
    assert dataset["rows"]["handoffs"] == figures["escalated"]
    assert 0.15 < figures["escalation_rate"] < 0.25
    assert 0.10 < figures["abandoned"] / CONVERSATIONS < 0.20
    assert 0.50 < figures["csat_asked"] / CONVERSATIONS < 0.70
    assert 0.30 < figures["csat_response_rate"] < 0.50
    assert 0 < figures["never_answered"] < figures["escalated"] * 0.2
    assert figures["containment_eligible"] > 0 and figures["contained"] > 0
    assert figures["contained"] < figures["self_served"]  # some came back
    assert data["kpi"]["30d"]["conversations"] < CONVERSATIONS / 5

    assert data["console"]["kpi_page"]["status"] == 200
    assert data["console"]["kpi_api"]["status"] == 200
    assert data["copy_baseline"]["rows"] == CONVERSATIONS
    assert data["rows_only"]["rows"] == CONVERSATIONS
    assert data["rows_only"]["first_row_seconds"] > 0
    for fmt in ("csv", "parquet"):
        export = data["export"][fmt]
        assert export["rows"] == CONVERSATIONS
        assert export["bytes"] > 0 and export["peak_rss_mb"] > 0
        assert export["rows_per_s"] > 0 and export["ratio_to_copy"] > 0
        assert export["ratio_to_rows_only"] > 0
    assert set(data["met"]) == set(data["targets"])

    again = bench(database, tmp_path / "second.json")
    assert again.exit_code == 0, (again.stdout, again.stderr, again.exception)
    assert "reusing the dataset" in again.stdout
    second = json.loads((tmp_path / "second.json").read_text())
    assert second["dataset"]["generated"] is False
    assert second["kpi"]["365d"]["figures"] == figures


def test_a_bad_database_name_is_refused(tmp_path: Path) -> None:
    result = bench('x"; DROP DATABASE postgres; --', tmp_path / "x.json")
    assert result.exit_code != 0
    assert isinstance(result.exception, ValueError)
    assert not (tmp_path / "x.json").exists()


def test_a_database_that_is_not_a_bench_dataset_is_never_dropped(
    database: str, tmp_path: Path
) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", future=True)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{database}"'))
        result = bench(database, tmp_path / "x.json")
        assert result.exit_code != 0
        assert "not a reports-bench dataset" in str(result.exception)
        with admin.connect() as conn:
            found = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": database},
            ).first()
        assert found is not None
    finally:
        admin.dispose()
