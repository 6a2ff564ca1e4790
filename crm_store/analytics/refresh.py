"""Recompute every customer's scores and upsert the changed rows.

A refresh loads per-customer aggregates with a few SELECTs, computes RFM, CLV,
tiers and churn risk vectorised in pandas/numpy, and writes ``customer_scores``
with a bulk upsert in chunks. Each row stores an input hash: the customer's order
and contact summary plus the reference date, the settings and the churn model
version. Rows whose hash did not change are not written, so a refresh after a
few customers changed writes only those customers. Population-relative parts
(quintile edges, the BG/NBD fit) of unchanged rows are refreshed whenever the
reference date, settings or model change (e.g. the next day), or with ``full``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    Table,
    func,
    literal,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from crm_store.analytics import clv as clv_model
from crm_store.analytics.churn import (
    FEATURE_LABELS,
    FEATURES,
    ChurnModel,
    churn_features,
    load_model,
    save_model,
    train_churn_model,
)
from crm_store.analytics.config import AnalyticsConfig, load_config, model_path
from crm_store.analytics.features import (
    contact_features,
    load_contacts,
    load_customers,
    load_order_summary,
    read_frame,
)
from crm_store.analytics.rfm import compute_rfm
from crm_store.analytics.tiers import churn_bands, value_tiers
from crm_store.errors import InvalidInput
from crm_store.models import CustomerScore, utcnow

logger = logging.getLogger(__name__)
ProgressFn = Callable[[str, int, int], None]
WEEK = np.timedelta64(7, "D")
MIN_BUYERS_FOR_CLV = 20
SCORE_COLUMNS = (
    "as_of",
    "recency_days",
    "frequency",
    "monetary",
    "r_score",
    "f_score",
    "m_score",
    "rfm_segment",
    "actual_value",
    "clv",
    "clv_heuristic",
    "value_tier",
    "churn_risk",
    "churn_band",
    "explanation",
    "input_hash",
    "computed_at",
)


@dataclass
class RefreshReport:
    """What a refresh did."""

    as_of: dt.datetime
    customers: int = 0
    written: int = 0
    unchanged: int = 0
    model_version: str = ""
    trained_model: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    clv_params: dict[str, float] = field(default_factory=dict)


def default_as_of(now: dt.datetime | None = None) -> dt.datetime:
    """The end of the current UTC day: today's orders count, and reruns match."""
    now = now or utcnow()
    return dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time())


def _weeks(delta: pd.Series) -> np.ndarray:
    return (delta / WEEK).to_numpy(dtype="float64")


def compute_clv(
    orders: pd.DataFrame, *, as_of: dt.datetime, config: AnalyticsConfig
) -> tuple[pd.DataFrame, dict[str, float]]:
    """CLV (BG/NBD + Gamma-Gamma), heuristic CLV and P(alive) per buyer."""
    buyers = orders[orders["purchases"] > 0]
    at = pd.Timestamp(as_of)
    n = buyers["purchases"].to_numpy(dtype="float64")
    x = n - 1
    t_x = _weeks(buyers["last_purchase"] - buyers["first_purchase"])
    t = _weeks(at - buyers["first_purchase"])
    kept = buyers["kept"].to_numpy(dtype="float64")
    mean_value = (buyers["spend"] / buyers["kept"].clip(lower=1)).to_numpy("float64")
    # future purchases include some returns: scale order value by the kept share
    kept_share = float(kept.sum() / n.sum()) if len(n) else 1.0
    out = pd.DataFrame(index=buyers.index)
    out["clv_heuristic"] = clv_model.heuristic_clv(
        buyers["spend_recent"].to_numpy(dtype="float64"),
        margin_rate=config.margin_rate,
        annual_discount_rate=config.annual_discount_rate,
        retention=config.heuristic_retention,
        horizon_months=config.clv_horizon_months,
    )
    if len(buyers) < MIN_BUYERS_FOR_CLV:
        out["clv"], out["p_alive"], out["purchases_12m"] = np.nan, np.nan, np.nan
        return out, {}
    rng = np.random.default_rng(0)
    sample = (
        rng.choice(len(buyers), config.fit_sample, replace=False)
        if len(buyers) > config.fit_sample
        else slice(None)
    )
    bg = clv_model.fit_bgnbd(x[sample], t_x[sample], t[sample])
    gg = clv_model.fit_gamma_gamma(kept[sample], mean_value[sample])
    out["clv"] = clv_model.discounted_clv(
        bg,
        gg,
        x=x,
        t_x=t_x,
        t=t,
        purchases=kept,
        mean_value=mean_value,
        margin_rate=config.margin_rate * kept_share,
        annual_discount_rate=config.annual_discount_rate,
        horizon_months=config.clv_horizon_months,
        step_months=config.clv_step_months,
    )
    out["p_alive"] = clv_model.probability_alive(bg, x, t_x, t)
    out["purchases_12m"] = clv_model.expected_purchases(bg, 52.1775, x, t_x, t)
    params = {f"bgnbd_{k}": float(v) for k, v in vars(bg).items()}
    params.update({f"gg_{k}": float(v) for k, v in vars(gg).items()})
    return out, params


