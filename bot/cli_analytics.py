"""``crm analytics``: refresh scores, train and evaluate the churn model."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn

from bot.cli_common import DB_OPTION, err, out
from bot.store import default_url, engine_for, session_factory

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
    envvar="CRM_CHURN_MODEL",
    help="Churn model file (default var/models/churn.joblib).",
)
CONFIG_OPTION = typer.Option(
    None,
    "--config",
    envvar="CRM_ANALYTICS_CONFIG",
    help="Analytics settings YAML (default config/analytics.yml).",
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
    from crm_store.services.errors import InvalidInput

    try:
        return load_config(path)
    except InvalidInput as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(2) from None


def _migrated(url: Optional[str]) -> str:
    from crm_store.migrate import upgrade

    url = url or default_url()
    upgrade(engine_for(url))
    return url


@analytics_app.command("refresh")
def refresh(
    as_of: Optional[str] = AS_OF_OPTION,
    full: bool = typer.Option(
        False, "--full", help="Rewrite every row, even when its inputs are unchanged."
    ),
    model: Optional[Path] = MODEL_OPTION,
    config: Optional[Path] = CONFIG_OPTION,
    database_url: Optional[str] = DB_OPTION,
) -> None:
    """Recompute every customer's scores; write only the rows that changed."""
    from crm_store.analytics.refresh import refresh_scores
    from crm_store.services.errors import InvalidInput

    when, settings = _as_of(as_of), _config(config)
    url = _migrated(database_url)
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
            with session_factory(url).begin() as session:
                report = refresh_scores(
                    session,
                    as_of=when,
                    config=settings,
                    model_file=model,
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
    database_url: Optional[str] = DB_OPTION,
) -> None:
    """Train the churn model on all fully observed history and save it."""
    from crm_store.analytics.churn import save_model, train_churn_model
    from crm_store.analytics.config import model_path
    from crm_store.analytics.refresh import default_as_of
    from crm_store.services.errors import InvalidInput

    when, settings = _as_of(as_of) or default_as_of(), _config(config)
    url = _migrated(database_url)
    try:
        with session_factory(url).begin() as session:
            fitted = train_churn_model(
                session, as_of=when, horizon_days=settings.churn_horizon_days
            )
    except InvalidInput as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(1) from None
    path = model_path(model)
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
    database_url: Optional[str] = DB_OPTION,
) -> None:
    """Evaluate churn and CLV on a time split; write Markdown + PNG charts."""
    import pandas as pd
    from sqlalchemy import func, select

    from crm_store.analytics.churn import save_model, train_churn_model
    from crm_store.analytics.config import model_path
    from crm_store.analytics.evaluate import run_evaluation, write_report
    from crm_store.analytics.features import load_customers, load_order_summary
    from crm_store.analytics.rfm import compute_rfm
    from crm_store.models import Order
    from crm_store.services.errors import InvalidInput

    settings = _config(config)
    url = _migrated(database_url)
    with session_factory(url).begin() as session:
        when = (
            _as_of(as_of) or session.execute(select(func.max(Order.placed_at))).scalar()
        )
        if when is None:
            err.print("error: the store has no orders to evaluate")
            raise typer.Exit(1)
        try:
            with err.status("training and evaluating on the time split"):
                evaluation, _ = run_evaluation(session, as_of=when, config=settings)
                rfm = compute_rfm(
                    load_customers(session).index,
                    load_order_summary(session, until=when),
                    as_of=when,
                )
                fitted = (
                    train_churn_model(
                        session, as_of=when, horizon_days=settings.churn_horizon_days
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
        save_model(fitted, model_path(model))
        out.print(f"saved churn model {fitted.version} to {model_path(model)}")
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
