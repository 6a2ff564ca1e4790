"""``crm report export``: the per-conversation report of a period as CSV or Parquet.

The rows come from ``reports.conversation_rows`` (a server-side cursor on
PostgreSQL, 5,000 rows a fetch) and go straight to the file, so memory stays
flat for any period. The file is written as ``<output>.partial`` and renamed at
the end; an error or Ctrl-C removes it. A successful export is audited
(``report_exported``, actor ``cli:<login name>``). Bad input (dates, format,
Parquet to stdout, a missing directory) exits 2; a failed export exits 1,
an interrupted one 130.
"""

from __future__ import annotations

import datetime as dt
import getpass
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from cli.common import database_url, echo_sql, err, out

report_app = typer.Typer(help="Manager reports.", no_args_is_help=True)
STDOUT = "-"
ACTOR_PREFIX = "cli:"


class _RowsPerSecond(ProgressColumn):
    """The export rate in rows per second."""

    def render(self, task: Task) -> Text:
        """``12,345 rows/s`` (a dash until the rate is known)."""
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "- rows/s")


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"error: {message}", markup=False, highlight=False)
    return typer.Exit(code)


def login_actor() -> str:
    """``cli:<login name>`` of the user running the command (for the audit log)."""
    try:
        name = getpass.getuser() or "unknown"
    except (KeyError, OSError):  # no login name in the environment or passwd
        name = "unknown"
    return f"{ACTOR_PREFIX}{name}"[:64]


def default_output(start: dt.datetime, end: dt.datetime, fmt: str) -> Path:
    """``conversations_<first day>_<last day>.<ext>`` in the current directory."""
    last = end - dt.timedelta(microseconds=1)
    return Path(f"conversations_{start:%Y-%m-%d}_{last:%Y-%m-%d}.{fmt}")


def _target(output: Optional[str], fmt: Optional[str], start, end):  # noqa: ANN001, ANN202
    """``(path or None for stdout, format)``; exit 2 on a bad combination."""
    from crm_store.errors import InvalidInput
    from crm_store.services.report_format import format_for

    try:
        if output == STDOUT:
            chosen = format_for("out.csv", fmt)
            if chosen != "csv":
                raise _fail("Parquet cannot be written to stdout: give --output FILE")
            return None, chosen
        if output is None:
            chosen = format_for("out.csv", fmt)
            return default_output(start, end, chosen), chosen
        path = Path(output)
        chosen = format_for(path, fmt)
    except InvalidInput as error:
        raise _fail(str(error)) from None
    if path.is_dir():
        raise _fail(f"{path} is a directory: give a file name")
    if not path.parent.is_dir():
        raise _fail(f"directory {path.parent} does not exist")
    return path, chosen


@contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[int], None]]:
    """A callback ``update(rows_done)`` drawing a bar on stderr when enabled."""
    with Progress(
        TextColumn("export"),
        BarColumn(),
        MofNCompleteColumn(),
        _RowsPerSecond(),
        TimeRemainingColumn(),
        console=err,
        disable=not enabled,
        transient=True,
    ) as bar:
        task = bar.add_task("export", total=total)
        yield lambda done: bar.update(task, completed=done)


@report_app.command("export")
def export(
    start: Optional[str] = typer.Option(
        None,
        "--from",
        help="First day (YYYY-MM-DD) or ISO datetime (default: 30 days before --to).",
    ),
    end: Optional[str] = typer.Option(
        None,
        "--to",
        help="Last day, inclusive (YYYY-MM-DD), or ISO datetime (default: now).",
    ),
    fmt: Optional[str] = typer.Option(
        None,
        "--format",
        "-f",
        help="csv or parquet (default: from the output's suffix, else csv).",
    ),
    output: Optional[str] = typer.Option(
        None,
        "--output",
        "-o",
        help="File to write, '-' for CSV on stdout "
        "(default: conversations_<from>_<to>.<ext> here).",
    ),
    recontact_hours: int = typer.Option(
        48, "--recontact-hours", help="Re-contact window for containment, in hours."
    ),
    progress: Optional[bool] = typer.Option(
        None,
        "--progress/--no-progress",
        show_default=False,
        help="Progress bar on stderr (default: when stderr is a terminal).",
    ),
    db_url: Optional[str] = typer.Option(
        None,
        "--database-url",
        "--db-url",
        help="SQLAlchemy URL (default: CRM_DATABASE_URL, else SQLite file var/crm.db).",
    ),
) -> None:
    """Export one row per conversation of a period (CSV or Parquet), streamed."""
    from crm_store.errors import InvalidInput
    from crm_store.services.reports import parse_period

    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    try:
        period = parse_period(start, end, now=now)
    except InvalidInput as error:
        raise _fail(str(error)) from None
    path, chosen = _target(output, fmt, *period)
    enabled = err.is_terminal if progress is None else progress
    url = database_url(db_url)
    began = time.perf_counter()
    try:
        rows = _run_export(
            url, period, now, recontact_hours, path, chosen, show_progress=enabled
        )
    except InvalidInput as error:
        raise _fail(str(error)) from None
    except KeyboardInterrupt:
        raise _fail("interrupted: nothing was written", 130) from None
    except Exception as error:  # noqa: BLE001 (reported, the partial file is gone)
        first_line = (str(error).splitlines() or [""])[0][:300]
        raise _fail(
            f"export failed ({type(error).__name__}): {first_line}", 1
        ) from None
    seconds = time.perf_counter() - began
    if path is None:
        err.print(f"wrote {rows:,} rows to stdout in {seconds:.1f} s", highlight=False)
    else:
        out.print(
            f"wrote {rows:,} rows to {path} "
            f"({decimal(path.stat().st_size)}) in {seconds:.1f} s",
            highlight=False,
            markup=False,
        )


def _run_export(
    url: str,
    period: tuple[dt.datetime, dt.datetime],
    now: dt.datetime,
    recontact_hours: int,
    path: Optional[Path],
    fmt: str,
    *,
    show_progress: bool,
) -> int:
    """Stream the rows to ``path`` (or stdout), audit, commit; return the count."""
    from crm_store.db import session_factory
    from crm_store.services.audit import record_audit
    from crm_store.services.report_format import (
        csv_header,
        write_csv,
        write_report_file,
    )
    from crm_store.services.reports import conversation_rows, count_conversations

    start, end = period
    with session_factory(url, echo=echo_sql())() as session:
        rows = conversation_rows(
            session,
            start=start,
            end=end,
            now=now,
            recontact_hours=recontact_hours,
            batch_size=5000,
        )

        def audit(count: int) -> None:
            record_audit(
                session,
                actor=login_actor(),
                action="report_exported",
                entity_type="report",
                entity_id=f"conversations.{fmt}",
                details={
                    "from": start.isoformat() + "Z",
                    "to": end.isoformat() + "Z",
                    "format": fmt,
                    "rows": count,
                    "recontact_hours": recontact_hours,
                },
            )
            session.commit()

        total = count_conversations(session, start=start, end=end)
        with _progress_bar(show_progress, total) as update:
            if path is None:
                count = write_csv(rows, sys.stdout, csv_header(), progress=update)
                sys.stdout.flush()
                audit(count)
                return count
            return write_report_file(
                rows, path, fmt, progress=update, before_rename=audit
            )