def input_hashes(
    customers: pd.DataFrame,
    orders: pd.DataFrame,
    contacts: pd.DataFrame,
    *,
    fingerprint: str,
) -> pd.Series:
    """A per-customer hash of orders, contacts and the global ``fingerprint``."""
    o = orders.reindex(customers.index)
    frame = pd.DataFrame(index=customers.index)
    for column in ("orders", "purchases", "returned", "cancelled"):
        frame[column] = o[column].fillna(-1).astype("int64")
    frame["spend"] = o["spend"].fillna(-1.0).round(2)
    for column in ("first_purchase", "last_purchase", "last_update"):
        frame[column] = o[column].astype("int64", errors="ignore").fillna(0)
    counts = contacts.copy()
    counts["at"] = counts["at"].astype("int64")
    if len(counts):
        g = counts.groupby("customer_id")
        summary = pd.DataFrame(
            {
                "n": g.size(),
                "last": g["at"].max(),
                "flags": g[["escalated", "unresolved", "low_csat", "complaint"]]
                .sum()
                .sum(axis=1),
            }
        )
        frame = frame.join(summary.reindex(customers.index).fillna(0).astype("int64"))
    frame["prospect"] = customers["is_prospect"].astype("int64")
    row_hash = pd.util.hash_pandas_object(frame, index=True).to_numpy()
    return pd.Series(
        [f"{fingerprint}:{h:016x}" for h in row_hash.tolist()], index=frame.index
    )


def compute_scores(
    session: Session,
    *,
    as_of: dt.datetime,
    config: AnalyticsConfig,
    model: ChurnModel,
    timings: dict[str, float] | None = None,
    previous_hashes: pd.Series | None = None,
) -> tuple[pd.DataFrame, dict[str, float], int]:
    """Return score rows with every ``customer_scores`` column.

    Args:
        session: the caller's session.
        as_of: reference time.
        config: settings.
        model: the churn model.
        timings: filled with seconds per stage.
        previous_hashes: stored input hash per customer id; when given, only the
            customers whose hash differs are returned (and explained).

    Returns:
        The rows, the fitted CLV parameters and the number of customers scored.
    """
    timings = {} if timings is None else timings
    start = time.perf_counter()
    customers = load_customers(session)
    orders = load_order_summary(session, until=as_of)
    orders = orders[orders.index.isin(customers.index)]
    contacts = load_contacts(session, until=as_of)
    timings["load"] = time.perf_counter() - start
    start = time.perf_counter()
    scores = compute_rfm(customers.index, orders, as_of=as_of)
    clv, params = compute_clv(orders, as_of=as_of, config=config)
    scores = scores.join(clv)
    scores["actual_value"] = scores["monetary"] * config.margin_rate
    scores["clv_heuristic"] = scores["clv_heuristic"].fillna(0.0)
    scores["clv"] = scores["clv"].where(scores["frequency"] > 0, 0.0)
    scores["value_tier"] = value_tiers(
        scores["actual_value"], scores["clv"], config=config
    )
    timings["rfm_clv"] = time.perf_counter() - start
    start = time.perf_counter()
    history = contact_features(
        contacts,
        index=customers.index,
        last_purchase=orders["last_purchase"].reindex(customers.index),
    )
    features = churn_features(orders, contacts, as_of=as_of, history=history)
    scores["churn_risk"] = model.predict(features).reindex(scores.index)
    scores["churn_band"] = churn_bands(scores["churn_risk"], config=config)
    timings["churn"] = time.perf_counter() - start
    start = time.perf_counter()
    fingerprint = hashlib.sha256(
        f"{as_of.isoformat()}|{config.fingerprint()}|{model.version}".encode()
    ).hexdigest()[:16]
    scores["input_hash"] = input_hashes(
        customers, orders, contacts, fingerprint=fingerprint
    )
    scored = len(scores)
    if previous_hashes is not None:
        old = previous_hashes.reindex(scores.index)
        scores = scores[old.ne(scores["input_hash"]).to_numpy()]
        features = features[features.index.isin(scores.index)]
    scores["explanation"] = _explanations(scores, features, model, history)
    timings["hash_explain"] = time.perf_counter() - start
    scores["as_of"] = as_of
    return scores, params, scored


