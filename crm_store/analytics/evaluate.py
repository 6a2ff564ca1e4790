"""Time-split evaluation of the churn model and CLV, written as Markdown + PNGs.

Split: with reference time ``as_of`` and horizon ``h`` (180 days), the test
cutoff is ``T = as_of - h``. The churn model is trained on cutoffs ``T - h``,
``T - 2h`` and ``T - 3h`` (their outcome windows end by ``T``, so nothing after
``T`` leaks) and tested on buyers before ``T`` with the outcome "no purchase in
[T, as_of)".
CLV models are calibrated on orders before ``T`` and predict spend in
``[T, T + h)``; the heuristic predicts that each customer spends what they spent
in the ``h`` days before ``T``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    brier_score_loss,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from sqlalchemy.orm import Session

from crm_store.analytics import clv as clv_model
from crm_store.analytics.churn import (
    FEATURE_LABELS,
    FEATURES,
    ChurnModel,
    labelled_frame,
    train_churn_model,
    training_cutoffs,
)
from crm_store.analytics.config import AnalyticsConfig
from crm_store.analytics.features import load_order_summary, load_purchases_between
from crm_store.errors import InvalidInput

WEEK = np.timedelta64(7, "D")


@dataclass
class Evaluation:
    """Every figure of the report."""

    as_of: dt.datetime
    cutoff: dt.datetime
    horizon_days: int
    train_cutoffs: list[dt.datetime]
    train_rows: int
    test_rows: int
    churn_rate: float
    auc: float
    baseline_auc: float
    threshold: float
    precision: float
    recall: float
    brier: float
    calibration: list[tuple[float, float]]
    coefficients: list[tuple[str, float]]
    clv: dict[str, float] = field(default_factory=dict)
    roc: dict[str, Any] = field(default_factory=dict, repr=False)
    clv_points: pd.DataFrame | None = field(default=None, repr=False)


def evaluate_churn(
    session: Session, *, as_of: dt.datetime, config: AnalyticsConfig
) -> tuple[Evaluation, ChurnModel]:
    """Train on past cutoffs, test at ``as_of - horizon`` (see the module doc)."""
    horizon = config.churn_horizon_days
    cutoff = as_of - dt.timedelta(days=horizon)
    cutoffs = training_cutoffs(cutoff, horizon_days=horizon)
    model = train_churn_model(
        session, as_of=cutoff, horizon_days=horizon, cutoffs=cutoffs
    )
    x, y = labelled_frame(session, cutoff=cutoff, horizon_days=horizon)
    if y.nunique() < 2:
        raise InvalidInput("the test period has only one outcome; cannot evaluate")
    p = model.predict(x).to_numpy()
    recency = np.expm1(x["log_recency"].to_numpy())
    predicted = p >= config.churn_threshold
    frac_pos, mean_pred = calibration_curve(y, p, n_bins=10, strategy="quantile")
    coef = model.pipeline.named_steps["model"].coef_[0]
    evaluation = Evaluation(
        as_of=as_of,
        cutoff=cutoff,
        horizon_days=horizon,
        train_cutoffs=cutoffs,
        train_rows=model.rows,
        test_rows=len(y),
        churn_rate=float(y.mean()),
        auc=float(roc_auc_score(y, p)),
        baseline_auc=float(roc_auc_score(y, recency)),
        threshold=config.churn_threshold,
        precision=float(precision_score(y, predicted, zero_division=0)),
        recall=float(recall_score(y, predicted, zero_division=0)),
        brier=float(brier_score_loss(y, p)),
        calibration=list(zip(mean_pred.tolist(), frac_pos.tolist(), strict=True)),
        coefficients=sorted(
            (
                (FEATURE_LABELS[f], float(c))
                for f, c in zip(FEATURES, coef, strict=True)
            ),
            key=lambda item: -abs(item[1]),
        ),
        roc={"model": roc_curve(y, p)[:2], "baseline": roc_curve(y, recency)[:2]},
    )
    return evaluation, model


def evaluate_clv(
    session: Session, *, cutoff: dt.datetime, config: AnalyticsConfig
) -> tuple[dict[str, float], pd.DataFrame]:
    """Calibrate before ``cutoff``; compare predicted and actual spend after it."""
    horizon = config.churn_horizon_days
    orders = load_order_summary(session, until=cutoff, recent_days=horizon)
    buyers = orders[orders["purchases"] > 0]
    if len(buyers) < 20:
        raise InvalidInput("fewer than 20 buyers before the cutoff; cannot evaluate")
    at = pd.Timestamp(cutoff)
    n = buyers["purchases"].to_numpy(dtype="float64")
    t_x = ((buyers["last_purchase"] - buyers["first_purchase"]) / WEEK).to_numpy()
    t = ((at - buyers["first_purchase"]) / WEEK).to_numpy()
    kept = buyers["kept"].to_numpy(dtype="float64")
    mean_value = (buyers["spend"] / buyers["kept"].clip(lower=1)).to_numpy()
    kept_share = float(kept.sum() / n.sum())
    bg = clv_model.fit_bgnbd(n - 1, t_x, t)
    gg = clv_model.fit_gamma_gamma(kept, mean_value)
    expected = clv_model.expected_purchases(bg, horizon / 7, n - 1, t_x, t)
    value = clv_model.expected_order_value(gg, kept, mean_value) * kept_share
    actual = load_purchases_between(
        session, start=cutoff, end=cutoff + dt.timedelta(days=horizon)
    ).reindex(buyers.index)
    points = pd.DataFrame(
        {
            "model": expected * value,
            "heuristic": buyers["spend_recent"].to_numpy(),
            "actual": actual["spend"].fillna(0).to_numpy(),
            "purchases_model": expected,
            "purchases_actual": actual["purchases"].fillna(0).to_numpy(),
        },
        index=buyers.index,
    )
    figures: dict[str, float] = {"customers": float(len(points))}
    for name in ("model", "heuristic"):
        error = points[name] - points["actual"]
        figures[f"{name}_mae"] = float(error.abs().mean())
        figures[f"{name}_rmse"] = float(np.sqrt((error**2).mean()))
        figures[f"{name}_total"] = float(points[name].sum())
        figures[f"{name}_total_error"] = float(
            points[name].sum() / points["actual"].sum() - 1
        )
    figures["actual_total"] = float(points["actual"].sum())
    figures["purchases_model_total"] = float(points["purchases_model"].sum())
    figures["purchases_actual_total"] = float(points["purchases_actual"].sum())
    figures.update({f"bgnbd_{k}": float(v) for k, v in vars(bg).items()})
    figures.update({f"gg_{k}": float(v) for k, v in vars(gg).items()})
    return figures, points


def run_evaluation(
    session: Session, *, as_of: dt.datetime, config: AnalyticsConfig
) -> tuple[Evaluation, ChurnModel]:
    """Evaluate churn and CLV on the time split ending at ``as_of``."""
    evaluation, model = evaluate_churn(session, as_of=as_of, config=config)
    evaluation.clv, evaluation.clv_points = evaluate_clv(
        session, cutoff=evaluation.cutoff, config=config
    )
    return evaluation, model


def write_report(
    evaluation: Evaluation, directory: Path, *, segments: pd.Series | None = None
) -> Path:
    """Write ``evaluation.md`` and PNG charts into ``directory``; return the .md."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    e = evaluation

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, label in (
        ("model", f"model (AUC {e.auc:.3f})"),
        ("baseline", f"recency only (AUC {e.baseline_auc:.3f})"),
    ):
        fpr, tpr = e.roc[name]
        ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], "k:", linewidth=0.8)
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title="Churn: ROC on the test cutoff",
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(directory / "churn_roc.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    pred, obs = zip(*e.calibration, strict=True)
    ax.plot(pred, obs, "o-", label="model")
    ax.plot([0, 1], [0, 1], "k:", linewidth=0.8, label="perfect")
    ax.set(
        xlabel="predicted churn probability",
        ylabel="observed churn rate",
        title="Churn: calibration (deciles)",
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(directory / "churn_calibration.png", dpi=100)
    plt.close(fig)

    points = e.clv_points
    if points is not None:
        deciles = pd.qcut(points["model"].rank(method="first"), 10, labels=False)
        by = points.groupby(deciles)[["model", "heuristic", "actual"]].mean()
        fig, ax = plt.subplots(figsize=(6, 4))
        width = 0.28
        xs = np.arange(len(by))
        for i, column in enumerate(("actual", "model", "heuristic")):
            ax.bar(xs + (i - 1) * width, by[column], width, label=column)
        ax.set(
            xlabel="decile of model prediction",
            ylabel="mean spend (EUR)",
            title=f"Spend in the {e.horizon_days} days after the cutoff",
        )
        ax.set_xticks(xs, [str(i + 1) for i in xs])
        ax.legend()
        fig.tight_layout()
        fig.savefig(directory / "clv_deciles.png", dpi=100)
        plt.close(fig)

    if segments is not None and len(segments):
        fig, ax = plt.subplots(figsize=(6, 4))
        segments.sort_values().plot.barh(ax=ax)
        ax.set(xlabel="customers", title=f"RFM segments as of {e.as_of:%Y-%m-%d}")
        fig.tight_layout()
        fig.savefig(directory / "rfm_segments.png", dpi=100)
        plt.close(fig)

    path = directory / "evaluation.md"
    path.write_text(_markdown(e, segments), encoding="utf-8")
    return path


def _markdown(e: Evaluation, segments: pd.Series | None) -> str:
    c = e.clv
    cut = ", ".join(f"{d:%Y-%m-%d}" for d in e.train_cutoffs)
    lines = [
        "# Analytics evaluation",
        "",
        "Generated by `crm analytics evaluate`; do not edit by hand.",
        "",
        "## Time split",
        "",
        f"- reference time (as of): {e.as_of:%Y-%m-%d %H:%M}",
        f"- test cutoff T: {e.cutoff:%Y-%m-%d %H:%M}; outcome window "
        f"T .. T + {e.horizon_days} days",
        f"- churn training cutoffs: {cut} (each with its own {e.horizon_days}-day "
        f"outcome window, all ending by T), {e.train_rows} labelled rows",
        f"- churn test: {e.test_rows} customers with a purchase before T, "
        f"churn rate {e.churn_rate:.1%}",
        "",
        "## Churn model",
        "",
        "| metric | model | recency-only baseline |",
        "|---|---|---|",
        f"| ROC AUC | **{e.auc:.3f}** | {e.baseline_auc:.3f} |",
        f"| precision at p >= {e.threshold:.2f} | {e.precision:.3f} | |",
        f"| recall at p >= {e.threshold:.2f} | {e.recall:.3f} | |",
        f"| Brier score | {e.brier:.3f} | |",
        "",
        "![ROC](churn_roc.png) ![calibration](churn_calibration.png)",
        "",
        "Calibration (mean predicted vs observed churn rate, by decile of prediction):",
        "",
        "| predicted | observed |",
        "|---|---|",
        *[f"| {p:.3f} | {o:.3f} |" for p, o in e.calibration],
        "",
        "Coefficients (standardised features, positive = more churn):",
        "",
        "| feature | coefficient |",
        "|---|---|",
        *[f"| {name} | {coef:+.3f} |" for name, coef in e.coefficients],
        "",
        f"## CLV: spend in the {e.horizon_days} days after T",
        "",
        f"{int(c.get('customers', 0))} customers with a purchase before T. "
        "Model = BG/NBD expected purchases x Gamma-Gamma expected order value "
        "(undiscounted, before margin); heuristic = each customer's spend in the "
        f"{e.horizon_days} days before T.",
        "",
        "| | BG/NBD + Gamma-Gamma | heuristic |",
        "|---|---|---|",
        f"| MAE per customer (EUR) | **{c['model_mae']:.2f}** | "
        f"{c['heuristic_mae']:.2f} |",
        f"| RMSE per customer (EUR) | {c['model_rmse']:.2f} | "
        f"{c['heuristic_rmse']:.2f} |",
        f"| total predicted (EUR) | {c['model_total']:,.0f} | "
        f"{c['heuristic_total']:,.0f} |",
        f"| error of the total | {c['model_total_error']:+.1%} | "
        f"{c['heuristic_total_error']:+.1%} |",
        "",
        f"Actual total: {c['actual_total']:,.0f} EUR; purchases predicted "
        f"{c['purchases_model_total']:,.0f} vs actual "
        f"{c['purchases_actual_total']:,.0f}.",
        f"Fitted BG/NBD (weeks): r={c['bgnbd_r']:.3f}, alpha={c['bgnbd_alpha']:.3f}, "
        f"a={c['bgnbd_a']:.3f}, b={c['bgnbd_b']:.3f}; Gamma-Gamma: "
        f"p={c['gg_p']:.3f}, q={c['gg_q']:.3f}, gamma={c['gg_gamma']:.3f}.",
        "",
        "![CLV by decile](clv_deciles.png)",
        "",
    ]
    if segments is not None and len(segments):
        lines += [
            f"## RFM segments as of {e.as_of:%Y-%m-%d}",
            "",
            "| segment | customers |",
            "|---|---|",
            *[f"| {name} | {count} |" for name, count in segments.items()],
            "",
            "![segments](rfm_segments.png)",
            "",
        ]
    return "\n".join(lines)
