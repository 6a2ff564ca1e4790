"""Analytics benchmark: refresh time for N synthetic customers on PostgreSQL.

For each size a scratch database is created, filled with COPY (customers, orders
with a realistic purchase rhythm, conversations and complaint messages), then:
the churn model is trained once, a full refresh writes every row, a refresh
after 100 customers got a new order writes only those, and a refresh without
changes writes nothing. The scratch database is dropped afterwards.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from crm_store.analytics.churn import save_model, train_churn_model
from crm_store.analytics.config import AnalyticsConfig
from crm_store.analytics.refresh import refresh_scores
from crm_store.db import make_engine, make_session_factory
from crm_store.migrate import upgrade

RESULTS_DIR = Path(__file__).resolve().parent / "results"
AS_OF = dt.datetime(2026, 11, 1, 12)
SPAN_DAYS = 3 * 365
COPY_CHUNK = 500_000


def _admin(pg_url: str, statement: str) -> None:
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT", future=True)
    with admin.connect() as conn:
        conn.execute(text(statement))
    admin.dispose()


def _copy(engine: Engine, table: str, frame: pd.DataFrame) -> None:
    """COPY ``frame`` into ``table`` in chunks."""
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            for start in range(0, len(frame), COPY_CHUNK):
                buffer = io.StringIO()
                frame.iloc[start : start + COPY_CHUNK].to_csv(
                    buffer, index=False, header=False, na_rep="\\N"
                )
                buffer.seek(0)
                cursor.copy_expert(
                    f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN "
                    "WITH (FORMAT csv, NULL '\\N')",
                    buffer,
                )
        raw.commit()
    finally:
        raw.close()


def generate(engine: Engine, customers: int, orders_per_customer: float) -> dict:
    """Fill the store with synthetic customers, orders and contacts."""
    rng = np.random.default_rng(42)
    ids = np.char.add("B", np.char.zfill(np.arange(customers).astype(str), 8))
    start = AS_OF - dt.timedelta(days=SPAN_DAYS)
    first = rng.uniform(0, SPAN_DAYS, customers)
    # purchase rate per day and a lifetime after which the customer stops
    rate = rng.gamma(1.2, orders_per_customer / SPAN_DAYS * 2.2, customers)
    life = rng.exponential(SPAN_DAYS * 0.7, customers)
    end = np.minimum(first + life, SPAN_DAYS)
    counts = 1 + rng.poisson(rate * np.maximum(end - first, 0))
    owner = np.repeat(np.arange(customers), counts)
    offset = first[owner] + rng.uniform(0, 1, len(owner)) * (end - first)[owner]
    offset[np.r_[0, np.cumsum(counts)[:-1]]] = first  # first order on day one
    placed = pd.Timestamp(start) + pd.to_timedelta(offset, unit="D")
    subtotal = np.round(rng.gamma(2.0, 35.0, len(owner)), 2)
    status = rng.choice(
        ["delivered", "cancelled", "returned", "shipped"],
        p=[0.88, 0.05, 0.05, 0.02],
        size=len(owner),
    )
    _copy(
        engine,
        "customers",
        pd.DataFrame(
            {
                "id": ids,
                "first_name": "Bench",
                "language": "en",
                "marketing_opt_in": False,
                "is_prospect": False,
                "created_at": pd.Timestamp(start) + pd.to_timedelta(first, unit="D"),
            }
        ),
    )
    _copy(
        engine,
        "orders",
        pd.DataFrame(
            {
                "id": np.char.add("BO", np.arange(len(owner)).astype(str)),
                "customer_id": ids[owner],
                "placed_at": placed,
                "status": status,
                "subtotal": subtotal,
                "shipping_fee": 0,
                "total": subtotal,
                "currency": "EUR",
                "updated_at": placed,
            }
        ),
    )
    n_conv = customers // 2
    who = rng.integers(0, customers, n_conv)
    at = pd.Timestamp(start) + pd.to_timedelta(
        rng.uniform(0, SPAN_DAYS, n_conv), unit="D"
    )
    conv_ids = np.char.add("bc", np.arange(n_conv).astype(str))
    csat = rng.integers(1, 6, n_conv).astype(float)
    csat[rng.random(n_conv) < 0.5] = np.nan
    _copy(
        engine,
        "conversations",
        pd.DataFrame(
            {
                "id": conv_ids,
                "customer_id": ids[who],
                "channel": "chat",
                "started_at": at,
                "last_activity_at": at,
                "status": "closed",
                "outcome": rng.choice(
                    ["self_served", "escalated", "abandoned"],
                    p=[0.5, 0.35, 0.15],
                    size=n_conv,
                ),
                "csat": pd.array(csat, dtype="Int64"),
            }
        ),
    )
    complaint = rng.random(n_conv) < 0.3
    _copy(
        engine,
        "interactions",
        pd.DataFrame(
            {
                "event_id": np.char.add("be", conv_ids[complaint]),
                "customer_id": ids[who][complaint],
                "conversation_id": conv_ids[complaint],
                "channel": "chat",
                "direction": "in",
                "author": "customer",
                "intent": "complaint",
                "occurred_at": at[complaint],
                "metadata": '{"outcome": "unresolved"}',
            }
        ),
    )
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    return {
        "customers": customers,
        "orders": int(len(owner)),
        "conversations": int(n_conv),
        "complaints": int(complaint.sum()),
    }


def _touch(engine: Engine, customers: int, changed: int) -> None:
    """Give ``changed`` customers one more order (an incremental refresh case)."""
    rng = np.random.default_rng(7)
    picked = rng.choice(customers, changed, replace=False)
    when = AS_OF - dt.timedelta(hours=3)
    with engine.begin() as conn:
        for i, index in enumerate(picked):
            conn.execute(
                text(
                    "INSERT INTO orders (id, customer_id, placed_at, status, subtotal,"
                    " shipping_fee, total, currency, updated_at) VALUES (:id, :c, :t,"
                    " 'paid', 50, 0, 50, 'EUR', :t)"
                ),
                {"id": f"BT{uuid.uuid4().hex[:8]}{i}", "c": f"B{index:08d}", "t": when},
            )


def bench_size(
    pg_url: str, customers: int, orders_per_customer: float, console: Console
) -> dict[str, Any]:
    """Run the benchmark for one size and return its figures."""
    name = f"crm_bench_analytics_{uuid.uuid4().hex[:8]}"
    _admin(pg_url, f'CREATE DATABASE "{name}"')
    engine = make_engine(
        make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    )
    model_file = Path(tempfile.gettempdir()) / f"{name}.joblib"
    try:
        upgrade(engine)
        started = time.perf_counter()
        with console.status(f"generating {customers:,} customers"):
            data = generate(engine, customers, orders_per_customer)
        data["generate_s"] = round(time.perf_counter() - started, 1)
        factory = make_session_factory(engine)
        config = AnalyticsConfig()
        started = time.perf_counter()
        with factory() as session:
            model = train_churn_model(session, as_of=AS_OF)
        save_model(model, model_file)
        data["train_s"] = round(time.perf_counter() - started, 2)
        runs = {}
        for label in ("full", "incremental (100 changed)", "no change"):
            if label.startswith("incremental"):
                _touch(engine, customers, 100)
            started = time.perf_counter()
            with factory.begin() as session:
                report = refresh_scores(
                    session, as_of=AS_OF, config=config, model_file=model_file
                )
            runs[label] = {
                "seconds": round(time.perf_counter() - started, 2),
                "written": report.written,
                "stages": {k: round(v, 2) for k, v in report.seconds.items()},
            }
        data["refresh"] = runs
        return data
    finally:
        engine.dispose()
        model_file.unlink(missing_ok=True)
        _admin(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_analytics_bench(
    *,
    sizes: list[int],
    orders_per_customer: float,
    pg_url: str,
    console: Console,
) -> dict[str, Any]:
    """Benchmark each size, print a table and write bench/results/analytics-*.json."""
    results: dict[str, Any] = {
        "bench": "analytics",
        "backend": "postgresql",
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "sizes": {},
    }
    for size in sizes:
        results["sizes"][str(size)] = bench_size(
            pg_url, size, orders_per_customer, console
        )
    table = Table(title="crm analytics refresh (PostgreSQL)")
    for column in (
        "customers",
        "orders",
        "train s",
        "refresh",
        "seconds",
        "written",
        "load / compute / write s",
    ):
        table.add_column(column)
    for size, data in results["sizes"].items():
        for label, run in data["refresh"].items():
            stages = run["stages"]
            compute = stages.get("rfm_clv", 0) + stages.get("churn", 0)
            table.add_row(
                f"{int(size):,}",
                f"{data['orders']:,}",
                str(data["train_s"]),
                label,
                str(run["seconds"]),
                f"{run['written']:,}",
                f"{stages.get('load', 0):.1f} / {compute:.1f} / "
                f"{stages.get('write', 0):.1f}",
            )
    console.print(table)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    suffix = "-".join(str(s) for s in sizes)
    path = RESULTS_DIR / f"analytics-{suffix}.json"
    path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    console.print(f"wrote {path}")
    return results