def _formatted(values: np.ndarray, *, decimals: int, high: float) -> np.ndarray:
    """Numbers as short text via a lookup table (much faster than astype(str))."""
    scale = 10**decimals
    table = np.array(
        [f"{i / scale:.{decimals}f}" for i in range(int(high * scale) + 1)],
        dtype=object,
    )
    index = np.rint(np.clip(np.nan_to_num(values), 0, high) * scale).astype(np.int64)
    return table[index]


def _explanations(
    scores: pd.DataFrame,
    features: pd.DataFrame,
    model: ChurnModel,
    history: pd.DataFrame,
    k: int = 3,
) -> pd.Series:
    """Each customer's explanation as a JSON string, built vectorised.

    Keys: top_churn_features (up to ``k`` ``[label, contribution]`` pairs that
    raise the risk), complaints, unresolved, and p_alive /
    expected_purchases_12m when the CLV model ran.
    """
    top = pd.Series("", index=scores.index, dtype=object)
    if not features.empty:
        contrib = model.contributions(features).to_numpy()
        order = np.argsort(-contrib, axis=1)[:, :k]
        values = np.take_along_axis(contrib, order, axis=1)
        labels = np.array(
            [json.dumps(FEATURE_LABELS[name]) for name in FEATURES], dtype=object
        )
        joined = np.full(len(features), "", dtype=object)
        for j in range(order.shape[1]):
            text = _formatted(values[:, j], decimals=2, high=50)
            piece = "[" + labels[order[:, j]] + ", " + text + "]"
            joined = np.where(
                values[:, j] > 0,
                np.where(joined == "", piece, joined + ", " + piece),
                joined,
            )
        top.loc[features.index] = joined
    counts = history.reindex(scores.index).fillna(0).to_numpy(dtype="float64")
    columns = list(history.columns)
    alive = scores["p_alive"].to_numpy(dtype="float64")
    extra = np.where(
        np.isnan(alive),
        "",
        ', "p_alive": '
        + _formatted(alive, decimals=3, high=1)
        + ', "expected_purchases_12m": '
        + _formatted(scores["purchases_12m"].to_numpy("float64"), decimals=2, high=500),
    )
    text = (
        '{"top_churn_features": ['
        + top.to_numpy(dtype=object)
        + '], "complaints": '
        + _formatted(counts[:, columns.index("complaints")], decimals=0, high=10_000)
        + ', "unresolved": '
        + _formatted(counts[:, columns.index("unresolved")], decimals=0, high=10_000)
        + extra
        + "}"
    )
    return pd.Series(text, index=scores.index, dtype=object)


