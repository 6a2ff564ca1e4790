"""Store benchmark: bulk load rate, append latency and timeline first-page latency.

Each figure is also reported as a ratio against a bare baseline measured in the same
run on the same database: a plain Core INSERT of one row (vs our idempotent, validated
``append_interaction``) and a plain Core SELECT of the newest 50 rows (vs ``timeline``).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import Engine, make_url

from crm_store.db import make_engine, make_session_factory
from crm_store.migrate import upgrade
from crm_store.models import Customer, Interaction
from crm_store.services.interactions import NewInteraction, append_interaction, timeline

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BATCH = 50_000
CHANNELS = ("chat", "telegram", "sms", "voice", "email")
START = dt.datetime(2023, 11, 1)


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def _summary_ms(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {
        "p50_ms": round(_percentile(ms, 50), 3),
        "p99_ms": round(_percentile(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


class _Scratch:
    """A throw-away database of one backend."""

    def __init__(self, backend: str, pg_url: str, workdir: Path) -> None:
        self.backend, self.pg_url = backend, pg_url
        name = f"crm_bench_{uuid.uuid4().hex[:8]}"
        if backend == "sqlite":
            workdir.mkdir(parents=True, exist_ok=True)
            self.path = workdir / f"{name}.db"
            self.url = f"sqlite:///{self.path}"
        else:
            self.name = name
            self._admin(f'CREATE DATABASE "{name}"')
            self.url = (
                make_url(pg_url)
                .set(database=name)
                .render_as_string(hide_password=False)
            )

    def _admin(self, statement: str) -> None:
        admin = create_engine(self.pg_url, isolation_level="AUTOCOMMIT", future=True)
        with admin.connect() as conn:
            conn.execute(text(statement))
        admin.dispose()

    def drop(self) -> None:
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        else:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def _bulk_load(
    engine: Engine, customers: int, interactions: int, progress: Progress
) -> dict[str, Any]:
    rng = random.Random(42)
    span = 3 * 365 * 86400
    task = progress.add_task("customers", total=customers)
    started = time.perf_counter()
    with engine.begin() as conn:
        for first in range(0, customers, BATCH):
            rows = [
                {
                    "id": f"B{n:08d}",
                    "first_name": "Bench",
                    "last_name": str(n),
                    "language": "en",
                    "marketing_opt_in": False,
                    "is_prospect": False,
                    "created_at": START,
                }
                for n in range(first, min(first + BATCH, customers))
            ]
            conn.execute(insert(Customer.__table__), rows)
            progress.update(task, completed=first + len(rows))
    customer_seconds = time.perf_counter() - started
    task = progress.add_task("interactions", total=interactions)
    started = time.perf_counter()
    for first in range(0, interactions, BATCH):
        rows = []
        for n in range(first, min(first + BATCH, interactions)):
            inbound = n % 2 == 0
            rows.append(
                {
                    "event_id": f"bench-{n}",
                    "customer_id": f"B{rng.randrange(customers):08d}",
                    "conversation_id": None,
                    "channel": CHANNELS[n % 5],
                    "direction": "in" if inbound else "out",
                    "author": "customer" if inbound else "bot",
                    "text": "Where is my order?" if inbound else "It ships tomorrow.",
                    "intent": "order_status" if inbound else None,
                    "confidence": 0.93 if inbound else None,
                    "occurred_at": START + dt.timedelta(seconds=rng.randrange(span)),
                    "metadata": {},
                }
            )
        if engine.dialect.name == "postgresql":
            _copy_rows(engine, rows)
        else:
            with engine.begin() as conn:
                conn.execute(insert(Interaction.__table__), rows)
        progress.update(task, completed=first + len(rows))
    interaction_seconds = time.perf_counter() - started
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    return {
        "customers_per_s": round(customers / customer_seconds),
        "interactions_per_s": round(interactions / interaction_seconds),
        "interactions_load_s": round(interaction_seconds, 2),
    }


def _copy_rows(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """Load rows with PostgreSQL's COPY (the bulk path for imports of history)."""
    columns = list(rows[0])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow(
            [
                json.dumps(v) if k == "metadata" else ("" if v is None else v)
                for k, v in row.items()
            ]
        )
    buffer.seek(0)
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            cursor.copy_expert(
                f"COPY interactions ({', '.join(columns)}) "
                "FROM STDIN WITH (FORMAT csv)",
                buffer,
            )
        raw.commit()
    finally:
        raw.close()


