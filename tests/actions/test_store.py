"""actions.store: the configured store, transactions on a worker thread."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from sqlalchemy.orm import Session, sessionmaker

from actions.store import in_store, session_factory
from crm_store.models import Customer
from crm_store.services.customers import customer_first_name


def test_session_factory_follows_the_settings(store: sessionmaker) -> None:
    assert session_factory().kw["bind"].url == store.kw["bind"].url


def test_in_store_runs_the_work_off_the_event_loop(store: sessionmaker) -> None:
    ticks: list[float] = []
    busy: list[float] = []

    def slow_read(session: Session, *, customer_id: str) -> tuple[str | None, int]:
        busy.append(time.monotonic())
        time.sleep(0.3)  # a slow query
        busy.append(time.monotonic())
        return customer_first_name(session, customer_id=customer_id), (
            threading.get_ident()
        )

    async def ticker() -> None:
        for _ in range(5):
            ticks.append(time.monotonic())
            await asyncio.sleep(0.02)

    async def scenario() -> tuple[str | None, int]:
        result, _ = await asyncio.gather(
            in_store(slow_read, customer_id="C0001"), ticker()
        )
        return result

    name, worker = asyncio.run(scenario())
    assert name is not None
    assert worker != threading.get_ident()
    start, end = busy
    during = [t for t in ticks if start < t < end]
    assert len(during) >= 3  # the loop kept serving others during the read


def test_in_store_commits_or_rolls_back(store: sessionmaker) -> None:
    def add(session: Session, customer_id: str, fail: bool) -> None:
        session.add(Customer(id=customer_id, first_name="Tess"))
        session.flush()
        if fail:
            raise RuntimeError("boom")

    asyncio.run(in_store(add, "C-kept", False))
    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(in_store(add, "C-gone", True))
    with store() as session:
        assert session.get(Customer, "C-kept") is not None
        assert session.get(Customer, "C-gone") is None
