"""Reports benchmark: KPIs, the KPI page and ``crm report export`` on PostgreSQL.

On the synthetic dataset of ``bench.reports_data`` (1M conversations and 10M
messages over a year by default, reused between runs), each figure is the
median of ``runs`` runs, next to a bare baseline measured in the same run:

- ``kpi_report`` for the last 30 days and the whole year, against
  ``SELECT count(*)`` of the same conversations;
- the KPI page (``GET /manager/kpis``, HTML) and its JSON (``/api/reports/kpis``)
  for 30 days, through the real console app in process, as a manager;
- ``crm report export`` of the whole year to CSV and to Parquet, as a
  subprocess (rows/s, seconds, peak RSS of the process), against PostgreSQL's
  ``COPY (SELECT * FROM conversations WHERE …) TO STDOUT`` into a null sink,
  and against reading ``conversation_rows`` in process without writing
  anything (what the report query itself costs).

Targets: KPI page < 2 s, export > 50k rows/s and < 200 MB peak RSS.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from bench.reports_data import Dataset, ensure_dataset
from crm_store.db import make_engine, make_session_factory
from crm_store.models import Conversation
from crm_store.services.reports import conversation_rows, kpi_report

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
TARGETS = {"kpi_page_seconds": 2.0, "export_rows_per_s": 50_000, "export_rss_mb": 200}


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _timed(work: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    """Seconds of each run, and the last run's result."""
    seconds, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = work()
        seconds.append(time.perf_counter() - started)
    return seconds, result


def _summary(seconds: list[float]) -> dict[str, Any]:
    return {
        "seconds": round(_median(seconds), 4),
        "runs": [round(s, 4) for s in seconds],
    }


def _periods(anchor: dt.datetime) -> dict[str, tuple[dt.datetime, dt.datetime]]:
    return {
        "30d": (anchor - dt.timedelta(days=30), anchor),
        "365d": (anchor - dt.timedelta(days=365), anchor),
    }


def _day_args(start: dt.datetime, end: dt.datetime) -> tuple[str, str]:
    """``--from``/``--to`` dates of [start, end) (the end date is inclusive)."""
    return f"{start:%Y-%m-%d}", f"{end - dt.timedelta(days=1):%Y-%m-%d}"


def _kpis(engine: Engine, dataset: Dataset, runs: int) -> dict[str, Any]:
    factory = make_session_factory(engine)
    c = Conversation.__table__.c
    results = {}
    for name, (start, end) in _periods(dataset.anchor).items():

        def report(start=start, end=end):  # noqa: ANN001, ANN202
            with factory() as session:
                return kpi_report(session, start=start, end=end, now=dataset.anchor)

        def count(start=start, end=end):  # noqa: ANN001, ANN202
            with factory() as session:
                return session.execute(
                    select(func.count())
                    .select_from(Conversation.__table__)
                    .where(c.started_at >= start, c.started_at < end)
                ).scalar_one()

        seconds, kpi = _timed(report, runs)
        count_seconds, rows = _timed(count, runs)
        overall = kpi.overall.as_dict()
        results[name] = {
            **_summary(seconds),
            "conversations": rows,
            "count_seconds": round(_median(count_seconds), 4),
            "ratio_to_count": round(_median(seconds) / _median(count_seconds), 1),
            "figures": overall,
            "channels": len(kpi.by_channel),
            "days": len(kpi.by_day),
            "escalation_reasons": len(kpi.escalation_reasons),
        }
    return results


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _console_page(engine: Engine, dataset: Dataset, runs: int) -> dict[str, Any]:
    """The KPI page and its JSON for 30 days, in process, as the manager."""
    from fastapi.testclient import TestClient

    from console.app import create_app
    from crm_settings import Settings

    settings = Settings(
        database_url=dataset.url,
        console_secret="bench-console-secret-" + "x" * 24,
        rasa_internal_url=f"http://127.0.0.1:{_unused_port()}",
        agent_hours="always",
        environment="development",
        chat_socket_url=None,
    )
    app = create_app(settings, make_session_factory(engine), queue_watch_seconds=None)
    start, end = _periods(dataset.anchor)["30d"]
    first, last = _day_args(start, end)
    results = {}
    with TestClient(app) as client:
        answer = client.post(
            "/api/auth/token",
            json={"username": "manager", "password": dataset.manager_password},
        )
        answer.raise_for_status()
        headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        for name, path in (
            ("kpi_page", "/manager/kpis"),
            ("kpi_api", "/api/reports/kpis"),
        ):

            def get(path=path):  # noqa: ANN001, ANN202
                response = client.get(
                    path, params={"from": first, "to": last}, headers=headers
                )
                response.raise_for_status()
                return response

            seconds, response = _timed(get, runs)
            results[name] = {
                **_summary(seconds),
                "status": response.status_code,
                "bytes": len(response.content),
            }
    return results


