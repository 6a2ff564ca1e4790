"""SQLAlchemy 1.4 models (2.0-style API) of the shared customer store.

Conventions: timestamps are naive UTC ``DateTime`` values; money is ``Numeric``
(Decimal in Python); every vocabulary is a short string validated by the services,
so adding a channel needs no migration.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import declarative_base, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING_CONVENTION)
Base = declarative_base(metadata=metadata)

# SQLite only auto-increments an INTEGER PRIMARY KEY, PostgreSQL wants BIGINT for
# tables that grow without bound (the contact history).
BigId = BigInteger().with_variant(Integer, "sqlite")


class MoneyType(TypeDecorator):
    """Exact money in the database and as ``Decimal`` in Python.

    NUMERIC(12, 2) on PostgreSQL; on SQLite (no decimal type) the stored REAL is
    rounded back to cents, exact for amounts below 10**13.
    """

    impl = Numeric(12, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect):  # noqa: ANN001, ANN201, D102
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Numeric(12, 2, asdecimal=False))
        return dialect.type_descriptor(Numeric(12, 2))

    def process_bind_param(self, value, dialect):  # noqa: ANN001, ANN201, D102
        if value is not None and dialect.name == "sqlite":
            return float(Decimal(value))
        return value

    def process_result_value(self, value, dialect):  # noqa: ANN001, ANN201, D102
        if value is None:
            return None
        return Decimal(str(value)).quantize(CENT)


CENT = Decimal("0.01")
Money = MoneyType()

OPEN_WITH_KEY = "status = 'open' AND tracker_key IS NOT NULL"
CHANNELS = ("chat", "telegram", "sms", "voice", "email", "console")
IDENTITY_KINDS = ("email", "phone", "telegram", "webchat")
ORDER_STATUSES = ("placed", "paid", "shipped", "delivered", "cancelled", "returned")
DIRECTIONS = ("in", "out")
AUTHORS = ("customer", "bot", "agent", "system")


def utcnow() -> dt.datetime:
    """Return the current time as naive UTC (the store's timestamp convention)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Customer(Base):
    """A person we know, or a prospect created for an unknown channel identity."""

    __tablename__ = "customers"

    id = Column(String(32), primary_key=True)
    first_name = Column(String(100))
    last_name = Column(String(100))
    email = Column(String(254))
    phone = Column(String(32))
    postcode = Column(String(16))
    language = Column(String(8), nullable=False, default="en")
    preferred_channel = Column(String(16))
    marketing_opt_in = Column(Boolean, nullable=False, default=False)
    is_prospect = Column(Boolean, nullable=False, default=False)
    created_at = Column(DateTime, nullable=False, default=utcnow)
    erased_at = Column(DateTime)

    identities = relationship("ChannelIdentity", back_populates="customer")
    orders = relationship("Order", back_populates="customer")

    @property
    def display_name(self) -> str:
        """First and last name, or the id for prospects without a name."""
        name = " ".join(p for p in (self.first_name, self.last_name) if p)
        return name or self.id


class ChannelIdentity(Base):
    """A channel address (email, phone, Telegram user id, web chat session).

    ``verified`` means the identity is registered on the account (or was confirmed
    by a one-time code), so a message from it may receive personal data.
    """

    __tablename__ = "channel_identities"
    __table_args__ = (UniqueConstraint("kind", "value", name="uq_identity_kind_value"),)

    id = Column(BigId, primary_key=True, autoincrement=True)
    kind = Column(String(16), nullable=False)
    value = Column(String(254), nullable=False)
    customer_id = Column(
        String(32), ForeignKey("customers.id"), nullable=False, index=True
    )
    verified = Column(Boolean, nullable=False, default=False)
    created_at = Column(DateTime, nullable=False, default=utcnow)

    customer = relationship("Customer", back_populates="identities")


class Product(Base):
    """A catalogue item; ``return_window_days`` counts from delivery."""

    __tablename__ = "products"

    sku = Column(String(32), primary_key=True)
    name = Column(String(200), nullable=False)
    category = Column(String(50), nullable=False)
    price = Column(Money, nullable=False)
    return_window_days = Column(Integer, nullable=False)


class Order(Base):
    """A customer's order; ``id`` is the order number customers quote."""

    __tablename__ = "orders"
    __table_args__ = (Index("ix_orders_customer_placed", "customer_id", "placed_at"),)

    id = Column(String(32), primary_key=True)
    customer_id = Column(String(32), ForeignKey("customers.id"), nullable=False)
    placed_at = Column(DateTime, nullable=False)
    status = Column(String(16), nullable=False)
    subtotal = Column(Money, nullable=False)
    shipping_fee = Column(Money, nullable=False)
    total = Column(Money, nullable=False)
    currency = Column(String(3), nullable=False, default="EUR")
    carrier = Column(String(32))
    tracking_number = Column(String(64))
    # Where the order was delivered (the customer's postcode when it was placed);
    # the postcode a customer proves an order with.
    delivery_postcode = Column(String(16))
    shipped_at = Column(DateTime)
    delivered_at = Column(DateTime)
    cancelled_at = Column(DateTime)
    updated_at = Column(DateTime, nullable=False, default=utcnow, onupdate=utcnow)

    customer = relationship("Customer", back_populates="orders")
    lines = relationship(
        "OrderLine", back_populates="order", order_by="OrderLine.line_no"
    )


class OrderLine(Base):
    """One product line of an order."""

    __tablename__ = "order_lines"
    __table_args__ = (UniqueConstraint("order_id", "line_no", name="uq_order_line"),)

    id = Column(BigId, primary_key=True, autoincrement=True)
    order_id = Column(String(32), ForeignKey("orders.id"), nullable=False, index=True)
    line_no = Column(Integer, nullable=False)
    sku = Column(String(32), ForeignKey("products.sku"), nullable=False)
    product_name = Column(String(200), nullable=False)
    quantity = Column(Integer, nullable=False)
    unit_price = Column(Money, nullable=False)

    order = relationship("Order", back_populates="lines")


class Ticket(Base):
    """A support case: damaged item, return (with RMA), or a general request."""

    __tablename__ = "tickets"

    id = Column(BigId, primary_key=True, autoincrement=True)
    number = Column(String(32), nullable=False, unique=True)
    customer_id = Column(
        String(32), ForeignKey("customers.id"), nullable=False, index=True
    )
    conversation_id = Column(String(128), ForeignKey("conversations.id"))
    order_id = Column(String(32), ForeignKey("orders.id"))
    kind = Column(String(16), nullable=False, default="general")
    subject = Column(String(200), nullable=False)
    description = Column(Text)
    status = Column(String(16), nullable=False, default="open")
    rma_number = Column(String(32), unique=True)
    created_at = Column(DateTime, nullable=False, default=utcnow)
    updated_at = Column(DateTime, nullable=False, default=utcnow, onupdate=utcnow)


class Conversation(Base):
    """One conversation on one channel (a Rasa sender id, an email thread, a call)."""

    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_started", "started_at"),
        Index("ix_conversations_tracker_key", "tracker_key", "started_at"),
        # A customer's next conversation on any channel (re-contact in reports).
        Index("ix_conversations_customer_started", "customer_id", "started_at"),
        # At most one open conversation per tracker key: the history writer and
        # an action may both open the first one at once; the loser reuses it.
        Index(
            "uq_conversations_open_tracker_key",
            "tracker_key",
            unique=True,
            sqlite_where=text(OPEN_WITH_KEY),
            postgresql_where=text(OPEN_WITH_KEY),
        ),
    )

    # Issued by the store (``next_conversation_id``), never derived from a sender.
    id = Column(String(128), primary_key=True)
    # The Rasa tracker key (``rest:…``, ``telegram:…``) the conversation belongs to.
    tracker_key = Column(String(255))
    customer_id = Column(String(32), ForeignKey("customers.id"), index=True)
    channel = Column(String(16), nullable=False)
    started_at = Column(DateTime, nullable=False, default=utcnow)
    last_activity_at = Column(DateTime, nullable=False, default=utcnow)
    ended_at = Column(DateTime)
    status = Column(String(16), nullable=False, default="open")
    outcome = Column(String(16))
    csat = Column(Integer)
    # Set when the bot asked for a rating; a rating is accepted only then, once.
    csat_requested_at = Column(DateTime)


