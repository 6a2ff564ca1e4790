"""Pieces every ``crm`` sub-command module shares: consoles and the store option."""

from __future__ import annotations

import typer
from rich.console import Console

out = Console()
err = Console(stderr=True)

DB_OPTION = typer.Option(
    None,
    "--database-url",
    envvar="CRM_DATABASE_URL",
    help="SQLAlchemy URL (default: SQLite file var/crm.db).",
)