def _run_export(url: str, fmt: str, start: dt.datetime, end: dt.datetime) -> dict:
    """One ``crm report export`` subprocess: seconds, peak RSS, file size."""
    first, last = _day_args(start, end)
    with tempfile.TemporaryDirectory(prefix="bench-reports-") as directory:
        target = Path(directory) / f"conversations.{fmt}"
        command = [
            sys.executable,
            "-m",
            "cli.main",
            "report",
            "export",
            "--from",
            first,
            "--to",
            last,
            "--format",
            fmt,
            "--output",
            str(target),
            "--no-progress",
            "--db-url",
            url,
        ]
        started = time.perf_counter()
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # wait4 gives this child's own peak RSS (ru_maxrss, KiB on Linux).
        _pid, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr = process.stderr.read().decode(errors="replace")
        process.stderr.close()
        if process.returncode != 0:
            raise RuntimeError(f"crm report export failed: {stderr.strip()}")
        return {
            "seconds": seconds,
            "peak_rss_mb": usage.ru_maxrss / 1024,
            "bytes": target.stat().st_size,
        }


def _exports(dataset: Dataset, rows: int, runs: int) -> dict[str, Any]:
    start, end = _periods(dataset.anchor)["365d"]
    results = {}
    for fmt in ("csv", "parquet"):
        measured = [_run_export(dataset.url, fmt, start, end) for _ in range(runs)]
        seconds = [m["seconds"] for m in measured]
        results[fmt] = {
            **_summary(seconds),
            "rows": rows,
            "rows_per_s": round(rows / _median(seconds)),
            "peak_rss_mb": round(max(m["peak_rss_mb"] for m in measured), 1),
            "bytes": measured[-1]["bytes"],
        }
    return results


def _rows_only(engine: Engine, dataset: Dataset, runs: int) -> dict:
    """``conversation_rows`` of the year read in process, written nowhere."""
    start, end = _periods(dataset.anchor)["365d"]
    factory = make_session_factory(engine)
    firsts = []

    def read() -> int:
        with factory() as session:
            began = time.perf_counter()
            stream = conversation_rows(
                session, start=start, end=end, now=dataset.anchor, batch_size=5000
            )
            count = 0
            for _row in stream:
                if not count:
                    firsts.append(time.perf_counter() - began)
                count += 1
            return count

    seconds, count = _timed(read, runs)
    return {
        **_summary(seconds),
        "rows": count,
        "rows_per_s": round(count / _median(seconds)),
        "first_row_seconds": round(_median(firsts), 3) if firsts else None,
    }


