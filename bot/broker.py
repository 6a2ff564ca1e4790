"""Contact-history event broker: every user and bot message becomes an interaction.

Configured in ``endpoints.yml``::

    event_broker:
      type: bot.broker.ContactHistoryBroker
      flush_interval_ms: 200        # optional
      batch_size: 100               # optional
      inactivity_timeout_minutes: 30  # optional

``publish`` only puts the event on an in-memory queue, so the Rasa event loop is
never blocked by the database. A background thread (the store API is
synchronous) writes batches through the store services in one transaction per
batch; when the database is unavailable it keeps the batch and retries with
backoff, so nothing is lost. ``close`` (called by Rasa on shutdown) flushes what
is left. The same thread periodically closes idle conversations as abandoned.

The translation of Rasa events into store writes lives in ``HistoryRecorder`` so
that a broker consumer (e.g. RabbitMQ in the scale-out profile) can reuse it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import logging
import os
import queue
import threading
import time
from asyncio import AbstractEventLoop
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rasa.core.brokers.broker import EventBroker
from rasa.utils.endpoints import EndpointConfig
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

_WAKE: Any = object()
GOODBYE_INTENT = "goodbye"
CUSTOMER_SLOT = "customer_id"
ESCALATED_SLOT = "escalated"
TRACKED_SLOTS = (CUSTOMER_SLOT, ESCALATED_SLOT)
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
            if not sender or kind not in ("user", "bot", "slot"):
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
            elif kind == "slot" and event.get("name") in TRACKED_SLOTS:
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


class ContactHistoryBroker(EventBroker):
    """Rasa event broker writing the contact history to the customer store."""

    def __init__(
        self,
        factory: sessionmaker | None = None,
        *,
        database_url: str | None = None,
        flush_interval: float = 0.2,
        batch_size: int = 100,
        inactivity_timeout: dt.timedelta = dt.timedelta(minutes=30),
        idle_check_interval: float = 60.0,
        max_backoff: float = 5.0,
        close_timeout: float = 30.0,
    ) -> None:
        """Create a broker; call ``start`` (``from_endpoint_config`` does).

        Args:
            factory: session factory of the store (default: from ``database_url``).
            database_url: store URL (default ``CRM_DATABASE_URL`` / the SQLite file).
            flush_interval: seconds to gather events before writing a batch.
            batch_size: write as soon as this many events are waiting.
            inactivity_timeout: idle conversations older than this are abandoned.
            idle_check_interval: seconds between idle-conversation sweeps.
            max_backoff: longest wait between retries while the store is down.
            close_timeout: how long ``close`` keeps retrying before giving up.
        """
        self._factory = factory
        self._database_url = database_url
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.inactivity_timeout = inactivity_timeout
        self.idle_check_interval = idle_check_interval
        self.max_backoff = max_backoff
        self.close_timeout = close_timeout
        self.recorder = HistoryRecorder()
        self._queue: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._written = 0
        self._failures = 0
        self._idle = threading.Event()

    @classmethod
    async def from_endpoint_config(
        cls,
        broker_config: EndpointConfig,
        event_loop: AbstractEventLoop | None = None,
    ) -> ContactHistoryBroker:
        """Create and start the broker from the ``event_broker`` endpoint config."""
        kwargs = broker_config.kwargs if broker_config else {}
        timeout = float(
            os.environ.get(
                "CRM_INACTIVITY_TIMEOUT_MINUTES",
                kwargs.get("inactivity_timeout_minutes", 30),
            )
        )
        broker = cls(
            database_url=kwargs.get("database_url") or None,
            flush_interval=float(kwargs.get("flush_interval_ms", 200)) / 1000,
            batch_size=int(kwargs.get("batch_size", 100)),
            inactivity_timeout=dt.timedelta(minutes=timeout),
            idle_check_interval=float(
                os.environ.get(
                    "CRM_IDLE_CHECK_SECONDS", kwargs.get("idle_check_seconds", 60)
                )
            ),
        )
        broker.start()
        return broker

    @property
    def written(self) -> int:
        """Events handled by successful batches so far."""
        return self._written

    @property
    def failures(self) -> int:
        """Failed write attempts so far (each was retried)."""
        return self._failures

    def start(self) -> None:
        """Start the background writer thread (idempotent)."""
        if self._thread is not None:
            return
        if self._factory is None:
            from bot.store import session_factory

            self._factory = session_factory(self._database_url)
        self._thread = threading.Thread(
            target=self._run, name="contact-history-writer", daemon=True
        )
        self._thread.start()

    def publish(self, event: dict[str, Any]) -> None:
        """Queue an event for the writer; never blocks."""
        self._idle.clear()
        self._queue.put(event)

    def is_ready(self) -> bool:
        """True while the writer thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until every queued event has been written (for tests, tools)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.empty() and self._idle.wait(0.05):
                return True
        return False

    async def close(self) -> None:
        """Flush what is queued and stop the writer (Rasa calls this on shutdown)."""
        await asyncio.to_thread(self.stop)

    def stop(self) -> None:
        """Synchronous ``close``: flush, then stop the writer thread."""
        self._stop.set()
        self._queue.put(_WAKE)
        if self._thread is not None:
            self._thread.join(self.close_timeout + 5)
        left = 0
        while not self._queue.empty():
            left += self._queue.get_nowait() is not _WAKE
        if left:
            logger.error(
                "contact history: %d events could not be written before shutdown",
                left,
            )

    def _run(self) -> None:
        next_sweep = time.monotonic() + self.idle_check_interval
        while True:
            batch = self._gather()
            if batch:
                self._write_with_retry(batch)
            if time.monotonic() >= next_sweep:
                self._sweep_idle()
                next_sweep = time.monotonic() + self.idle_check_interval
            if self._queue.empty():
                self._idle.set()
                if self._stop.is_set():
                    return

    def _gather(self) -> list[dict[str, Any]]:
        """Wait for events, then collect for ``flush_interval`` or ``batch_size``.

        ``stop`` puts a wake-up marker on the queue so that a long flush
        interval never delays shutdown.
        """
        batch: list[dict[str, Any]] = []
        wait = 0.05 if self._stop.is_set() else self.flush_interval
        deadline = time.monotonic() + wait
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            if self._stop.is_set() and batch:
                remaining = 0
            try:
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if item is _WAKE:
                continue
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
                self._failures += 1
                self._drop_pooled_connections()
                logger.warning(
                    "contact history: store unavailable (%s); retrying %d events "
                    "in %.1fs",
                    type(error).__name__,
                    len(batch),
                    delay,
                )
            except Exception:
                self._failures += 1
                logger.exception("contact history: batch failed; writing one by one")
                self._write_singly(batch)
                return
            if self._stop.is_set():
                give_up_at = give_up_at or time.monotonic() + self.close_timeout
                if time.monotonic() > give_up_at:
                    logger.error(
                        "contact history: giving up on %d events at shutdown",
                        len(batch),
                    )
                    return
            time.sleep(delay)
            delay = min(delay * 2, self.max_backoff)

    def _drop_pooled_connections(self) -> None:
        """Make the retry open fresh connections.

        Pooled ones may point at a store that is gone: a closed PostgreSQL
        backend, a SQLite file that was moved or restored.
        """
        bind = self._factory.kw.get("bind") if self._factory is not None else None
        if bind is not None:
            bind.dispose()

    def _write(self, batch: list[dict[str, Any]]) -> None:
        assert self._factory is not None
        with self._factory.begin() as session:
            pending = self.recorder.record(session, batch)
        self.recorder.commit(pending)
        self._written += len(batch)

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
        assert self._factory is not None
        try:
            with self._factory.begin() as session:
                closed = close_idle_conversations(
                    session, idle_for=self.inactivity_timeout
                )
        except sa_exc.SQLAlchemyError as error:
            logger.warning("contact history: idle sweep failed (%s)", error)
            return
        if closed:
            logger.info("contact history: closed %d idle conversations", closed)
        self.recorder.forget()
