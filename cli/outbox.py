"""``crm outbox``: the messages (codes, notices) the store sent or would send."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from cli.common import DB_OPTION, database_url, echo_sql, err, out
from crm_store.db import session_factory

outbox_app = typer.Typer(
    help="Outbound codes and notices (what would be sent).", no_args_is_help=True
)


@outbox_app.command("list")
def outbox_list(
    status: Optional[str] = typer.Option(
        None, "--status", help="pending, sent or failed (default: all)."
    ),
    limit: int = typer.Option(20, "--limit", min=1, max=1000, help="Rows to show."),
    show_body: bool = typer.Option(
        False, "--show-body", help="Print each body too (it holds codes)."
    ),
    db_url: Optional[str] = DB_OPTION,
) -> None:
    """List outbox messages, newest first; recipients masked."""
    from crm_store.errors import InvalidInput
    from crm_store.services.normalize import mask
    from crm_store.services.notifier import list_outbox

    factory = session_factory(database_url(db_url), echo=echo_sql())
    with factory() as session:
        try:
            rows = list_outbox(session, status=status, limit=limit)
        except InvalidInput as exc:
            err.print(f"error: {exc}", markup=False, highlight=False)
            raise typer.Exit(2) from None
    table = Table(title="outbox")
    for column in ("id", "created", "status", "channel", "to", "purpose", "subject"):
        table.add_column(column)
    for row in rows:
        kind = "email" if row.channel == "email" else "phone"
        table.add_row(
            str(row.id),
            f"{row.created_at:%Y-%m-%d %H:%M:%S}",
            row.status,
            row.channel,
            mask(kind, row.recipient),
            row.purpose,
            row.subject or "",
        )
    out.print(table)
    if show_body:
        for row in rows:
            out.print(f"--- {row.id}", highlight=False)
            out.print(row.body, markup=False, highlight=False)