class Interaction(Base):
    """One row of the contact history: a message, handoff, outcome or CSAT answer.

    ``event_id`` is unique so that re-delivered events are stored once.
    """

    __tablename__ = "interactions"
    __table_args__ = (
        Index("ix_interactions_timeline", "customer_id", "occurred_at", "id"),
        Index("ix_interactions_conversation", "conversation_id", "occurred_at", "id"),
        # Counts over a time window (/metrics messages by channel, reports).
        Index("ix_interactions_occurred", "occurred_at", "channel"),
        # Transcript search by intent (manager review). PostgreSQL also has a
        # full-text GIN index on ``text`` (migration 0007, not reflected here).
        Index("ix_interactions_intent", "intent", "conversation_id"),
        CheckConstraint("direction in ('in', 'out')", name="direction"),
    )

    id = Column(BigId, primary_key=True, autoincrement=True)
    event_id = Column(String(128), nullable=False, unique=True)
    customer_id = Column(String(32), ForeignKey("customers.id"))
    conversation_id = Column(String(128), ForeignKey("conversations.id"))
    channel = Column(String(16), nullable=False)
    direction = Column(String(3), nullable=False)
    author = Column(String(16), nullable=False)
    text = Column(Text)
    intent = Column(String(100))
    confidence = Column(Float)
    occurred_at = Column(DateTime, nullable=False)
    meta = Column("metadata", JSON, nullable=False, default=dict)


