"""Contact-history writer: Rasa tracker events become conversations and interactions.

``HistoryRecorder`` translates a batch of Rasa event dicts into store writes (one
transaction per batch). ``HistoryWriter`` runs the recorder in a loop: it gathers
events from a queue, writes them with retries while the store is down (nothing is
lost), periodically closes idle conversations as abandoned and flushes on stop.

The writer runs either on a thread of the caller (``WriterSignals.local``) or, as
the Rasa server does, in a separate process (``WriterSignals.shared`` plus
``serve``): its SQLAlchemy work then never competes with Rasa's event loop for
the GIL. This module does not import Rasa, so the writer process starts light.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from bot.channel_names import DEFAULT_CHANNEL, channel_for
from crm_store.models import Conversation
from crm_store.services.conversations import close_conversation, open_conversation
from crm_store.services.errors import InvalidInput
from crm_store.services.history import (
    close_idle_conversations,
    conversations_by_id,
    latest_conversation,
    link_conversation_customer,
    mark_escalated,
    next_conversation_id,
)
from crm_store.services.interactions import NewInteraction, append_interactions

logger = logging.getLogger(__name__)

GOODBYE_INTENT = "goodbye"
CUSTOMER_SLOT = "customer_id"
ESCALATED_SLOT = "escalated"
TRACKED_SLOTS = (CUSTOMER_SLOT, ESCALATED_SLOT)
MESSAGE_EVENTS = ("user", "bot")
TRANSIENT_ERRORS = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
)


def event_id_for(event: dict[str, Any]) -> str:
    """Return a stable id: the user message id, else a hash of the event's content.

    Re-delivering the same event yields the same id, so writes stay idempotent.
    """
    message_id = event.get("message_id")
    if event.get("event") == "user" and message_id:
        return str(message_id)[:128]
    raw = "|".join(
        [
            str(event.get("sender_id")),
            str(event.get("event")),
            repr(event.get("timestamp")),
            str(event.get("text")),
        ]
    )
    return f"{event.get('event')}-{hashlib.sha256(raw.encode()).hexdigest()[:40]}"


def is_recorded(event: dict[str, Any]) -> bool:
    """True for the events the recorder uses: messages and the tracked slots.

    The broker drops the others (actions, featurization, session and loop
    events) before queueing, so they cost no pickling and no writer time.
    """
    kind = event.get("event")
    if kind == "slot":
        return event.get("name") in TRACKED_SLOTS
    return kind in MESSAGE_EVENTS


def occurred_at(event: dict[str, Any]) -> dt.datetime:
    """The event's timestamp as naive UTC (now if it has none)."""
    stamp = event.get("timestamp")
    moment = (
        dt.datetime.fromtimestamp(float(stamp), tz=dt.timezone.utc)
        if stamp is not None
        else dt.datetime.now(dt.timezone.utc)
    )
    return moment.replace(tzinfo=None)


@dataclass
class ConversationState:
    """What the recorder remembers about a sender's current conversation."""

    conversation_id: str
    channel: str
    customer_id: str | None = None
    escalated: bool = False
    closed: bool = False