def _rows(frame: pd.DataFrame, computed_at: dt.datetime) -> list[dict[str, Any]]:
    """Turn score rows into plain dicts for the bulk upsert."""

    def ints(column: str) -> list[int | None]:
        return [None if pd.isna(v) else int(v) for v in frame[column].tolist()]

    def money(column: str) -> list[float | None]:
        return [None if pd.isna(v) else round(float(v), 2) for v in frame[column]]

    risk = [None if pd.isna(v) else float(v) for v in frame["churn_risk"].tolist()]
    columns = {
        "customer_id": frame.index.tolist(),
        "as_of": [frame["as_of"].iloc[0].to_pydatetime()] * len(frame)
        if len(frame)
        else [],
        "recency_days": ints("recency_days"),
        "frequency": ints("frequency"),
        "monetary": money("monetary"),
        "r_score": ints("r_score"),
        "f_score": ints("f_score"),
        "m_score": ints("m_score"),
        "rfm_segment": frame["rfm_segment"].tolist(),
        "actual_value": money("actual_value"),
        "clv": money("clv"),
        "clv_heuristic": money("clv_heuristic"),
        "value_tier": frame["value_tier"].tolist(),
        "churn_risk": risk,
        "churn_band": frame["churn_band"].tolist(),
        "explanation": [json.loads(item) for item in frame["explanation"]],
        "input_hash": frame["input_hash"].tolist(),
        "computed_at": [computed_at] * len(frame),
    }
    names = list(columns)
    return [
        dict(zip(names, values, strict=True))
        for values in zip(*columns.values(), strict=True)
    ]


def upsert_scores(
    session: Session,
    frame: pd.DataFrame,
    *,
    computed_at: dt.datetime,
    chunk: int,
    progress: ProgressFn | None = None,
) -> int:
    """Insert or update the ``customer_scores`` rows of ``frame``; return the count.

    PostgreSQL: COPY into a temporary table in chunks, then one
    ``INSERT ... SELECT ... ON CONFLICT (customer_id) DO UPDATE``. SQLite: chunked
    executemany of ``INSERT ... ON CONFLICT DO UPDATE``.
    """
    if frame.empty:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        return _upsert_postgresql(session, frame, computed_at, chunk, progress)
    table = CustomerScore.__table__
    stmt = sqlite.insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.customer_id],
        set_={name: stmt.excluded[name] for name in SCORE_COLUMNS},
    )
    rows = _rows(frame, computed_at)
    for start in range(0, len(rows), chunk):
        session.execute(stmt, rows[start : start + chunk])
        if progress:
            progress("write", min(start + chunk, len(rows)), len(rows))
    return len(rows)


INT_COLUMNS = ("recency_days", "frequency", "r_score", "f_score", "m_score")
MISSING_INT = -1


def _upsert_postgresql(
    session: Session,
    frame: pd.DataFrame,
    computed_at: dt.datetime,
    chunk: int,
    progress: ProgressFn | None,
) -> int:
    table = CustomerScore.__table__
    csv_frame = _csv_frame(frame)
    names = list(csv_frame.columns)
    staging = Table(
        f"customer_scores_load_{uuid.uuid4().hex[:8]}",
        MetaData(),
        *(
            Column(name, Integer if name in INT_COLUMNS else table.c[name].type)
            for name in names
        ),
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DROP",
    )
    connection = session.connection()
    staging.create(connection)
    cursor = connection.connection.cursor()
    try:
        chunk = max(chunk, 50_000)
        for start in range(0, len(csv_frame), chunk):
            buffer = io.StringIO()
            csv_frame.iloc[start : start + chunk].to_csv(
                buffer, index=False, header=False, na_rep="\\N"
            )
            buffer.seek(0)
            cursor.copy_expert(
                f"COPY {staging.name} ({', '.join(names)}) FROM STDIN "
                "WITH (FORMAT csv, NULL '\\N')",
                buffer,
            )
            if progress:
                progress("write", min(start + chunk, len(csv_frame)), len(csv_frame))
    finally:
        cursor.close()
    as_of = frame["as_of"].iloc[0].to_pydatetime()
    columns = {
        name: (
            func.nullif(staging.c[name], MISSING_INT)
            if name in INT_COLUMNS
            else staging.c[name]
        )
        for name in names
    }
    columns["as_of"] = literal(as_of, DateTime)
    columns["computed_at"] = literal(computed_at, DateTime)
    stmt = postgresql.insert(table).from_select(
        list(columns), select(*columns.values())
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.customer_id],
        set_={name: stmt.excluded[name] for name in SCORE_COLUMNS},
    )
    session.execute(stmt)
    staging.drop(connection)
    return len(csv_frame)


