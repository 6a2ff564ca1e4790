"""The loop shared by the outbox's delivery workers (mail, SMS).

A worker polls the store for due outbox rows of its channel (every
``poll_seconds``, or at once after ``wake()``), takes each with a lease
(``outbound.claim_for_delivery``: several workers never send one row twice, a
worker that dies lets the row come due again) and sends it. A failure counts an
attempt and schedules the next one with exponential back-off (``base_delay``
doubling up to ``max_delay``); a final refusal or the ``max_attempts``-th failure
marks the row ``failed``, which agents see with the conversation.

Subclasses implement ``deliver_due_now`` (one blocking round) with the helpers
here: ``_unit`` (one store transaction, retried when SQLite is locked),
``_claim`` and ``_failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import sessionmaker

from channels.backoff import backoff_delay
from crm_store.db import run_unit
from crm_store.services import outbound

logger = logging.getLogger(__name__)

BATCH = 50
LEASE = dt.timedelta(minutes=5)


def utcnow() -> dt.datetime:
    """Now as the store keeps times: naive UTC."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class OutboxWorker:
    """Polling, leases, back-off and the asyncio loop of a delivery worker."""

    label = "outbox"  # in log lines

    def __init__(
        self,
        *,
        session_factory: sessionmaker,
        poll_seconds: float,
        max_attempts: int,
        base_delay: float,
        max_delay: float,
    ) -> None:
        """Keep the store and the timing (see the module docstring)."""
        self._factory = session_factory
        self.poll_seconds = poll_seconds
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.sent = 0
        self.failed = 0

    # -- one round -----------------------------------------------------------

    def deliver_due_now(self) -> int:
        """Send every due row once (blocking); return how many were sent."""
        raise NotImplementedError

    def _unit(self, work: Callable[[Any], Any]) -> Any:
        """Run ``work(session)`` in one transaction (retried when locked)."""
        return run_unit(self._factory, work)

    def _due(self, channel: str) -> list[outbound.ConversationMessage]:
        now = utcnow()
        return self._unit(
            lambda s: outbound.due_messages(s, channel=channel, now=now, limit=BATCH)
        )

    def _claim(self, message: outbound.ConversationMessage) -> bool:
        """Take the row for this worker (False: another worker has it)."""
        now = utcnow()
        return self._unit(
            lambda s: outbound.claim_for_delivery(
                s, message.id, lease_until=now + LEASE, now=now
            )
        )

    def retry_delay(self, attempts: int) -> float:
        """Seconds before the next try after ``attempts`` failures."""
        return backoff_delay(attempts, self.base_delay, self.max_delay)

    def _failed(
        self, message: outbound.ConversationMessage, reason: str, *, final: bool
    ) -> None:
        """Count the attempt: retry later, or give up (``failed``)."""
        final = final or message.attempts + 1 >= self.max_attempts
        delay = self.retry_delay(message.attempts + 1)
        retry_at = utcnow() + dt.timedelta(seconds=delay)
        self._unit(
            lambda s: outbound.mark_failed(
                s, message.id, reason, final=final, retry_at=None if final else retry_at
            )
        )
        if final:
            self.failed += 1
        logger.warning(
            "%s: outbox %s not sent (%s); %s",
            self.label,
            message.id,
            reason,
            "given up" if final else f"retry in {delay:.0f} s",
        )

    # -- the loop ------------------------------------------------------------

    def wake(self) -> None:
        """Look for due rows now (callable from any thread; never blocks)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._wake.set)

    async def deliver_due(self) -> int:
        """One round in a worker thread; return how many were sent."""
        return await asyncio.to_thread(self.deliver_due_now)

    async def _run(self) -> None:
        while True:
            try:
                await self.deliver_due()
            except Exception:  # noqa: BLE001 - the loop must survive a bad round
                logger.exception("%s: delivery round failed", self.label)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
            self._wake.clear()

    async def start(self) -> None:
        """Start polling in the running loop."""
        self._loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = self._loop.create_task(self._run())

    async def stop(self) -> None:
        """Stop polling (a send in progress finishes in its thread)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