class HistoryRecorder:
    """Turns Rasa tracker events into conversations and interactions.

    Not thread-safe: one recorder per writer thread. ``record`` runs in the
    caller's transaction and only updates its cache after ``commit`` is called.
    """

    def __init__(self) -> None:
        self.states: dict[str, ConversationState] = {}
        # Strong references for the batch: the session's identity map is weak, so
        # without them every lookup of a conversation would query again.
        self._loaded: dict[str, Conversation] = {}

    def record(
        self, session: Session, events: Iterable[dict[str, Any]]
    ) -> dict[str, ConversationState]:
        """Apply ``events`` in ``session``; return the updated states to commit."""
        self._loaded = {}
        try:
            with session.no_autoflush:
                pending, rows = self._translate(session, events)
            session.flush()  # conversations before the interactions referencing them
            if rows:
                append_interactions(session, items=rows)
        finally:
            self._loaded = {}
        return pending

    def _prefetch(self, session: Session, events: list[dict[str, Any]]) -> None:
        """Load the cached conversations of a batch in one query, not one per event."""
        wanted = {
            state.conversation_id
            for state in (self.states.get(e.get("sender_id") or "") for e in events)
            if state is not None and not state.closed
        }
        if wanted:
            for conversation in conversations_by_id(session, ids=wanted):
                self._loaded[conversation.id] = conversation

    def _conversation(
        self, session: Session, conversation_id: str
    ) -> Conversation | None:
        found = self._loaded.get(conversation_id)
        if found is None:
            found = session.get(Conversation, conversation_id)
            if found is not None:
                self._loaded[conversation_id] = found
        return found

    def _open(
        self, session: Session, conversation_id: str, channel: str, at: dt.datetime
    ) -> None:
        conversation = open_conversation(
            session, conversation_id=conversation_id, channel=channel, at=at
        )
        self._loaded[conversation.id] = conversation

    def _translate(
        self, session: Session, events: Iterable[dict[str, Any]]
    ) -> tuple[dict[str, ConversationState], list[NewInteraction]]:
        pending: dict[str, ConversationState] = {}
        rows: list[NewInteraction] = []
        events = list(events)
        self._prefetch(session, events)

        def state_of(sender: str) -> ConversationState | None:
            if sender in pending:
                return pending[sender]
            cached = self.states.get(sender)
            return dataclasses.replace(cached) if cached else None

        for event in events:
            sender = event.get("sender_id")
            kind = event.get("event")
            if not sender or not is_recorded(event):
                continue
            at = occurred_at(event)
            state = state_of(sender)
            if kind == "user":
                state = self._for_user(session, sender, state, event, at)
                pending[sender] = state
                intent = (event.get("parse_data") or {}).get("intent") or {}
                self._add(rows, event, state, "in", "customer", intent, at)
                if intent.get("name") == GOODBYE_INTENT and not state.closed:
                    outcome = "escalated" if state.escalated else "self_served"
                    close_conversation(
                        session,
                        conversation_id=state.conversation_id,
                        outcome=outcome,
                        at=at,
                    )
                    state.closed = True
            elif kind == "bot":
                state = state or self._resume(session, sender, None, at)
                pending[sender] = state
                self._touch(session, state, at)
                self._add(rows, event, state, "out", "bot", {}, at)
            else:  # a tracked slot
                if state is None:
                    latest = latest_conversation(session, sender_id=sender)
                    if latest is None:
                        continue
                    state = self._state_of(latest)
                self._apply_slot(session, state, event, rows)
                pending[sender] = state
        return pending, rows

    def commit(self, pending: dict[str, ConversationState]) -> None:
        """Remember the states of a batch whose transaction committed."""
        self.states.update(pending)

    def forget(self) -> None:
        """Drop the cache (after an idle sweep); states are re-read on demand."""
        self.states = {}

    @staticmethod
    def _state_of(conversation: Conversation) -> ConversationState:
        return ConversationState(
            conversation_id=conversation.id,
            channel=conversation.channel,
            customer_id=conversation.customer_id,
            escalated=conversation.outcome == "escalated",
            closed=conversation.status != "open",
        )

    def _for_user(
        self,
        session: Session,
        sender: str,
        state: ConversationState | None,
        event: dict[str, Any],
        at: dt.datetime,
    ) -> ConversationState:
        channel = channel_for(event.get("input_channel"))
        if state is not None and not state.closed:
            # Another writer (the idle closer, a second Rasa instance) may have
            # closed it meanwhile: the database decides.
            conversation = self._conversation(session, state.conversation_id)
            if conversation is not None and conversation.status == "open":
                if at > conversation.last_activity_at:
                    conversation.last_activity_at = at
                return state
        return self._resume(session, sender, channel, at, new_if_closed=True)

    def _resume(
        self,
        session: Session,
        sender: str,
        channel: str | None,
        at: dt.datetime,
        *,
        new_if_closed: bool = False,
    ) -> ConversationState:
        """Find the sender's open conversation in the store, or open a new one."""
        latest = latest_conversation(session, sender_id=sender)
        if latest is not None and (latest.status == "open" or not new_if_closed):
            self._loaded[latest.id] = latest
            if latest.status == "open" and at > latest.last_activity_at:
                latest.last_activity_at = at
            return self._state_of(latest)
        conversation_id = next_conversation_id(session, sender_id=sender)
        channel = channel or DEFAULT_CHANNEL
        self._open(session, conversation_id, channel, at)
        return ConversationState(conversation_id=conversation_id, channel=channel)

    def _touch(
        self, session: Session, state: ConversationState, at: dt.datetime
    ) -> None:
        conversation = self._conversation(session, state.conversation_id)
        if conversation is not None and at > conversation.last_activity_at:
            if conversation.status == "open":
                conversation.last_activity_at = at

    @staticmethod
    def _apply_slot(
        session: Session,
        state: ConversationState,
        event: dict[str, Any],
        rows: list[NewInteraction],
    ) -> None:
        name, value = event.get("name"), event.get("value")
        if name == CUSTOMER_SLOT and value and value != state.customer_id:
            state.customer_id = str(value)
            link_conversation_customer(
                session,
                conversation_id=state.conversation_id,
                customer_id=state.customer_id,
            )
            for index, row in enumerate(rows):
                if row.conversation_id == state.conversation_id:
                    rows[index] = dataclasses.replace(
                        row, customer_id=state.customer_id
                    )
        elif name == ESCALATED_SLOT and value is True and not state.escalated:
            state.escalated = True
            mark_escalated(session, conversation_id=state.conversation_id)

    @staticmethod
    def _add(
        rows: list[NewInteraction],
        event: dict[str, Any],
        state: ConversationState,
        direction: str,
        author: str,
        intent: dict[str, Any],
        at: dt.datetime,
    ) -> None:
        meta: dict[str, Any] = {}
        if direction == "out":
            metadata = event.get("metadata") or {}
            for key in ("utter_action", "fallback"):
                if metadata.get(key):
                    meta[key] = metadata[key]
            buttons = (event.get("data") or {}).get("buttons") or []
            if buttons:
                meta["buttons"] = [
                    b.get("title") for b in buttons if isinstance(b, dict)
                ]
        confidence = intent.get("confidence")
        if confidence is not None:
            confidence = min(max(float(confidence), 0.0), 1.0)
        item = NewInteraction(
            event_id=event_id_for(event),
            channel=state.channel,
            direction=direction,
            author=author,
            text=event.get("text"),
            customer_id=state.customer_id,
            conversation_id=state.conversation_id,
            intent=intent.get("name"),
            confidence=confidence,
            occurred_at=at,
            meta=meta,
        )
        try:
            item.validated_row()
        except InvalidInput as error:
            logger.error("dropping an invalid %s event: %s", event.get("event"), error)
            return
        rows.append(item)


