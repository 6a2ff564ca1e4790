"""Contact-history writer: queued Rasa events -> the store, in batches.

``HistoryWriter`` runs a ``HistoryRecorder`` (``contact_history.recorder``) in a
loop: it gathers events from a queue, writes them with retries while the store
is down (nothing is lost), periodically closes idle conversations as abandoned
and flushes on stop.

The writer runs either on a thread of the caller (``WriterSignals.local``) or, as
the Rasa server does, in a separate process (``WriterSignals.shared`` plus
``serve``): its SQLAlchemy work then never competes with Rasa's event loop for
the GIL. This package does not import Rasa, so the writer process starts light.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import pickle
import queue
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import sessionmaker

from contact_history.recorder import HistoryRecorder
from crm_store.db import session_factory
from crm_store.services.history import close_idle_conversations
from crm_store.services.receipts import prune_receipts

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
)
WAKE = "__contact_history_wake__"
# Telegram re-delivers an update for at most a day; keep its receipt a week.
RECEIPT_DAYS = 7


class Counter:
    """A plain counter with the ``.value`` interface of ``multiprocessing.Value``."""

    def __init__(self) -> None:
        """Start at zero."""
        self.value = 0


@dataclass
class WriterSignals:
    """What the publishing side and a writer share: the queue, stop flag, counters.

    ``handled`` counts events the writer is done with (written or dropped), so a
    publisher that counts what it sent can wait until everything is through;
    ``dropped`` counts the events among them that could not be recorded. The
    queue holds at most ``limit`` items (turns); ``put_nowait`` raises
    ``queue.Full`` beyond that.
    """

    queue: Any
    stop: Any
    handled: Any
    written: Any
    failures: Any
    dropped: Any

    @classmethod
    def local(cls, limit: int = 0) -> WriterSignals:
        """Signals for a writer thread in this process (``limit`` 0: unbounded)."""
        return cls(
            queue.Queue(limit),
            threading.Event(),
            Counter(),
            Counter(),
            Counter(),
            Counter(),
        )

    @classmethod
    def shared(cls, context: Any, limit: int = 0) -> WriterSignals:
        """Signals for a writer process (``context``: a multiprocessing context)."""
        return cls(
            context.Queue(limit),
            context.Event(),
            context.Value("q", 0, lock=False),
            context.Value("q", 0, lock=False),
            context.Value("q", 0, lock=False),
            context.Value("q", 0, lock=False),
        )


@dataclass(frozen=True)
class WriterSettings:
    """How the writer batches, retries and closes idle conversations."""

    flush_interval: float = 0.2
    batch_size: int = 100
    inactivity_timeout: dt.timedelta = dt.timedelta(minutes=30)
    idle_check_interval: float = 60.0
    max_backoff: float = 5.0
    close_timeout: float = 30.0


class HistoryWriter:
    """Writes queued Rasa events to the store in batches until told to stop."""

    def __init__(
        self,
        factory: sessionmaker | None = None,
        *,
        database_url: str | None = None,
        settings: WriterSettings | None = None,
        signals: WriterSignals | None = None,
    ) -> None:
        """Create a writer; ``run`` it on a thread or in a process.

        Args:
            factory: session factory of the store (default: from ``database_url``).
            database_url: store URL, required when no ``factory`` is given.
            settings: batching, retry and idle settings.
            signals: queue, stop flag and counters shared with the publisher.

        Raises:
            ValueError: neither ``factory`` nor ``database_url`` was given.
        """
        if factory is None and not database_url:
            raise ValueError("the history writer needs a factory or a database_url")
        self._factory = factory
        self._database_url = database_url
        self.settings = settings or WriterSettings()
        self.signals = signals or WriterSignals.local()
        self.recorder = HistoryRecorder()

    @property
    def factory(self) -> sessionmaker:
        """The store's session factory (created on first use)."""
        if self._factory is None:
            self._factory = session_factory(str(self._database_url))
        return self._factory

    def run(self) -> None:
        """Write batches until the stop flag is set and the queue is drained."""
        stop = self.signals.stop
        next_sweep = time.monotonic() + self.settings.idle_check_interval
        while True:
            batch = self._gather()
            if batch:
                self._write_with_retry(batch)
                self.signals.handled.value += len(batch)
            if time.monotonic() >= next_sweep:
                self._sweep_idle()
                next_sweep = time.monotonic() + self.settings.idle_check_interval
            if stop.is_set() and self._drained():
                return

    def _drained(self) -> bool:
        try:
            return self.signals.queue.empty()
        except OSError:  # a closed multiprocessing queue
            return True

    def _gather(self) -> list[dict[str, Any]]:
        """Wait for events, then collect for ``flush_interval`` or ``batch_size``.

        A queue item is one event or a list of them (the broker queues each
        turn's events as one list; a writer process gets it as ``(number of
        events, pickled list)``). ``stop`` puts a wake-up marker on the queue
        so that a long flush interval never delays shutdown.
        """
        batch: list[dict[str, Any]] = []
        stopping = self.signals.stop.is_set()
        wait = 0.05 if stopping else self.settings.flush_interval
        deadline = time.monotonic() + wait
        while len(batch) < self.settings.batch_size:
            remaining = deadline - time.monotonic()
            if self.signals.stop.is_set() and batch:
                remaining = 0
            try:
                item = (
                    self.signals.queue.get(timeout=remaining)
                    if remaining > 0
                    else self.signals.queue.get_nowait()
                )
            except queue.Empty:
                break
            if isinstance(item, str):  # WAKE
                continue
            if isinstance(item, tuple):  # (number of events, pickled list)
                item = self._unpickle(*item)
            if isinstance(item, list):
                batch.extend(item)
            else:
                batch.append(item)
        return batch

    def _unpickle(self, count: int, data: bytes) -> list[dict[str, Any]]:
        try:
            events = pickle.loads(data)  # noqa: S301 - our own broker pickled it
        except Exception as error:  # noqa: BLE001 - count it, keep writing
            self.signals.dropped.value += count
            self.signals.handled.value += count
            logger.error(
                "contact history: dropped a queued turn that cannot be read (%s)",
                type(error).__name__,
            )
            return []
        return events if isinstance(events, list) else [events]

    def _write_with_retry(self, batch: list[dict[str, Any]]) -> None:
        delay = 0.1
        give_up_at: float | None = None
        while True:
            try:
                self._write(batch)
                return
            except TRANSIENT_ERRORS as error:
                self.signals.failures.value += 1
                self._drop_pooled_connections()
                logger.warning(
                    "contact history: store unavailable (%s); retrying %d events "
                    "in %.1fs",
                    type(error).__name__,
                    len(batch),
                    delay,
                )
            except Exception:
                self.signals.failures.value += 1
                logger.exception("contact history: batch failed; writing one by one")
                self._write_singly(batch)
                return
            if self.signals.stop.is_set():
                give_up_at = (
                    give_up_at or time.monotonic() + self.settings.close_timeout
                )
                if time.monotonic() > give_up_at:
                    logger.error(
                        "contact history: giving up on %d events at shutdown",
                        len(batch),
                    )
                    return
            time.sleep(delay)
            delay = min(delay * 2, self.settings.max_backoff)

    def _drop_pooled_connections(self) -> None:
        """Make the retry open fresh connections.

        Pooled ones may point at a store that is gone: a closed PostgreSQL
        backend, a SQLite file that was moved or restored.
        """
        bind = self.factory.kw.get("bind")
        if bind is not None:
            bind.dispose()

    def _write(self, batch: list[dict[str, Any]]) -> None:
        with self.factory.begin() as session:
            pending = self.recorder.record(session, batch)
        invalid = self.recorder.dropped
        self.recorder.commit(pending)
        self.signals.dropped.value += self.recorder.dropped - invalid
        self.signals.written.value += len(batch)

    def _write_singly(self, batch: list[dict[str, Any]]) -> None:
        for event in batch:
            try:
                self._write([event])
            except Exception as error:  # noqa: BLE001 - one bad event, keep going
                self.signals.dropped.value += 1
                logger.error(
                    "contact history: dropped a %s event of %s (%s)",
                    event.get("event"),
                    event.get("sender_id"),
                    type(error).__name__,
                )

    def _sweep_idle(self) -> None:
        try:
            with self.factory.begin() as session:
                closed = close_idle_conversations(
                    session, idle_for=self.settings.inactivity_timeout
                )
                # Inbound receipts (Telegram update ids) outlive any re-delivery
                # after RECEIPT_DAYS; the same sweep keeps the table small.
                prune_receipts(
                    session,
                    older_than=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
                    - dt.timedelta(days=RECEIPT_DAYS),
                )
        except sa_exc.SQLAlchemyError as error:
            logger.warning("contact history: idle sweep failed (%s)", error)
            return
        if closed:
            logger.info("contact history: closed %d idle conversations", closed)
        self.recorder.forget()


def serve(database_url: str, settings: WriterSettings, signals: WriterSignals) -> None:
    """Entry point of the writer process: run until stopped, then flush.

    ``database_url`` comes from the parent (the broker), so the writer reads no
    settings of its own.

    Ctrl-C reaches the whole process group; the writer ignores SIGINT and lets
    the broker stop it after the last events were queued. SIGTERM, or the
    parent's death, makes it flush what it has and exit.
    """
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)-8s %(name)s - %(message)s",
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: signals.stop.set())
    parent = os.getppid()

    def watch_parent() -> None:
        while not signals.stop.is_set():
            if os.getppid() != parent:
                logger.error("contact history: the Rasa server is gone; flushing")
                signals.stop.set()
            time.sleep(1.0)

    threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()
    HistoryWriter(database_url=database_url, settings=settings, signals=signals).run()
