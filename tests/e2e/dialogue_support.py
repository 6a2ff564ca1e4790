"""Helpers for the dialogue end-to-end tests: talk, pick fixture data, check history."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from channels.identity_assertion import metadata_for
from channels.keys import tracker_key
from crm_store.models import (
    Conversation,
    Customer,
    Handoff,
    Order,
    Ticket,
    VerificationAttempt,
    utcnow,
)
from crm_store.services.history import latest_conversation
from crm_store.services.interactions import transcript
from crm_store.services.returns import return_window_days

HISTORY_TIMEOUT = 5.0


def conversation_of(stack: Any, sender: str) -> Conversation | None:
    """The newest conversation of a REST sender (tracker key ``rest:<sender>``)."""
    with stack.factory() as session:
        conversation = latest_conversation(
            session, tracker_key=tracker_key("rest", sender)
        )
        session.expunge_all()
        return conversation


def history_of(stack: Any, sender: str) -> list:
    """The transcript of a REST sender's newest conversation ([] before any)."""
    with stack.factory() as session:
        conversation = latest_conversation(
            session, tracker_key=tracker_key("rest", sender)
        )
        if conversation is None:
            return []
        return transcript(session, conversation_id=conversation.id)


@dataclass
class Chat:
    """One conversation with a fresh sender id; remembers what was said."""

    stack: Any
    identity: tuple[str, str] | None = None
    sender: str = field(default_factory=lambda: f"e2e-dlg-{uuid.uuid4().hex[:12]}")
    sent: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, Any] | None:
        if self.identity is None:
            return None
        kind, value = self.identity
        return metadata_for(self.stack.identity_secret, self.sender, kind, value)

    def say(self, text: str) -> str:
        """Send ``text``; return the bot's replies joined by newlines."""
        answers = self.stack.send(self.sender, text, self.metadata())
        texts = [a["text"] for a in answers if a.get("text")]
        self.sent.append(text)
        self.replies.extend(texts)
        return "\n".join(texts)

    def assert_history(self) -> list:
        """Every user and bot message is in the contact history, with intents."""
        deadline = time.monotonic() + HISTORY_TIMEOUT
        while True:
            rows = history_of(self.stack, self.sender)
            incoming = Counter(r.text for r in rows if r.direction == "in")
            outgoing = Counter(r.text for r in rows if r.direction == "out")
            missing_in = Counter(self.sent) - incoming
            missing_out = Counter(self.replies) - outgoing
            if not missing_in and not missing_out:
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not in history: user {dict(missing_in)} bot {dict(missing_out)}"
                )
            time.sleep(0.1)
        for row in rows:
            if row.direction == "in" and row.text in self.sent:
                assert row.author == "customer" and row.intent, row.text
                assert row.confidence is not None and 0 <= row.confidence <= 1
            if row.direction == "out":
                assert row.author == "bot"
        return rows


def handoff_of(stack: Any, sender: str) -> Handoff | None:
    """The handoff requested from the REST sender's conversation, if any."""
    with stack.factory() as session:
        row = (
            session.execute(
                select(Handoff).where(
                    Handoff.packet["tracker_key"].as_string() == f"rest:{sender}"
                )
            )
            .scalars()
            .first()
        )
        session.expunge_all()
        return row


def email_of(stack: Any, customer_id: str) -> str:
    with stack.factory() as session:
        return session.get(Customer, customer_id).email


# Orders and customers already handed to a test of this session: the e2e tests
# share one stack and one store, and each test changes what it touches (status,
# verification failures, locks), so no two tests get the same order, and a test
# gets a customer no other test has while one is left.
_TAKEN_ORDERS: set[str] = set()
_TAKEN_CUSTOMERS: set[str] = set()


def pick_order(stack: Any, *where: Any, offset: int = 0) -> Order:
    """Return a fixture order matching ``where``, as untouched by other tests as can be.

    Orders (and customers) with a failed verification attempt are never handed
    out: their locks would change what the test sees. Among the rest, an order
    no other test was given, of a customer no other test has, is preferred
    (skipping the first ``offset`` of them); the scarce statuses (8 paid, 7
    placed orders in the fixture) fall back to an order another test had, as
    long as it still matches ``where``. The order's customer is loaded.
    """
    with stack.factory() as session:
        failed = select(VerificationAttempt).where(
            VerificationAttempt.succeeded.is_(False)
        )
        dirty = list(session.execute(failed).scalars())
        dirty_orders = {a.order_id for a in dirty if a.order_id}
        dirty_customers = {a.customer_id for a in dirty if a.customer_id}
        matching = [
            order
            for order in session.execute(
                select(Order).where(*where).order_by(Order.id)
            ).scalars()
            if order.id not in dirty_orders and order.customer_id not in dirty_customers
        ]
        free = [o for o in matching if o.id not in _TAKEN_ORDERS]
        fresh = [o for o in free if o.customer_id not in _TAKEN_CUSTOMERS]
        pool = fresh[offset:] or free[offset:] or fresh or free or matching
        assert pool, f"fixture has no usable order for {where}"
        order = pool[0]
        _TAKEN_ORDERS.add(order.id)
        _TAKEN_CUSTOMERS.add(order.customer_id)
        _ = order.customer.postcode, order.customer.email
        session.expunge_all()
        return order


def returnable_orders(stack: Any, *, window: int) -> list[Order]:
    """Delivered orders inside their window with no ticket yet, by return window."""
    now = utcnow()
    with stack.factory() as session:
        ticketed = set(
            session.execute(select(Ticket.order_id).where(Ticket.order_id.isnot(None)))
            .scalars()
            .all()
        )
        candidates = session.execute(
            select(Order)
            .where(
                Order.status == "delivered",
                Order.delivered_at > now - dt.timedelta(days=window - 2),
            )
            .order_by(Order.id)
        ).scalars()
        found = [
            o
            for o in candidates
            if o.id not in ticketed and return_window_days(session, order=o) == window
        ]
        for order in found:
            _ = order.customer.email, order.customer.postcode
        session.expunge_all()
        return found


def expired_orders(stack: Any, *, window: int) -> list[Order]:
    """Delivered orders whose return window (``window`` days) has ended."""
    now = utcnow()
    with stack.factory() as session:
        candidates = session.execute(
            select(Order)
            .where(
                Order.status == "delivered",
                Order.delivered_at < now - dt.timedelta(days=window + 2),
                Order.delivered_at > now - dt.timedelta(days=window + 60),
            )
            .order_by(Order.id)
        ).scalars()
        found = [
            o for o in candidates if return_window_days(session, order=o) == window
        ]
        for order in found:
            _ = order.customer.email
        session.expunge_all()
        return found
