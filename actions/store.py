"""The action server's handle on the customer store.

The store URL comes from ``crm_settings.get_settings().database_url``, read when a
transaction opens; engines are cached per URL by ``crm_store.db``. To point the
actions at another database (tests), change ``CRM_DATABASE_URL`` and call
``crm_settings.get_settings.cache_clear()``; nothing else here is cached.

Actions run in the action server's event loop, so they reach the store through
``in_store``, which runs the synchronous service calls in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from crm_settings import get_settings
from crm_store.db import session_factory as factory_for

P = ParamSpec("P")
T = TypeVar("T")


def session_factory() -> sessionmaker:
    """Return the session factory of the configured store (``CRM_DATABASE_URL``)."""
    settings = get_settings()
    return factory_for(settings.database_url, echo=settings.echo_sql)


@contextmanager
def transaction() -> Iterator[Session]:
    """Open a session in a transaction: commit on success, roll back on error."""
    with session_factory().begin() as session:
        yield session


def _in_transaction(
    work: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
) -> T:
    with transaction() as session:
        return work(session, *args, **kwargs)


async def in_store(
    work: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """Run ``work(session, *args, **kwargs)`` in one transaction on a worker thread.

    The event loop keeps serving other conversations meanwhile. ``work`` should
    return plain values (or fully loaded rows): the session is closed afterwards.
    Exceptions raised by ``work`` roll the transaction back and propagate.
    """
    return await asyncio.to_thread(_in_transaction, work, *args, **kwargs)
