"""``crm analytics``: refresh scores, train and evaluate the churn model."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn
from sqlalchemy.orm import sessionmaker

from cli.common import DB_OPTION, database_url, echo_sql, err, out, settings
from crm_store.db import engine_for, session_factory

analytics_app = typer.Typer(
    help="RFM, CLV, value tiers and churn risk.", no_args_is_help=True
)
AS_OF_OPTION = typer.Option(
    None,
    "--as-of",
    help="Reference time, e.g. 2026-11-01T12:00:00 (default: end of today, UTC).",
)
MODEL_OPTION = typer.Option(
    None,
    "--model",
    help="Churn model file (default: CRM_CHURN_MODEL, else var/models/churn.joblib).",
)
CONFIG_OPTION = typer.Option(
    None,
    "--config",
    help="Analytics settings YAML (default: CRM_ANALYTICS_CONFIG, else "
    "config/analytics.yml).",
)


def _as_of(value: Optional[str]) -> Optional[dt.datetime]:
    if value is None:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        err.print(f"error: --as-of {value!r} is not a date-time like 2026-11-01T12:00")
        raise typer.Exit(2) from None


def _config(path: Optional[Path]):  # noqa: ANN202
    from crm_store.analytics.config import load_config
    from crm_store.errors import InvalidInput

    try:
        return load_config(path or settings().analytics_config)
    except InvalidInput as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(2) from None


def _model(path: Optional[Path]) -> Path:
    from crm_store.analytics.config import model_path

    return model_path(path or settings().churn_model)


def _migrated(option: Optional[str]) -> sessionmaker:
    """Migrate the store (``--database-url`` or the setting); return its sessions."""
    from crm_store.migrate import upgrade

    url = database_url(option)
    upgrade(engine_for(url, echo=echo_sql()))
    return session_factory(url, echo=echo_sql())


@analytics_app.command("refresh")
def refresh(
    as_of: Optional[str] = AS_OF_OPTION,
    full: bool = typer.Option(
        False, "--full", help="Rewrite every row, even when its inputs are unchanged."
    ),
    model: Optional[Path] = MODEL_OPTION,
    config: Optional[Path] = CONFIG_OPTION,
    db_url: Optional[str] = DB_OPTION,
) -> None:
    """Recompute every customer's scores; write only the rows that changed."""
    from crm_store.analytics.refresh import refresh_scores
    from crm_store.errors import InvalidInput

    when, knobs = _as_of(as_of), _config(config)
    factory = _migrated(db_url)
    with Progress(
        TextColumn("{task.description:<8}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        console=err,
        transient=not err.is_terminal,
    ) as bar:
        task = bar.add_task("score", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        try:
            with factory.begin() as session:
                report = refresh_scores(
                    session,
                    as_of=when,
                    config=knobs,
                    model_file=_model(model),
                    full=full,
                    progress=progress,
                )
        except InvalidInput as exc:
            bar.stop()
            err.print(f"error: {exc}")
            raise typer.Exit(1) from None
    if report.trained_model:
        out.print(f"trained churn model {report.model_version}", highlight=False)
    out.print(
        f"scored {report.customers} customers as of {report.as_of:%Y-%m-%d %H:%M}: "
        f"{report.written} written, {report.unchanged} unchanged "
        f"in {report.seconds['total']:.1f} s",
        highlight=False,
    )


@analytics_app.command("train")
def train(
    as_of: Optional[str] = AS_OF_OPTION,
    model: Optional[Path] = MODEL_OPTION,
    config: Optional[Path] = CONFIG_OPTION,
    db_url: Optional[str] = DB_OPTION,
) -> None:
    """Train the churn model on all fully observed history and save it."""
    from crm_store.analytics.churn import save_model, train_churn_model
    from crm_store.analytics.refresh import default_as_of
    from crm_store.errors import InvalidInput

    when, knobs = _as_of(as_of) or default_as_of(), _config(config)
    factory = _migrated(db_url)
    try:
        with factory.begin() as session:
            fitted = train_churn_model(
                session, as_of=when, horizon_days=knobs.churn_horizon_days
            )
    except InvalidInput as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(1) from None
    path = _model(model)
    save_model(fitted, path)
    out.print(
        f"churn model {fitted.version} ({fitted.rows} rows) saved to {path}",
        highlight=False,
    )


@analytics_app.command("evaluate")
def evaluate(
    as_of: Optional[str] = typer.Option(
        None,
        "--as-of",
        help="End of the evaluation period (default: the newest order's time).",
    ),
    output: Path = typer.Option(
        Path("docs/analytics"), "--output", help="Directory for the report and PNGs."
    ),
    save: bool = typer.Option(
        False, "--save-model", help="Also train on all history and save the model."
    ),
    model: Optional[Path] = MODEL_OPTION,
    config: Optional[Path] = CONFIG_OPTION,
    db_url: Optional[str] = DB_OPTION,
) -> None:
    """Evaluate churn and CLV on a time split; write Markdown + PNG charts."""
    import pandas as pd

    from crm_store.analytics.churn import save_model, train_churn_model
    from crm_store.analytics.evaluate import run_evaluation, write_report
    from crm_store.analytics.features import (
        load_customers,
        load_order_summary,
        newest_order_time,
    )
    from crm_store.analytics.rfm import compute_rfm
    from crm_store.errors import InvalidInput

    knobs = _config(config)
    factory = _migrated(db_url)
    with factory.begin() as session:
        when = _as_of(as_of) or newest_order_time(session)
        if when is None:
            err.print("error: the store has no orders to evaluate")
            raise typer.Exit(1)
        try:
            with err.status("training and evaluating on the time split"):
                evaluation, _ = run_evaluation(session, as_of=when, config=knobs)
                rfm = compute_rfm(
                    load_customers(session).index,
                    load_order_summary(session, until=when),
                    as_of=when,
                )
                fitted = (
                    train_churn_model(
                        session, as_of=when, horizon_days=knobs.churn_horizon_days
                    )
                    if save
                    else None
                )
        except InvalidInput as exc:
            err.print(f"error: {exc}")
            raise typer.Exit(1) from None
    segments = rfm["rfm_segment"].value_counts()
    path = write_report(evaluation, output, segments=pd.Series(segments))
    if fitted is not None:
        model_file = _model(model)
        save_model(fitted, model_file)
        out.print(
            f"saved churn model {fitted.version} to {model_file}", highlight=False
        )
    out.print(f"report: {path}", highlight=False)
    out.print(
        f"churn AUC: {evaluation.auc:.2f} (recency-only baseline "
        f"{evaluation.baseline_auc:.2f})",
        highlight=False,
    )
    clv = evaluation.clv
    out.print(
        f"CLV MAE: {clv['model_mae']:.2f} EUR (heuristic {clv['heuristic_mae']:.2f})",
        highlight=False,
    )
