"""Rasa tracker events -> conversations and interactions in the customer store.

``HistoryRecorder.record`` applies one batch of event dicts in the caller's
transaction, through ``crm_store`` services only: a user message opens or
resumes the conversation of its tracker key (the event's ``sender_id``, e.g.
``rest:…``; a closed one is followed by a new one, its id issued by the store),
goodbye closes it, the ``customer_id`` slot links it to the customer and the
``escalated`` slot marks it escalated. Every message becomes one interaction
row, its text and metadata cleaned by ``channels.text`` first (no NUL or other
control characters, no lone surrogates), whichever channel it came from.

Story steps: the action, slot and active_loop events of a tracker key are
collected in event order and go into ``meta["steps"]`` of the key's next
message row (user or bot), at most ``MAX_STEPS`` of them (the first ones; the
number left out is ``meta["steps_dropped"]``). Rasa logs an action before the
messages it utters, so a bot row's steps start with its action; a user row's
steps are what ran after the previous message (a form's slots, a silent
action). User rows also get ``meta["entities"]`` when NLU found any. Steps
that come after the last message of a batch wait in the recorder (committed
with the batch) for the key's next message; they live in memory only, so a
restart of the writer loses them (the next row then starts without them), and
those of a key silent for ``CARRY_TTL_SECONDS`` are dropped by ``forget``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session

from channels.keys import channel_identity
from channels.names import DEFAULT_CHANNEL, channel_for
from channels.text import clean_text, clean_value, depth_exceeds
from contact_history.events import (
    BOT_META_KEYS,
    CHANNEL_META_KEYS,
    CUSTOMER_SLOT,
    ESCALATED_SLOT,
    GOODBYE_INTENT,
    TRACKED_SLOTS,
    entities_of,
    event_id_for,
    is_recorded,
    is_step,
    occurred_at,
    step_of,
)
from crm_store.errors import InvalidInput
from crm_store.services.conversations import close_conversation, open_conversation
from crm_store.services.history import (
    conversations_by_id,
    latest_conversation,
    link_conversation_customer,
    mark_escalated,
    next_conversation_id,
    touch_open_conversation,
)
from crm_store.services.identities import resolve_identity
from crm_store.services.interactions import NewInteraction, append_interactions

logger = logging.getLogger(__name__)

MAX_META_DEPTH = 5
MAX_STEPS = 50
# Steps waiting for a key's next message are dropped after this long.
CARRY_TTL_SECONDS = 6 * 3600


@dataclass
class PendingSteps:
    """Story steps of a tracker key not yet attached to a message row."""

    steps: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    dropped: int = 0  # steps beyond MAX_STEPS, left out
    since: float = 0.0  # time.monotonic() of the commit that kept them

    def add(self, step: dict[str, Any]) -> None:
        """Append a step, or count it as left out beyond ``MAX_STEPS``."""
        if len(self.steps) < MAX_STEPS:
            self.steps.append(step)
        else:
            self.dropped += 1


class ConversationRow(Protocol):
    """What the recorder reads of a conversation returned by the services."""

    id: str
    channel: str
    customer_id: str | None
    outcome: str | None
    status: str


@dataclass
class ConversationState:
    """What the recorder remembers about a sender's current conversation."""

    conversation_id: str
    channel: str
    customer_id: str | None = None
    escalated: bool = False
    closed: bool = False

    @classmethod
    def of(cls, conversation: ConversationRow) -> ConversationState:
        """The state of a stored conversation."""
        return cls(
            conversation_id=conversation.id,
            channel=conversation.channel,
            customer_id=conversation.customer_id,
            escalated=conversation.outcome == "escalated",
            closed=conversation.status != "open",
        )


