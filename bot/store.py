"""The application's handle on the customer store: one engine and session factory."""

from __future__ import annotations

from functools import cache

from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import sessionmaker

from crm_store.db import make_engine, make_session_factory
from crm_store.settings import StoreSettings


@cache
def engine_for(url: str) -> Engine:
    """Return the process-wide engine for ``url`` (created on first use)."""
    return make_engine(url)


def default_url() -> str:
    """The store URL from the environment (``CRM_DATABASE_URL`` or the SQLite file)."""
    return StoreSettings.from_env().database_url


def session_factory(url: str | None = None) -> sessionmaker:
    """Return a session factory for ``url`` (default: from the environment)."""
    return make_session_factory(engine_for(url or default_url()))


def safe_url(url: str) -> str:
    """Render a database URL without its password, for logs and messages."""
    return make_url(url).render_as_string(hide_password=True)