def _time_appends(engine: Engine, customers: int, samples: int) -> dict[str, Any]:
    factory = make_session_factory(engine)
    rng = random.Random(7)
    ours, bare = [], []
    now = dt.datetime(2026, 11, 1)
    for n in range(samples):
        customer_id = f"B{rng.randrange(customers):08d}"
        item = NewInteraction(
            event_id=f"ours-{n}-{uuid.uuid4().hex[:6]}",
            customer_id=customer_id,
            channel="chat",
            direction="in",
            author="customer",
            text="hello",
            intent="greet",
            confidence=0.99,
            occurred_at=now,
        )
        started = time.perf_counter()
        with factory.begin() as session:
            append_interaction(session, item=item)
        ours.append(time.perf_counter() - started)
        row = {**item.validated_row(), "event_id": f"bare-{n}-{uuid.uuid4().hex[:6]}"}
        row["metadata"] = row.pop("meta")
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(insert(Interaction.__table__), [row])
        bare.append(time.perf_counter() - started)
    return {"ours": _summary_ms(ours), "bare": _summary_ms(bare)}


def _time_timelines(engine: Engine, customers: int, samples: int) -> dict[str, Any]:
    factory = make_session_factory(engine)
    rng = random.Random(11)
    ours, bare, sizes = [], [], []
    for _ in range(samples):
        customer_id = f"B{rng.randrange(customers):08d}"
        started = time.perf_counter()
        with factory() as session:
            page = timeline(session, customer_id=customer_id, limit=50)
            sizes.append(len(page.items))
        ours.append(time.perf_counter() - started)
        stmt = (
            select(Interaction.__table__)
            .where(Interaction.customer_id == customer_id)
            .order_by(Interaction.occurred_at.desc())
            .limit(50)
        )
        started = time.perf_counter()
        with engine.connect() as conn:
            conn.execute(stmt).all()
        bare.append(time.perf_counter() - started)
    return {
        "ours": _summary_ms(ours),
        "bare": _summary_ms(bare),
        "mean_page_rows": round(statistics.fmean(sizes), 1),
    }


def run_store_bench(
    *,
    customers: int,
    interactions: int,
    samples: int,
    backends: list[str],
    pg_url: str,
    console: Console,
) -> dict:
    """Run the benchmark on each backend, print a table and write JSON results."""
    results: dict[str, Any] = {
        "benchmark": "store",
        "customers": customers,
        "interactions": interactions,
        "samples": samples,
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "backends": {},
    }
    for backend in backends:
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"unknown backend {backend!r} (sqlite or postgresql)")
        scratch = _Scratch(backend, pg_url, RESULTS_DIR.parent.parent / "var" / "bench")
        engine = make_engine(scratch.url)
        try:
            upgrade(engine)
            with Progress(console=Console(stderr=True), transient=True) as progress:
                load = _bulk_load(engine, customers, interactions, progress)
            appends = _time_appends(engine, customers, samples)
            timelines = _time_timelines(engine, customers, samples)
        finally:
            engine.dispose()
            scratch.drop()
        results["backends"][backend] = {
            "load": load,
            "append": appends,
            "timeline": timelines,
        }
    _print_table(results, console)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    name = f"store-{customers}c-{interactions}i.json"
    (RESULTS_DIR / name).write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote bench/results/{name}")
    return results


def _print_table(results: dict, console: Console) -> None:
    table = Table(
        title=f"store benchmark: {results['customers']:,} customers, "
        f"{results['interactions']:,} interactions"
    )
    for column in (
        "backend",
        "load rows/s",
        "append p50",
        "append p99",
        "append p99 / bare",
        "timeline p50",
        "timeline p99",
        "timeline p99 / bare",
    ):
        table.add_column(column, justify="right")
    for backend, r in results["backends"].items():
        a, t = r["append"], r["timeline"]
        table.add_row(
            backend,
            f"{r['load']['interactions_per_s']:,}",
            f"{a['ours']['p50_ms']:.2f} ms",
            f"{a['ours']['p99_ms']:.2f} ms",
            f"{a['ours']['p99_ms'] / a['bare']['p99_ms']:.2f}x",
            f"{t['ours']['p50_ms']:.2f} ms",
            f"{t['ours']['p99_ms']:.2f} ms",
            f"{t['ours']['p99_ms'] / t['bare']['p99_ms']:.2f}x",
        )
    console.print(table)