class HistoryRecorder:
    """Turns Rasa tracker events into conversations and interactions.

    Not thread-safe: one recorder per writer thread. ``record`` runs in the
    caller's transaction and only updates its cache after ``commit`` is called.
    """

    def __init__(self) -> None:
        """Start with an empty cache of conversation states."""
        self.states: dict[str, ConversationState] = {}
        self.dropped = 0  # invalid events of committed batches, not recorded
        self._dropped_in_batch = 0
        # Steps after a key's last message, waiting for its next one.
        self.carried: dict[str, PendingSteps] = {}
        self._steps_in_batch: dict[str, PendingSteps] = {}
        # Strong references for the batch: the session's identity map is weak, so
        # without them every service lookup of a conversation would query again.
        self._loaded: dict[str, ConversationRow] = {}

    def record(
        self, session: Session, events: Iterable[dict[str, Any]]
    ) -> dict[str, ConversationState]:
        """Apply ``events`` in ``session``; return the updated states to commit."""
        self._loaded = {}
        self._dropped_in_batch = 0
        self._steps_in_batch = {}
        try:
            with session.no_autoflush:
                pending, rows = self._translate(session, events)
            session.flush()  # conversations before the interactions referencing them
            if rows:
                append_interactions(session, items=rows)
        finally:
            self._loaded = {}
        return pending

    def commit(self, pending: dict[str, ConversationState]) -> None:
        """Remember the states of a batch whose transaction committed."""
        self.states.update(pending)
        self.dropped += self._dropped_in_batch
        self._dropped_in_batch = 0
        now = time.monotonic()
        for sender, waiting in self._steps_in_batch.items():
            if waiting.steps or waiting.dropped:
                waiting.since = now
                self.carried[sender] = waiting
            else:
                self.carried.pop(sender, None)
        self._steps_in_batch = {}

    def forget(self) -> None:
        """Drop the cache (after an idle sweep); states are re-read on demand.

        Steps waiting for the next message of a key silent for
        ``CARRY_TTL_SECONDS`` are dropped too (they cannot be re-read).
        """
        self.states = {}
        cutoff = time.monotonic() - CARRY_TTL_SECONDS
        self.carried = {k: v for k, v in self.carried.items() if v.since >= cutoff}

    def _waiting(self, sender: str) -> PendingSteps:
        """The batch's copy of a key's waiting steps."""
        waiting = self._steps_in_batch.get(sender)
        if waiting is None:
            carried = self.carried.get(sender)
            waiting = (
                PendingSteps(list(carried.steps), carried.dropped)
                if carried is not None
                else PendingSteps()
            )
            self._steps_in_batch[sender] = waiting
        return waiting

    def _take_steps(self, sender: str) -> PendingSteps:
        """Hand a key's waiting steps to its message row; the key starts afresh."""
        waiting = self._waiting(sender)
        self._steps_in_batch[sender] = PendingSteps()
        return waiting

    def _keep(self, conversation: ConversationRow | None) -> None:
        if conversation is not None:
            self._loaded[conversation.id] = conversation

    def _prefetch(self, session: Session, events: list[dict[str, Any]]) -> None:
        """Load the cached conversations of a batch in one query, not one per event."""
        wanted = {
            state.conversation_id
            for state in (self.states.get(e.get("sender_id") or "") for e in events)
            if state is not None and not state.closed
        }
        if wanted:
            for conversation in conversations_by_id(session, ids=wanted):
                self._keep(conversation)

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
            if is_step(event):
                self._waiting(sender).add(step_of(event))
                if kind != "slot" or event.get("name") not in TRACKED_SLOTS:
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
                self._keep(
                    touch_open_conversation(
                        session, conversation_id=state.conversation_id, at=at
                    )
                )
                self._add(rows, event, state, "out", "bot", {}, at)
            else:  # a tracked slot
                if state is None:
                    latest = latest_conversation(session, tracker_key=sender)
                    if latest is None:
                        continue
                    state = ConversationState.of(latest)
                _apply_slot(session, state, event, rows)
                pending[sender] = state
        return pending, rows

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
            conversation = touch_open_conversation(
                session, conversation_id=state.conversation_id, at=at
            )
            if conversation is not None:
                self._keep(conversation)
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
        """Find the key's open conversation in the store, or open a new one."""
        latest = latest_conversation(session, tracker_key=sender)
        if latest is not None and (latest.status == "open" or not new_if_closed):
            self._keep(latest)
            touch_open_conversation(session, conversation_id=latest.id, at=at)
            return ConversationState.of(latest)
        conversation_id = next_conversation_id(session, tracker_key=sender)
        channel = channel or DEFAULT_CHANNEL
        customer_id = _customer_of_key(session, sender)
        self._keep(
            open_conversation(
                session,
                conversation_id=conversation_id,
                channel=channel,
                customer_id=customer_id,
                tracker_key=sender,
                at=at,
            )
        )
        return ConversationState(
            conversation_id=conversation_id, channel=channel, customer_id=customer_id
        )

    def _add(
        self,
        rows: list[NewInteraction],
        event: dict[str, Any],
        state: ConversationState,
        direction: str,
        author: str,
        intent: dict[str, Any],
        at: dt.datetime,
    ) -> None:
        """Append the interaction row of a message event (invalid ones are logged).

        The row takes the key's waiting steps, whether it is valid or not.
        """
        waiting = self._take_steps(str(event.get("sender_id")))
        meta: dict[str, Any] = {}
        if direction == "in":
            metadata = event.get("metadata") or {}
            for key in CHANNEL_META_KEYS:
                if metadata.get(key):
                    meta[key] = metadata[key]
        if direction == "out":
            metadata = event.get("metadata") or {}
            for key in BOT_META_KEYS:
                if metadata.get(key):
                    meta[key] = metadata[key]
            buttons = (event.get("data") or {}).get("buttons") or []
            if buttons:
                meta["buttons"] = [
                    b.get("title") for b in buttons if isinstance(b, dict)
                ]
        if depth_exceeds(meta, MAX_META_DEPTH):
            meta = {"dropped": "metadata nested too deeply"}
        # Steps and entities are bounded by construction (events.compact_value).
        if waiting.steps:
            meta["steps"] = waiting.steps
        if waiting.dropped:
            meta["steps_dropped"] = waiting.dropped
        if direction == "in":
            entities = entities_of(event)
            if entities:
                meta["entities"] = entities
        text = event.get("text")
        confidence = intent.get("confidence")
        if confidence is not None:
            confidence = min(max(float(confidence), 0.0), 1.0)
        item = NewInteraction(
            event_id=event_id_for(event),
            channel=state.channel,
            direction=direction,
            author=author,
            text=clean_text(text) if isinstance(text, str) else None,
            customer_id=state.customer_id,
            conversation_id=state.conversation_id,
            intent=intent.get("name"),
            confidence=confidence,
            occurred_at=at,
            meta=clean_value(meta),
        )
        try:
            item.validated_row()
        except InvalidInput as error:
            self._dropped_in_batch += 1
            logger.error(
                "contact history: dropping an invalid %s event of %s "
                "(conversation %s): %s",
                event.get("event"),
                event.get("sender_id"),
                state.conversation_id,
                error,
            )
            return
        rows.append(item)


def _customer_of_key(session: Session, sender: str) -> str | None:
    """The customer (or a new prospect) behind the channel identity of a key.

    A Telegram user id, an e-mail address or a phone number is who the channel
    says wrote; the conversation belongs to that customer's timeline from its
    first message (``resolve_identity`` makes a prospect of an unknown one).
    This links the history only: whether the bot may disclose anything is the
    verification's business (``actions.common``).
    """
    identity = channel_identity(sender)
    if identity is None:
        return None
    kind, value = identity
    try:
        return resolve_identity(session, kind=kind, value=value).customer_id
    except InvalidInput:
        logger.info("history: %s identity of a key not usable; no customer", kind)
        return None


def _apply_slot(
    session: Session,
    state: ConversationState,
    event: dict[str, Any],
    rows: list[NewInteraction],
) -> None:
    """Link the customer or mark the escalation a tracked slot reports."""
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
                rows[index] = dataclasses.replace(row, customer_id=state.customer_id)
    elif name == ESCALATED_SLOT and value is True and not state.escalated:
        state.escalated = True
        mark_escalated(session, conversation_id=state.conversation_id)
