"""One unit of work on the customer store, off the event loop.

Every request handler reads and writes the store through ``in_store``: a new
session, the function, a commit, all in a worker thread (the store API is
synchronous), retried when SQLite reports a lock. The commit happens before
the response is sent, so a client that reads after a write sees it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from crm_store.db import run_unit

__all__ = ["in_store", "run_unit"]

T = TypeVar("T")


async def in_store(request: Request, work: Callable[[Session], T]) -> T:
    """Run ``work`` as one unit of work on the app's store, in a worker thread."""
    return await run_in_threadpool(run_unit, request.app.state.session_factory, work)