class Handoff(Base):
    """A request for a human agent with its typed context packet."""

    __tablename__ = "handoffs"
    __table_args__ = (
        Index("ix_handoffs_status_priority", "status", "priority"),
        Index("ix_handoffs_conversation", "conversation_id"),
        Index("ix_handoffs_created", "created_at"),
    )

    id = Column(BigId, primary_key=True, autoincrement=True)
    conversation_id = Column(String(128), ForeignKey("conversations.id"))
    customer_id = Column(String(32), ForeignKey("customers.id"))
    channel = Column(String(16), nullable=False)
    reason = Column(String(50), nullable=False)
    status = Column(String(16), nullable=False, default="waiting")
    priority = Column(Integer, nullable=False, default=0)
    packet = Column(JSON, nullable=False, default=dict)
    created_at = Column(DateTime, nullable=False, default=utcnow)
    claimed_by = Column(BigId, ForeignKey("staff_users.id"))
    claimed_at = Column(DateTime)
    first_response_at = Column(DateTime)
    resolved_at = Column(DateTime)
    resolution_note = Column(Text)
    # Queue order: the arrival time moved earlier by the priority points
    # (``crm_store.services.queue``); the waiting entry with the smallest goes first.
    queue_at = Column(DateTime)
    # The queue position the customer was last told (updates only on change).
    told_position = Column(Integer)


class StaffUser(Base):
    """A console user; ``password_hash`` is a bcrypt hash, never the password."""

    __tablename__ = "staff_users"
    __table_args__ = (CheckConstraint("role in ('agent','manager','admin')", "role"),)

    id = Column(BigId, primary_key=True, autoincrement=True)
    username = Column(String(64), nullable=False, unique=True)
    password_hash = Column(String(128), nullable=False)
    role = Column(String(16), nullable=False)
    active = Column(Boolean, nullable=False, default=True)
    created_at = Column(DateTime, nullable=False, default=utcnow)
    last_login_at = Column(DateTime)


class StaffSession(Base):
    """A console login: only the SHA-256 of the token is stored, with its CSRF token."""

    __tablename__ = "staff_sessions"

    id = Column(BigId, primary_key=True, autoincrement=True)
    token_hash = Column(String(64), nullable=False, unique=True)
    staff_id = Column(BigId, ForeignKey("staff_users.id"), nullable=False, index=True)
    csrf_token = Column(String(64), nullable=False)
    created_at = Column(DateTime, nullable=False, default=utcnow)
    expires_at = Column(DateTime, nullable=False)
    last_seen_at = Column(DateTime, nullable=False, default=utcnow)


class HandoffNote(Base):
    """An agent's internal note on a handoff: never sent to the customer."""

    __tablename__ = "handoff_notes"

    id = Column(BigId, primary_key=True, autoincrement=True)
    handoff_id = Column(BigId, ForeignKey("handoffs.id"), nullable=False, index=True)
    staff_id = Column(BigId, ForeignKey("staff_users.id"), nullable=False)
    text = Column(Text, nullable=False)
    created_at = Column(DateTime, nullable=False, default=utcnow)


