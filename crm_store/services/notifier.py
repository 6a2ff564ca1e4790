"""Outbound messages to customer addresses: one-time codes and notices.

Every message is first written to the ``outbox`` table, then handed to a
``Sender``. The default :class:`OutboxOnly` sends nothing itself: the row stays
``pending`` and a delivery worker takes it. E-mail rows are sent by the e-mail
process's worker through the SMTP relay (``channels.email_worker``: retries,
then ``sent`` or ``failed``); SMS rows by the same process's SMS worker through
Twilio (``channels.sms_worker``; never to a number that replied STOP). A
channel that sends at once plugs in by implementing :class:`Sender` and being
passed to :class:`Notifier`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput
from crm_store.models import OutboxMessage, utcnow

CHANNELS = ("email", "sms")
STATUSES = ("pending", "sent", "failed")


@dataclass(frozen=True)
class OutboxEntry:
    """One outbox row as plain values."""

    id: int
    customer_id: str | None
    channel: str
    recipient: str
    purpose: str
    subject: str | None
    body: str
    status: str
    created_at: dt.datetime
    sent_at: dt.datetime | None


class Sender(Protocol):
    """Delivers an outbox message on its channel.

    ``deliver`` returns True when the message left (the row becomes ``sent``),
    False when it stays ``pending`` for a later attempt or a relay worker.
    """

    def deliver(self, message: OutboxEntry) -> bool:
        """Send ``message``; tell whether it was sent."""
        ...


class OutboxOnly:
    """The sender of the outbox alone: nothing leaves, rows stay ``pending``."""

    def deliver(self, message: OutboxEntry) -> bool:  # noqa: D102
        return False


def _entry(row: OutboxMessage) -> OutboxEntry:
    return OutboxEntry(
        id=row.id,
        customer_id=row.customer_id,
        channel=row.channel,
        recipient=row.recipient,
        purpose=row.purpose,
        subject=row.subject,
        body=row.body,
        status=row.status,
        created_at=row.created_at,
        sent_at=row.sent_at,
    )


def _text(name: str, value: object, max_len: int | None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{name} must be a non-empty string")
    if max_len is not None and len(value) > max_len:
        raise InvalidInput(f"{name} is longer than {max_len} characters")
    return value


class Notifier:
    """Writes each message to the outbox and hands it to the sender."""

    def __init__(self, sender: Sender | None = None) -> None:
        self.sender: Sender = sender if sender is not None else OutboxOnly()

    def notify(
        self,
        session: Session,
        *,
        customer_id: str | None,
        channel: str,
        recipient: str,
        purpose: str,
        subject: str | None,
        body: str,
        now: dt.datetime | None = None,
    ) -> OutboxEntry:
        """Record a message to ``recipient`` on ``channel`` and try to send it.

        Raises:
            InvalidInput: unknown channel, empty or over-long fields.
        """
        if channel not in CHANNELS:
            raise InvalidInput(f"channel must be one of {CHANNELS}")
        _text("recipient", recipient, 254)
        _text("purpose", purpose, 32)
        _text("body", body, None)
        if subject is not None:
            _text("subject", subject, 200)
        now = now or utcnow()
        row = OutboxMessage(
            customer_id=customer_id,
            channel=channel,
            recipient=recipient,
            purpose=purpose,
            subject=subject,
            body=body,
            status="pending",
            created_at=now,
        )
        session.add(row)
        session.flush()
        if self.sender.deliver(_entry(row)):
            row.status = "sent"
            row.sent_at = utcnow()
            session.flush()
        return _entry(row)


def list_outbox(
    session: Session,
    *,
    status: str | None = None,
    recipient: str | None = None,
    purpose: str | None = None,
    limit: int = 50,
) -> list[OutboxEntry]:
    """Return outbox messages, newest first, optionally filtered.

    Raises:
        InvalidInput: unknown status or a limit outside 1..1000.
    """
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {STATUSES}")
    if not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise InvalidInput("limit must be between 1 and 1000")
    query = select(OutboxMessage)
    if status is not None:
        query = query.where(OutboxMessage.status == status)
    if recipient is not None:
        query = query.where(OutboxMessage.recipient == recipient)
    if purpose is not None:
        query = query.where(OutboxMessage.purpose == purpose)
    query = query.order_by(OutboxMessage.created_at.desc(), OutboxMessage.id.desc())
    return [_entry(row) for row in session.execute(query.limit(limit)).scalars()]
