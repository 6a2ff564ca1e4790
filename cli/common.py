"""Pieces every ``crm`` sub-command module shares: consoles, settings, options."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console

from crm_settings import Settings, SettingsError, get_settings

out = Console()
err = Console(stderr=True)

DB_OPTION = typer.Option(
    None,
    "--database-url",
    help="SQLAlchemy URL (default: CRM_DATABASE_URL, else SQLite file var/crm.db).",
)


def settings() -> Settings:
    """The process settings; a bad variable prints ``error: ...`` and exits 2."""
    try:
        return get_settings()
    except SettingsError as error:
        err.print(f"error: {error}", markup=False, highlight=False)
        raise typer.Exit(2) from None


def database_url(option: Optional[str]) -> str:
    """The ``--database-url`` option, else the configured store URL."""
    return option or settings().database_url


def echo_sql() -> bool:
    """Whether to log every SQL statement (``CRM_ECHO_SQL``)."""
    return settings().echo_sql