class Scorecard(Base):
    """A reviewer's quality score of one conversation (criteria from config)."""

    __tablename__ = "scorecards"
    __table_args__ = (
        UniqueConstraint(
            "conversation_id", "reviewer_id", name="uq_scorecard_reviewer"
        ),
        Index("ix_scorecards_created", "created_at"),
    )

    id = Column(BigId, primary_key=True, autoincrement=True)
    conversation_id = Column(
        String(128), ForeignKey("conversations.id"), nullable=False, index=True
    )
    reviewer_id = Column(BigId, ForeignKey("staff_users.id"), nullable=False)
    # {criterion key: points given}, as configured when the score was given.
    scores = Column(JSON, nullable=False, default=dict)
    # Weighted share of the maximum, 0-100.
    score = Column(Float, nullable=False)
    comment = Column(Text)
    created_at = Column(DateTime, nullable=False, default=utcnow)
    updated_at = Column(DateTime, nullable=False, default=utcnow)


class AuditLog(Base):
    """Who changed what: identity links, erasures, staff actions."""

    __tablename__ = "audit_log"

    id = Column(BigId, primary_key=True, autoincrement=True)
    occurred_at = Column(DateTime, nullable=False, default=utcnow, index=True)
    actor = Column(String(64), nullable=False)
    action = Column(String(64), nullable=False)
    entity_type = Column(String(32), nullable=False)
    entity_id = Column(String(128), nullable=False)
    details = Column(JSON, nullable=False, default=dict)


class Consent(Base):
    """A customer's consent state per purpose (e.g. ``sms`` after STOP/START)."""

    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("customer_id", "kind", name="uq_consent"),)

    id = Column(BigId, primary_key=True, autoincrement=True)
    customer_id = Column(String(32), ForeignKey("customers.id"), nullable=False)
    kind = Column(String(32), nullable=False)
    granted = Column(Boolean, nullable=False)
    source = Column(String(32), nullable=False)
    updated_at = Column(DateTime, nullable=False, default=utcnow)


class CustomerScore(Base):
    """Analytics read model: one row per customer (``crm analytics refresh``).

    Cheap to read for the bot, handoff priority and the console (no joins needed).
    """

    __tablename__ = "customer_scores"
    __table_args__ = (
        Index("ix_customer_scores_tier", "value_tier"),
        Index("ix_customer_scores_segment", "rfm_segment"),
    )

    customer_id = Column(String(32), ForeignKey("customers.id"), primary_key=True)
    as_of = Column(DateTime, nullable=False)
    recency_days = Column(Integer)
    frequency = Column(Integer, nullable=False, default=0)
    monetary = Column(Money, nullable=False, default=0)
    r_score = Column(Integer)
    f_score = Column(Integer)
    m_score = Column(Integer)
    rfm_segment = Column(String(32))
    actual_value = Column(Money)
    clv = Column(Money)
    clv_heuristic = Column(Money)
    value_tier = Column(String(16))
    churn_risk = Column(Float)
    churn_band = Column(String(16))
    explanation = Column(JSON, nullable=False, default=dict)
    input_hash = Column(String(64))
    computed_at = Column(DateTime, nullable=False, default=utcnow)


class Dataset(Base):
    """A fixture directory loaded by ``crm seed`` and the time shift it used."""

    __tablename__ = "datasets"

    name = Column(String(100), primary_key=True)
    as_of = Column(DateTime, nullable=False)
    shift_seconds = Column(BigInteger, nullable=False)
    loaded_at = Column(DateTime, nullable=False, default=utcnow)
    checksum = Column(String(64), nullable=False)


__all__ = [
    "AuditLog",
    "Base",
    "ChannelIdentity",
    "Consent",
    "Conversation",
    "Customer",
    "CustomerScore",
    "Dataset",
    "Handoff",
    "Interaction",
    "Order",
    "OrderLine",
    "Product",
    "StaffUser",
    "Ticket",
    "metadata",
    "utcnow",
]


