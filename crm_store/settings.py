"""Store settings, read from the environment when asked for (never at import time)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SQLITE_PATH = PROJECT_ROOT / "var" / "crm.db"


@dataclass(frozen=True)
class StoreSettings:
    """Connection settings for the customer store.

    Attributes:
        database_url: SQLAlchemy URL; SQLite file under ``var/`` unless
            ``CRM_DATABASE_URL`` is set (e.g. ``postgresql+psycopg2://...``).
        echo_sql: log every SQL statement (``CRM_ECHO_SQL=1``), for debugging only.
    """

    database_url: str
    echo_sql: bool = False

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> StoreSettings:
        """Build settings from ``environ`` (default: the process environment)."""
        env = os.environ if environ is None else environ
        url = env.get("CRM_DATABASE_URL") or f"sqlite:///{DEFAULT_SQLITE_PATH}"
        return cls(database_url=url, echo_sql=env.get("CRM_ECHO_SQL") == "1")