WAKE = "__contact_history_wake__"


class Counter:
    """A plain counter with the ``.value`` interface of ``multiprocessing.Value``."""

    def __init__(self) -> None:
        """Start at zero."""
        self.value = 0


@dataclass
class WriterSignals:
    """What the publishing side and a writer share: the queue, stop flag, counters.

    ``handled`` counts events the writer is done with (written or dropped), so a
    publisher that counts what it sent can wait until everything is through.
    """

    queue: Any
    stop: Any
    handled: Any
    written: Any
    failures: Any

    @classmethod
    def local(cls) -> WriterSignals:
        """Signals for a writer thread in this process."""
        return cls(
            queue.SimpleQueue(), threading.Event(), Counter(), Counter(), Counter()
        )

    @classmethod
    def shared(cls, context: Any) -> WriterSignals:
        """Signals for a writer process (``context``: a multiprocessing context)."""
        return cls(
            context.Queue(),
            context.Event(),
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
            database_url: store URL (default ``CRM_DATABASE_URL`` / the SQLite file).
            settings: batching, retry and idle settings.
            signals: queue, stop flag and counters shared with the publisher.
        """
        self._factory = factory
        self._database_url = database_url
        self.settings = settings or WriterSettings()
        self.signals = signals or WriterSignals.local()
        self.recorder = HistoryRecorder()

    @property
    def factory(self) -> sessionmaker:
        """The store's session factory (created on first use)."""
        if self._factory is None:
            from bot.store import session_factory

            self._factory = session_factory(self._database_url)
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
        turn's events as one list). ``stop`` puts a wake-up marker on the queue
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
            if isinstance(item, list):
                batch.extend(item)
            else:
                batch.append(item)
        return batch

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
        self.recorder.commit(pending)
        self.signals.written.value += len(batch)

    def _write_singly(self, batch: list[dict[str, Any]]) -> None:
        for event in batch:
            try:
                self._write([event])
            except Exception as error:  # noqa: BLE001 - one bad event, keep going
                logger.error(
                    "contact history: dropped a %s event (%s)",
                    event.get("event"),
                    type(error).__name__,
                )

    def _sweep_idle(self) -> None:
        try:
            with self.factory.begin() as session:
                closed = close_idle_conversations(
                    session, idle_for=self.settings.inactivity_timeout
                )
        except sa_exc.SQLAlchemyError as error:
            logger.warning("contact history: idle sweep failed (%s)", error)
            return
        if closed:
            logger.info("contact history: closed %d idle conversations", closed)
        self.recorder.forget()


def serve(
    database_url: str | None, settings: WriterSettings, signals: WriterSignals
) -> None:
    """Entry point of the writer process: run until stopped, then flush.

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