class VerificationAttempt(Base):
    """One order-number + postcode check, kept for lock-outs and rate limits.

    Counted across conversations and channels: per order, per customer (the
    order's owner), per sender (tracker key) and per client address.
    """

    __tablename__ = "verification_attempts"
    __table_args__ = (
        Index("ix_verification_attempts_order", "order_id", "occurred_at"),
        Index("ix_verification_attempts_customer", "customer_id", "occurred_at"),
        Index("ix_verification_attempts_sender", "sender_key", "occurred_at"),
        Index("ix_verification_attempts_client", "client_key", "occurred_at"),
    )

    id = Column(BigId, primary_key=True, autoincrement=True)
    order_id = Column(String(32))
    customer_id = Column(String(32))
    sender_key = Column(String(255), nullable=False)
    client_key = Column(String(64))
    succeeded = Column(Boolean, nullable=False, default=False)
    occurred_at = Column(DateTime, nullable=False, default=utcnow)


class OneTimeCode(Base):
    """A 6-digit code sent to an address to prove the customer controls it.

    Only a salted hash of the code is stored; ``attempts`` counts wrong entries.
    """

    __tablename__ = "one_time_codes"
    __table_args__ = (Index("ix_one_time_codes_customer", "customer_id", "created_at"),)

    id = Column(BigId, primary_key=True, autoincrement=True)
    customer_id = Column(String(32), ForeignKey("customers.id"), nullable=False)
    purpose = Column(String(32), nullable=False)
    kind = Column(String(16), nullable=False)
    value = Column(String(254), nullable=False)
    code_hash = Column(String(128), nullable=False)
    attempts = Column(Integer, nullable=False, default=0)
    created_at = Column(DateTime, nullable=False, default=utcnow)
    expires_at = Column(DateTime, nullable=False)
    consumed_at = Column(DateTime)


class OutboxMessage(Base):
    """A message to a customer, written before it is sent: one outbound path.

    Codes and notices go to an address (``recipient``); agent replies and queue
    updates go to a conversation (``tracker_key``, ``conversation_id``).
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_status_created", "status", "created_at"),
        Index("ix_outbox_tracker_key_status", "tracker_key", "status"),
    )

    id = Column(BigId, primary_key=True, autoincrement=True)
    customer_id = Column(String(32), ForeignKey("customers.id"))
    channel = Column(String(16), nullable=False)
    recipient = Column(String(254), nullable=False)
    purpose = Column(String(32), nullable=False)
    subject = Column(String(200))
    body = Column(Text, nullable=False)
    status = Column(String(16), nullable=False, default="pending")
    created_at = Column(DateTime, nullable=False, default=utcnow)
    sent_at = Column(DateTime)
    tracker_key = Column(String(255))
    conversation_id = Column(String(128), ForeignKey("conversations.id"))
    handoff_id = Column(BigId, ForeignKey("handoffs.id"))
    # Buttons and other structured parts of a conversation message.
    payload = Column(JSON)
    attempts = Column(Integer, nullable=False, default=0, server_default="0")
    last_error = Column(Text)
    # When a failed delivery may be tried again (None: at once).
    next_attempt_at = Column(DateTime)


class UsedNonce(Base):
    """A signed-assertion nonce already accepted (single use until it expires)."""

    __tablename__ = "used_nonces"

    nonce = Column(String(64), primary_key=True)
    expires_at = Column(DateTime, nullable=False, index=True)


class ChannelReceipt(Base):
    """An inbound item a channel has accepted once (Telegram update, mail, SMS).

    The primary key de-duplicates re-deliveries across restarts and processes.
    """

    __tablename__ = "channel_receipts"

    channel = Column(String(16), primary_key=True)
    external_id = Column(String(255), primary_key=True)
    received_at = Column(DateTime, nullable=False, default=utcnow, index=True)


class EmailMessage(Base):
    """A mail in or out of a thread: threading headers of e-mail conversations."""

    __tablename__ = "email_messages"
    __table_args__ = (Index("ix_email_messages_thread", "address", "thread_id"),)

    message_id = Column(String(255), primary_key=True)
    thread_id = Column(String(32), nullable=False)
    address = Column(String(254), nullable=False)
    direction = Column(String(3), nullable=False)  # in | out
    subject = Column(String(200))
    # The buttons offered in an outbound mail, answered by number.
    buttons = Column(JSON)
    created_at = Column(DateTime, nullable=False, default=utcnow)


class ChannelChoices(Base):
    """Buttons last offered on a text-only channel (SMS, voice), answered by number."""

    __tablename__ = "channel_choices"

    tracker_key = Column(String(255), primary_key=True)
    buttons = Column(JSON, nullable=False)
    updated_at = Column(DateTime, nullable=False, default=utcnow)