def _csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-customer columns typed for a fast COPY.

    Money is rounded to cents, missing whole numbers become ``MISSING_INT`` (turned
    back into NULL by the INSERT ... SELECT), JSON is already text; the constant
    ``as_of`` and ``computed_at`` are added in SQL.
    """
    out = pd.DataFrame(index=frame.index)
    out["customer_id"] = frame.index
    for column in INT_COLUMNS:
        out[column] = frame[column].astype("Int64").fillna(MISSING_INT).astype("int64")
    for column in ("monetary", "actual_value", "clv", "clv_heuristic"):
        out[column] = frame[column].astype("float64").round(2)
    for column in ("rfm_segment", "value_tier", "churn_band", "input_hash"):
        out[column] = frame[column]
    out["churn_risk"] = frame["churn_risk"].astype("float64").round(6)
    out["explanation"] = frame["explanation"]
    return out


def ensure_model(
    session: Session,
    *,
    as_of: dt.datetime,
    config: AnalyticsConfig,
    path: Path,
) -> tuple[ChurnModel, bool]:
    """Load the saved churn model, or train and save one when absent."""
    model = load_model(path)
    if model is not None:
        return model, False
    logger.info("no churn model at %s; training one as of %s", path, as_of)
    model = train_churn_model(
        session, as_of=as_of, horizon_days=config.churn_horizon_days
    )
    save_model(model, path)
    return model, True


def refresh_scores(
    session: Session,
    *,
    as_of: dt.datetime | None = None,
    config: AnalyticsConfig | None = None,
    model_file: str | Path | None = None,
    full: bool = False,
    progress: ProgressFn | None = None,
) -> RefreshReport:
    """Recompute all scores and write the rows whose inputs changed.

    Args:
        session: the caller owns the transaction.
        as_of: reference time (default: the end of the current UTC day).
        config: settings (default: :func:`load_config`).
        model_file: the churn model (default ``$CRM_CHURN_MODEL`` or
            ``var/models/churn.joblib``); trained and saved when missing.
        full: write every row even when its input hash is unchanged.
        progress: called as ``progress(stage, done, total)``.

    Raises:
        InvalidInput: a timezone-aware ``as_of``, bad settings, or too little
            history to train a missing churn model.
    """
    if as_of is not None and as_of.tzinfo is not None:
        raise InvalidInput("as_of must be naive UTC")
    as_of = as_of or default_as_of()
    config = config or load_config()
    report = RefreshReport(as_of=as_of)
    started = time.perf_counter()
    step = time.perf_counter()
    model, report.trained_model = ensure_model(
        session, as_of=as_of, config=config, path=model_path(model_file)
    )
    report.model_version = model.version
    report.seconds["model"] = time.perf_counter() - step
    previous = None
    if not full:
        stored = read_frame(
            session, select(CustomerScore.customer_id, CustomerScore.input_hash)
        )
        previous = stored.set_index("customer_id")["input_hash"]
    scores, report.clv_params, report.customers = compute_scores(
        session,
        as_of=as_of,
        config=config,
        model=model,
        timings=report.seconds,
        previous_hashes=previous,
    )
    report.unchanged = report.customers - len(scores)
    step = time.perf_counter()
    report.written = upsert_scores(
        session,
        scores,
        computed_at=utcnow(),
        chunk=config.write_chunk,
        progress=progress,
    )
    report.seconds["write"] = time.perf_counter() - step
    report.seconds["total"] = time.perf_counter() - started
    return report
