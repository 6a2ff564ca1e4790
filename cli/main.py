"""The ``crm`` command line: database, seeding, customers, benchmarks."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any, Optional

import click
import typer
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table
from typer.core import TyperGroup

from cli.analytics import analytics_app
from cli.common import DB_OPTION, database_url, echo_sql, err, out, settings
from cli.outbox import outbox_app
from cli.report import report_app
from cli.telegram import telegram_app
from crm_settings import SettingsError
from crm_store.db import engine_for, safe_url, session_factory


class _SettingsFirst(TyperGroup):
    """Reads and validates every setting before any command runs (exit 2 if bad).

    ``--help`` needs no settings, so it works whatever the environment holds.
    """

    def invoke(self, ctx: click.Context) -> Any:
        """Check the settings, then run the sub-command."""
        if "--help" not in (*ctx.protected_args, *ctx.args):
            settings()
        return super().invoke(ctx)


app = typer.Typer(
    cls=_SettingsFirst,
    help="Northwind CRM: customer store, self-service bot and console.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
customer_app = typer.Typer(help="Look up customers.", no_args_is_help=True)
bench_app = typer.Typer(
    help="Benchmarks (print a table, write JSON).", no_args_is_help=True
)


@bench_app.callback()
def _bench_from_checkout() -> None:
    """Benchmarks run from the repository checkout (``bench/`` is not installed)."""
    from crm_settings import PROJECT_ROOT

    root = str(PROJECT_ROOT)
    if root not in sys.path:
        sys.path.append(root)


app.add_typer(db_app, name="db")
app.add_typer(customer_app, name="customer")
app.add_typer(bench_app, name="bench")
app.add_typer(analytics_app, name="analytics")
app.add_typer(outbox_app, name="outbox")
app.add_typer(telegram_app, name="telegram")
app.add_typer(report_app, name="report")


@db_app.command("upgrade")
def db_upgrade(db_url: Optional[str] = DB_OPTION) -> None:
    """Create or migrate the store's schema to the latest revision."""
    from crm_store.migrate import upgrade

    url = database_url(db_url)
    upgrade(engine_for(url, echo=echo_sql()))
    out.print(f"database at {safe_url(url)} is up to date")