class _NullSink:
    """A file-like object that drops what COPY writes (counts the bytes)."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes | str) -> int:
        self.bytes += len(data)
        return len(data)


COPY_PERIOD = (
    "COPY (SELECT * FROM conversations WHERE started_at >= %s AND started_at < %s) "
    "TO STDOUT"
)


def _copy(engine: Engine, dataset: Dataset, rows: int, runs: int) -> dict[str, Any]:
    """PostgreSQL's own COPY of the year's conversations into a null sink."""
    start, end = _periods(dataset.anchor)["365d"]

    def copy() -> int:
        raw = engine.raw_connection()
        try:
            with raw.cursor() as cursor:
                statement = cursor.mogrify(COPY_PERIOD, (start, end)).decode()
                sink = _NullSink()
                cursor.copy_expert(statement, sink)
            raw.rollback()
            return sink.bytes
        finally:
            raw.close()

    seconds, size = _timed(copy, runs)
    return {
        **_summary(seconds),
        "rows": rows,
        "rows_per_s": round(rows / _median(seconds)),
        "bytes": size,
    }


def run_reports_bench(
    *,
    conversations: int,
    messages_per_conversation: int,
    runs: int,
    database: str,
    pg_url: str,
    json_path: Path | None,
    console: Console,
) -> dict:
    """Generate or reuse the dataset, measure, print a table, write JSON."""
    dataset = ensure_dataset(
        pg_url=pg_url,
        database=database,
        conversations=conversations,
        messages_per_conversation=messages_per_conversation,
        console=console,
    )
    engine = make_engine(dataset.url)
    try:
        kpis = _kpis(engine, dataset, runs)
        year_rows = kpis["365d"]["conversations"]
        page = _console_page(engine, dataset, runs)
        copy = _copy(engine, dataset, year_rows, runs)
        query = _rows_only(engine, dataset, runs)
        exports = _exports(dataset, year_rows, runs)
    finally:
        engine.dispose()
    for result in exports.values():
        result["ratio_to_copy"] = round(result["rows_per_s"] / copy["rows_per_s"], 3)
        result["ratio_to_rows_only"] = round(
            result["rows_per_s"] / query["rows_per_s"], 3
        )
    results = {
        "benchmark": "reports",
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "runs": runs,
        "dataset": dataset.as_dict(),
        "kpi": kpis,
        "console": page,
        "copy_baseline": copy,
        "rows_only": query,
        "export": exports,
        "targets": TARGETS,
        "met": {
            "kpi_page_seconds": page["kpi_page"]["seconds"]
            < TARGETS["kpi_page_seconds"],
            "export_rows_per_s": all(
                e["rows_per_s"] > TARGETS["export_rows_per_s"] for e in exports.values()
            ),
            "export_rss_mb": all(
                e["peak_rss_mb"] < TARGETS["export_rss_mb"] for e in exports.values()
            ),
        },
    }
    _print_table(results, console)
    path = json_path or RESULTS_DIR / "reports.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {path}", highlight=False)
    return results


def _print_table(results: dict, console: Console) -> None:
    data = results["dataset"]
    table = Table(
        title=f"reports benchmark: {data['conversations']:,} conversations, "
        f"{data['rows']['interactions']:,} messages (median of {results['runs']})"
    )
    for column in ("measure", "ours", "baseline", "ratio", "target"):
        table.add_column(column, justify="right")
    for name, label in (("30d", "last 30 days"), ("365d", "whole year")):
        k = results["kpi"][name]
        table.add_row(
            f"kpi_report, {label} ({k['conversations']:,} conv.)",
            f"{k['seconds']:.3f} s",
            f"count(*) {k['count_seconds']:.3f} s",
            f"{k['ratio_to_count']:.1f}x",
            "",
        )
    page = results["console"]
    table.add_row(
        "KPI page, 30 days (HTML)",
        f"{page['kpi_page']['seconds']:.3f} s",
        "",
        "",
        f"< {TARGETS['kpi_page_seconds']:.0f} s",
    )
    table.add_row(
        "KPI JSON, 30 days", f"{page['kpi_api']['seconds']:.3f} s", "", "", ""
    )
    copy, query = results["copy_baseline"], results["rows_only"]
    table.add_row(
        "conversation_rows only, whole year",
        f"{query['rows_per_s']:,} rows/s ({query['seconds']:.1f} s)",
        f"COPY {copy['rows_per_s']:,} rows/s",
        f"{query['rows_per_s'] / copy['rows_per_s']:.3f}x",
        f"first row {query['first_row_seconds']} s",
    )
    for fmt, e in results["export"].items():
        table.add_row(
            f"export {fmt}, whole year",
            f"{e['rows_per_s']:,} rows/s ({e['seconds']:.1f} s)",
            f"COPY {copy['rows_per_s']:,} rows/s",
            f"{e['ratio_to_copy']:.3f}x",
            f"> {TARGETS['export_rows_per_s']:,} rows/s",
        )
        table.add_row(
            f"export {fmt}, peak RSS",
            f"{e['peak_rss_mb']:.0f} MB",
            "",
            "",
            f"< {TARGETS['export_rss_mb']} MB",
        )
    console.print(table)
    missed = [name for name, ok in results["met"].items() if not ok]
    console.print(
        "targets: all met" if not missed else f"targets missed: {', '.join(missed)}",
        highlight=False,
    )
