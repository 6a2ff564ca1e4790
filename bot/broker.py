"""Contact-history event broker: every user and bot message becomes an interaction.

Configured in ``endpoints.yml``::

    event_broker:
      type: bot.broker.ContactHistoryBroker
      flush_interval_ms: 200        # optional
      batch_size: 100               # optional
      inactivity_timeout_minutes: 30  # optional
      writer: process               # optional: process (default) or thread

``publish`` only buffers the event, so the Rasa event loop is never blocked by
the database. Events the writer does not use (featurization, session events,
``action_listen``) are dropped at once; messages and the story steps (actions,
slots, active loops: ``contact_history.events``) of a turn go onto the queue as
one list, handed over when the publishing coroutine yields (one queue put per
turn, not per event: each put wakes the queue's feeder thread, which then
competes with Rasa's own work for the GIL). The writer
(``contact_history.writer``) takes batches off the queue and writes them
through the store services, one transaction per batch; when the database is
unavailable it keeps the batch and retries with backoff, so nothing is lost.
``close`` (called by Rasa on shutdown) flushes what is left. The writer also
closes idle conversations as abandoned.

By default the writer runs in its own process. Profiling showed that a writer
thread inside the Rasa server, although it needs only ~0.4 ms of CPU per event,
slowed every turn by ~9 ms: each time it took the GIL, Rasa's TensorFlow calls
waited for it back. ``writer: thread`` keeps it in-process (tests, tools, and
hosts where a child process is not wanted). If the writer process dies (killed,
out of memory) the next ``publish`` starts a new one on a fresh queue; events the
dead one had not written yet are lost and their number is logged.

Only the fields the recorder reads are queued (``recorded_part``): client
metadata and NLU details never are (but the entities, reduced to
entity/value/start/end); slot values are bounded (``compact_value``). For a
writer process each turn is pickled by ``publish`` (not by the queue's feeder
thread, where a failure would lose the turn with nothing but a traceback); an
event that cannot be pickled (say a tracked slot's value nested 1,000 levels
deep) is left out of its turn and the rest goes on.

**Bounded queue, nothing lost silently.** The queue holds at most
``CRM_BROKER_QUEUE_LIMIT`` turns (default 10,000). ``publish`` never blocks the
event loop: when the queue is full (the writer is stuck or far behind) the
turn is not queued, an ERROR names its tracker key (never its text) and its
events are counted in ``lost_events``. The same counter takes events that
cannot be pickled, those of a dead writer process, those still unwritten when
``close`` gives up, and those the writer could not record (logged by the writer
with their tracker key and conversation; the rest of their batch is written):
``lost_events`` is the number of recorded-type events missing from the contact
history, for the metrics endpoint.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import multiprocessing
import pickle
import queue
import threading
import time
from asyncio import AbstractEventLoop
from typing import Any

from rasa.core.brokers.broker import EventBroker
from rasa.utils.endpoints import EndpointConfig
from sqlalchemy.orm import sessionmaker

from contact_history.events import event_id_for, is_recorded, recorded_part
from contact_history.recorder import HistoryRecorder
from contact_history.writer import (
    WAKE,
    HistoryWriter,
    WriterSettings,
    WriterSignals,
    serve,
)
from crm_settings import get_settings

__all__ = ["ContactHistoryBroker", "HistoryRecorder", "event_id_for"]

logger = logging.getLogger(__name__)

WRITER_MODES = ("process", "thread")


class ContactHistoryBroker(EventBroker):
    """Rasa event broker writing the contact history to the customer store."""

    def __init__(
        self,
        factory: sessionmaker | None = None,
        *,
        database_url: str | None = None,
        writer: str | None = None,
        flush_interval: float = 0.2,
        batch_size: int = 100,
        inactivity_timeout: dt.timedelta = dt.timedelta(minutes=30),
        idle_check_interval: float = 60.0,
        max_backoff: float = 5.0,
        close_timeout: float = 30.0,
        queue_limit: int | None = None,
    ) -> None:
        """Create a broker; call ``start`` (``from_endpoint_config`` does).

        Args:
            factory: session factory of the store; implies ``writer="thread"``.
            database_url: store URL (default: ``database_url`` of the settings;
                a writer process gets it passed, it reads no settings itself).
            writer: ``"process"`` or ``"thread"`` (default: thread when a factory
                is given, else process).
            flush_interval: seconds to gather events before writing a batch.
            batch_size: write as soon as this many events are waiting.
            inactivity_timeout: idle conversations older than this are abandoned.
            idle_check_interval: seconds between idle-conversation sweeps.
            max_backoff: longest wait between retries while the store is down.
            close_timeout: how long ``close`` keeps retrying before giving up.
            queue_limit: turns the queue holds before new ones are lost
                (default: ``broker_queue_limit`` of the settings).
        """
        mode = writer or ("thread" if factory is not None else "process")
        if mode not in WRITER_MODES:
            raise ValueError(
                f"event_broker writer must be one of {', '.join(WRITER_MODES)}, "
                f"not {mode!r}"
            )
        if mode == "process" and factory is not None:
            raise ValueError("a writer process opens its own store: pass database_url")
        self.mode = mode
        self._factory = factory
        if factory is None and not database_url:
            database_url = get_settings().database_url
        self._database_url = database_url
        if queue_limit is None:
            queue_limit = get_settings().broker_queue_limit
        if queue_limit < 1:
            raise ValueError("the broker's queue_limit must be at least 1")
        self.queue_limit = queue_limit
        self.settings = WriterSettings(
            flush_interval=flush_interval,
            batch_size=batch_size,
            inactivity_timeout=inactivity_timeout,
            idle_check_interval=idle_check_interval,
            max_backoff=max_backoff,
            close_timeout=close_timeout,
        )
        self._context = multiprocessing.get_context("spawn")
        self.signals = (
            WriterSignals.shared(self._context, queue_limit)
            if mode == "process"
            else WriterSignals.local(queue_limit)
        )
        self._writer: HistoryWriter | None = None
        self._thread: threading.Thread | None = None
        self._process: Any = None
        self._published = 0  # events put on the queue
        self._lost = 0  # events never queued or abandoned with a queue
        self._pending: list[dict[str, Any]] = []  # waiting for this turn to yield

    @classmethod
    async def from_endpoint_config(
        cls,
        broker_config: EndpointConfig,
        event_loop: AbstractEventLoop | None = None,
    ) -> ContactHistoryBroker:
        """Create and start the broker from the ``event_broker`` endpoint config.

        ``writer``, ``inactivity_timeout_minutes`` and ``idle_check_seconds``
        come from the settings (``CRM_HISTORY_WRITER``,
        ``CRM_INACTIVITY_TIMEOUT_MINUTES``, ``CRM_IDLE_CHECK_SECONDS``) when set,
        else from the endpoint config, else the defaults.
        """
        kwargs = broker_config.kwargs if broker_config else {}
        settings = get_settings()
        timeout = settings.inactivity_timeout_minutes
        if timeout is None:
            timeout = float(kwargs.get("inactivity_timeout_minutes", 30))
        idle_check = settings.idle_check_seconds
        if idle_check is None:
            idle_check = float(kwargs.get("idle_check_seconds", 60))
        broker = cls(
            database_url=kwargs.get("database_url") or settings.database_url,
            writer=settings.history_writer or kwargs.get("writer") or "process",
            flush_interval=float(kwargs.get("flush_interval_ms", 200)) / 1000,
            batch_size=int(kwargs.get("batch_size", 100)),
            inactivity_timeout=dt.timedelta(minutes=timeout),
            idle_check_interval=idle_check,
            queue_limit=settings.broker_queue_limit,
        )
        broker.start()
        return broker

    @property
    def recorder(self) -> HistoryRecorder:
        """The thread writer's recorder (thread mode only)."""
        if self._writer is None:
            raise RuntimeError("the recorder lives in the writer process")
        return self._writer.recorder

    @property
    def written(self) -> int:
        """Events handled by successful batches so far."""
        return int(self.signals.written.value)

    @property
    def lost_events(self) -> int:
        """Recorded-type events missing from the contact history (module docstring)."""
        return self._lost + int(self.signals.dropped.value)

    @property
    def failures(self) -> int:
        """Failed write attempts so far (each was retried)."""
        return int(self.signals.failures.value)

    def start(self) -> None:
        """Start the writer thread or process (idempotent)."""
        if self._thread is not None or self._process is not None:
            return
        if self.mode == "thread":
            self._writer = HistoryWriter(
                self._factory,
                database_url=self._database_url,
                settings=self.settings,
                signals=self.signals,
            )
            self._thread = threading.Thread(
                target=self._writer.run, name="contact-history-writer", daemon=True
            )
            self._thread.start()
        else:
            self._start_process()

    def _start_process(self) -> None:
        self._process = self._context.Process(
            target=serve,
            args=(self._database_url, self.settings, self.signals),
            name="contact-history-writer",
            daemon=True,
        )
        self._process.start()

    def publish(self, event: dict[str, Any]) -> None:
        """Buffer an event for the writer; never blocks.

        Inside an event loop the turn's events are queued together once the
        publishing coroutine yields; without a running loop at once.
        """
        if not is_recorded(event):
            return
        self._pending.append(recorded_part(event))
        if len(self._pending) > 1:
            return  # a hand-over is already due
        try:
            asyncio.get_running_loop().call_soon(self.flush_pending)
        except RuntimeError:  # no running loop in this thread
            self.flush_pending()

    def flush_pending(self) -> None:
        """Put the buffered events on the writer's queue as one item."""
        if not self._pending:
            return
        events, self._pending = self._pending, []
        item: Any = events
        if self._process is not None:
            self._restart_if_dead()  # a waitpid(WNOHANG): microseconds
            events, data = self._pickled(events)
            if not events:
                return
            item = (len(events), data)
        try:
            self.signals.queue.put_nowait(item)
        except queue.Full:
            self._lose(events, f"the writer's queue is full ({self.queue_limit} turns)")
            return
        self._published += len(events)

    def _pickled(
        self, events: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], bytes]:
        """Pickle a turn for the writer process, leaving out what cannot be."""
        try:
            return events, pickle.dumps(events, pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - RecursionError, unpicklable values
            pass
        kept = []
        for event in events:
            try:
                pickle.dumps(event, pickle.HIGHEST_PROTOCOL)
            except Exception as error:  # noqa: BLE001
                self._lose([event], f"it cannot be pickled ({type(error).__name__})")
            else:
                kept.append(event)
        return kept, pickle.dumps(kept, pickle.HIGHEST_PROTOCOL)

    def _lose(self, events: list[dict[str, Any]], reason: str) -> None:
        """Count events that will not be recorded; log their tracker keys, no text."""
        self._lost += len(events)
        keys = sorted({str(e.get("sender_id")) for e in events})
        logger.error(
            "contact history: lost %d events of %s: %s",
            len(events),
            ", ".join(keys),
            reason,
        )

    def _restart_if_dead(self) -> None:
        """Start a new writer process on a fresh queue if the current one died.

        A process killed while reading may leave the queue's reader lock taken,
        so the old queue is abandoned: the events still in it are lost, and
        counted in the log.
        """
        if self._process.is_alive() or self.signals.stop.is_set():
            return
        lost = max(self._published - int(self.signals.handled.value), 0)
        old_queue = self.signals.queue
        self.signals.queue = self._context.Queue(self.queue_limit)
        old_queue.cancel_join_thread()
        old_queue.close()
        self._published -= lost
        self._lost += lost
        logger.error(
            "contact history: writer process exited with code %s; restarting it "
            "(%d events it had not written are lost)",
            self._process.exitcode,
            lost,
        )
        self._start_process()

    def is_ready(self) -> bool:
        """True while the writer runs."""
        if self._process is not None:
            return bool(self._process.is_alive())
        return self._thread is not None and self._thread.is_alive()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until every published event has been handled (tests, tools)."""
        self.flush_pending()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.signals.handled.value >= self._published:
                return True
            if self._process is not None:
                self._restart_if_dead()
            time.sleep(0.02)
        return False

    async def close(self) -> None:
        """Flush what is queued and stop the writer (Rasa calls this on shutdown)."""
        self.flush_pending()
        await asyncio.to_thread(self.stop)

    def stop(self) -> None:
        """Synchronous ``close``: flush, then stop the writer."""
        self.flush_pending()
        self.signals.stop.set()
        try:
            self.signals.queue.put_nowait(WAKE)
        except queue.Full:
            pass  # a full queue keeps the writer busy: it sees the stop flag
        limit = self.settings.close_timeout + 5
        if self._thread is not None:
            self._thread.join(limit)
        if self._process is not None:
            self._process.join(limit)
            if self._process.is_alive():
                self._process.terminate()
        left = self._published - int(self.signals.handled.value)
        if left > 0:
            self._lost += left
            logger.error(
                "contact history: %d events could not be written before shutdown",
                left,
            )