@app.command()
def seed(
    directory: Path = typer.Argument(..., help="Fixture directory, e.g. data/demo."),
    as_of: Optional[str] = typer.Option(
        None, help="The fixture's as-of time (default 2026-11-01T12:00:00)."
    ),
    no_shift: bool = typer.Option(
        False, "--no-shift", help="Keep the fixture's exact timestamps."
    ),
    db_url: Optional[str] = DB_OPTION,
) -> None:
    """Validate and load a fixture directory (idempotent; all or nothing)."""
    from crm_store.migrate import upgrade
    from crm_store.seeding import DEFAULT_AS_OF, SeedValidationError, seed_directory

    try:
        as_of_time = dt.datetime.fromisoformat(as_of) if as_of else DEFAULT_AS_OF
    except ValueError:
        err.print(
            f"error: --as-of {as_of!r} is not a date-time like 2026-11-01T12:00:00"
        )
        raise typer.Exit(2) from None
    url = database_url(db_url)
    upgrade(engine_for(url, echo=echo_sql()))
    factory = session_factory(url, echo=echo_sql())
    with Progress(
        TextColumn("{task.description:<20}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        console=err,
        transient=not err.is_terminal,
    ) as bar:
        tasks: dict[str, int] = {}

        def progress(table: str, done: int, total: int) -> None:
            if table not in tasks:
                tasks[table] = bar.add_task(table, total=total)
            bar.update(tasks[table], completed=done)

        try:
            with factory.begin() as session:
                report = seed_directory(
                    session,
                    directory=directory,
                    as_of=as_of_time,
                    shift=not no_shift,
                    progress=progress,
                )
        except SeedValidationError as exc:
            bar.stop()
            for line in exc.errors[:50]:
                err.print(line, markup=False, highlight=False)
            if len(exc.errors) > 50:
                err.print(f"... and {len(exc.errors) - 50} more")
            err.print(f"error: {exc}")
            raise typer.Exit(1) from None
    table = Table(title=f"seeded {report.dataset} (time shift {report.shift})")
    for column in ("table", "inserted", "already there"):
        table.add_column(column)
    for name, count in report.inserted.items():
        table.add_row(name, str(count), str(report.skipped[name]))
    out.print(table)


@customer_app.command("show")
def customer_show(customer_id: str, db_url: Optional[str] = DB_OPTION) -> None:
    """Show a customer's profile, identities and recent orders."""
    from crm_store.errors import NotFound
    from crm_store.services.customers import customer_profile
    from crm_store.services.orders import orders_for_customer

    factory = session_factory(database_url(db_url), echo=echo_sql())
    with factory.begin() as session:
        try:
            profile = customer_profile(session, customer_id=customer_id)
        except NotFound:
            err.print(f"error: no customer {customer_id}")
            raise typer.Exit(1) from None
        orders = orders_for_customer(session, customer_id=customer_id, limit=5)
        out.print(
            f"[bold]{profile.name}[/] ({profile.id})"
            f"{' prospect' if profile.is_prospect else ''}",
            highlight=False,
        )
        out.print(
            f"postcode {profile.postcode or '-'}, preferred channel "
            f"{profile.preferred_channel or '-'}, {profile.order_count} orders",
            highlight=False,
        )
        for identity in profile.identities:
            mark = "verified" if identity.verified else "unverified"
            out.print(
                f"  {identity.kind:<9} {identity.value} ({mark})", highlight=False
            )
        table = Table(title="recent orders")
        for column in ("order", "placed", "status", "total", "carrier", "tracking"):
            table.add_column(column)
        for order in orders:
            table.add_row(
                order.id,
                f"{order.placed_at:%Y-%m-%d}",
                order.status,
                f"{order.total} {order.currency}",
                order.carrier or "",
                order.tracking_number or "",
            )
        out.print(table)
        _print_scores(session, customer_id)


def _print_scores(session, customer_id: str) -> None:  # noqa: ANN001
    """Print the customer's analytics scores when they have been computed."""
    from crm_store.analytics.service import customer_scores

    scores = customer_scores(session, customer_id=customer_id)
    if scores is not None:
        out.print(str(scores), highlight=False)


@customer_app.command("timeline")
def customer_timeline(
    customer_id: str,
    limit: int = typer.Option(20, min=1, max=200, help="Rows per page."),
    cursor: Optional[str] = typer.Option(
        None, help="next_cursor of the previous page."
    ),
    db_url: Optional[str] = DB_OPTION,
) -> None:
    """Show a customer's contact history on every channel, newest first."""
    from crm_store.errors import InvalidInput, NotFound
    from crm_store.services.customers import get_customer
    from crm_store.services.interactions import timeline

    factory = session_factory(database_url(db_url), echo=echo_sql())
    with factory.begin() as session:
        try:
            get_customer(session, customer_id=customer_id)
            page = timeline(
                session, customer_id=customer_id, limit=limit, cursor=cursor
            )
        except (NotFound, InvalidInput) as exc:
            err.print(f"error: {exc}")
            raise typer.Exit(1) from None
        table = Table(title=f"timeline of {customer_id}")
        for column in ("when", "channel", "dir", "author", "intent", "text"):
            table.add_column(column)
        for row in page.items:
            table.add_row(
                f"{row.occurred_at:%Y-%m-%d %H:%M}",
                row.channel,
                row.direction,
                row.author,
                row.intent or "",
                (row.text or "")[:80],
            )
        out.print(table)
        if page.next_cursor:
            out.print(f"more: --cursor {page.next_cursor}", highlight=False)


@bench_app.command("store")
def bench_store(
    customers: int = typer.Option(100_000, min=1, help="Customers to generate."),
    interactions: int = typer.Option(
        2_000_000, min=1, help="Interactions to generate."
    ),
    samples: int = typer.Option(2000, min=10, help="Timed appends / timeline reads."),
    backend: list[str] = typer.Option(["sqlite", "postgresql"], help="Backends."),
    pg_url: Optional[str] = typer.Option(
        None,
        help="Server URL; a scratch database is created (default: CRM_BENCH_PG_URL).",
    ),
) -> None:
    """Store benchmark: bulk load rate, append and timeline p50/p99."""
    from bench.store import run_store_bench

    run_store_bench(
        customers=customers,
        interactions=interactions,
        samples=samples,
        backends=backend,
        pg_url=pg_url or settings().bench_pg_url,
        console=out,
    )


@bench_app.command("analytics")
def bench_analytics(
    customers: list[int] = typer.Option(
        [100_000], "--customers", help="Customer counts to generate (repeatable)."
    ),
    orders_per_customer: float = typer.Option(
        4.0, min=0.1, help="Mean orders per customer."
    ),
    pg_url: Optional[str] = typer.Option(
        None,
        help="Server URL; a scratch database is created and dropped "
        "(default: CRM_BENCH_PG_URL).",
    ),
) -> None:
    """Analytics benchmark: full and incremental refresh time (PostgreSQL)."""
    from bench.analytics import run_analytics_bench

    run_analytics_bench(
        sizes=customers,
        orders_per_customer=orders_per_customer,
        pg_url=pg_url or settings().bench_pg_url,
        console=out,
    )


@bench_app.command("latency")
def bench_latency(
    messages: int = typer.Option(500, min=5, help="Messages per run."),
    concurrency: list[int] = typer.Option([1, 10, 50], help="Concurrency levels."),
    rounds: int = typer.Option(
        1, min=1, help="Repeat the sweep; report the median of each figure."
    ),
) -> None:
    """Bot latency: bare `rasa run` vs the full stack, p50/p95/p99 and msgs/s."""
    from bench.latency import run_latency_bench

    run_latency_bench(
        messages=messages,
        concurrency=tuple(concurrency),
        rounds=rounds,
        console=out,
    )


@bench_app.command("handoff")
def bench_handoff(
    handoffs: int = typer.Option(200, min=1, help="Handoffs, one after another."),
) -> None:
    """Handoff: customer's request -> agent's queue page, agent reply -> customer."""
    from bench.handoff import run_handoff_bench

    run_handoff_bench(handoffs=handoffs, console=out)


@bench_app.command("channels")
def bench_channels(
    messages: int = typer.Option(200, min=1, help="Messages per channel and phase."),
    concurrency: int = typer.Option(8, min=1, help="Clients in the throughput phase."),
) -> None:
    """Channels: Telegram webhook and inbound mail against the REST webhook."""
    from bench.channels import run_channels_bench

    run_channels_bench(messages=messages, concurrency=concurrency, console=out)


@bench_app.command("voice")
def bench_voice(
    calls: int = typer.Option(20, min=1, help="Simultaneous calls."),
    rounds: int = typer.Option(5, min=1, help="Calls per caller, one after another."),
) -> None:
    """Voice: Twilio voice webhook turns at N simultaneous calls against REST."""
    from bench.voice import run_voice_bench

    run_voice_bench(calls=calls, rounds=rounds, console=out)


@bench_app.command("reports")
def bench_reports(
    conversations: int = typer.Option(
        1_000_000, min=100, help="Conversations to generate (over 365 days)."
    ),
    messages_per_conversation: int = typer.Option(
        10, min=1, max=100, help="Messages per conversation."
    ),
    runs: int = typer.Option(3, min=1, help="Runs of each measurement (median)."),
    database: str = typer.Option(
        "crm_bench_reports",
        help="Dataset database on the server (created, reused when the same size).",
    ),
    pg_url: Optional[str] = typer.Option(
        None, help="Server URL (an admin database; default: CRM_BENCH_PG_URL)."
    ),
    json_path: Optional[Path] = typer.Option(
        None, "--json", help="Results file (default bench/results/reports.json)."
    ),
) -> None:
    """Reports: KPIs, the KPI page and `crm report export` on a large dataset."""
    from bench.reports import run_reports_bench

    run_reports_bench(
        conversations=conversations,
        messages_per_conversation=messages_per_conversation,
        runs=runs,
        database=database,
        pg_url=pg_url or settings().bench_pg_url,
        json_path=json_path,
        console=out,
    )


@app.command()
def complaints(
    days: int = typer.Option(7, min=1, max=3660, help="Look back this many days."),
    db_url: Optional[str] = DB_OPTION,
) -> None:
    """Count the complaints the bot recorded, by problem."""
    from crm_store.services.complaints import complaint_counts

    factory = session_factory(database_url(db_url), echo=echo_sql())
    since = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(
        days=days
    )
    with factory() as session:
        counts = complaint_counts(session, since=since)
    table = Table(title=f"complaints since {since:%Y-%m-%d %H:%M} UTC")
    table.add_column("problem")
    table.add_column("complaints", justify="right")
    for problem, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(problem, str(count))
    table.add_row("[bold]total[/]", f"[bold]{sum(counts.values())}[/]")
    out.print(table)


@bench_app.command("complaints")
def bench_complaints(
    model: Optional[Path] = typer.Option(
        None,
        help="A trained model (models/*.tar.gz) to score its `complain` intent too.",
        exists=True,
        dir_okay=False,
    ),
) -> None:
    """Complaint detectors: precision/recall on the labelled sets in data/eval/."""
    from bench.complaints import run_complaints_bench

    run_complaints_bench(model, console=out)


@app.command()
def run(db_url: Optional[str] = DB_OPTION) -> None:
    """Start everything on the embedded default with demo data (Ctrl-C stops)."""
    from runtime.supervisor import run as run_all

    raise typer.Exit(run_all(database_url(db_url)))


@app.command()
def train(
    force: bool = typer.Option(False, "--force", help="Train even if up to date."),
) -> None:
    """Train the Rasa model if config, domain or training data changed."""
    from bot.training import TrainingError, ensure_model

    try:
        model = ensure_model(log=err.print, force=force)
    except TrainingError as error:
        err.print(f"error: {error}")
        raise typer.Exit(1) from None
    out.print(str(model), highlight=False)


@app.command()
def chat(
    url: Optional[str] = typer.Option(
        None,
        "--url",
        help="Rasa server (REST webhook; default: CRM_CHAT_URL, else "
        "http://127.0.0.1:RASA_PORT).",
    ),
    sender: Optional[str] = typer.Option(
        None, "--sender", help="Conversation id (default: a new random one)."
    ),
) -> None:
    """Talk to the running bot in the terminal (Ctrl-D or /quit ends)."""
    from cli.chat import run_chat

    raise typer.Exit(run_chat(url or settings().rasa_url, sender, console=out))


def main() -> None:
    """Entry point of the ``crm`` console script."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except SettingsError as error:  # read lazily by a library after start-up
        err.print(f"error: {error}", markup=False, highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
