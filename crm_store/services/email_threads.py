"""E-mail threads: which conversation a mail belongs to, and how to answer in it.

Every mail in or out is an ``email_messages`` row (its ``Message-ID``, the
thread, the customer's address). An inbound mail joins the thread of the first
message it names in ``In-Reply-To`` or ``References`` *that was exchanged with
the same address*, else it starts a thread of its own. The tracker key of an
e-mail conversation is ``email:<address>#<thread id>`` (``thread_key``), so one
thread is one conversation and a stranger who cites someone else's
``Message-ID`` only reaches a thread under their own address.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput
from crm_store.models import EmailMessage, utcnow

THREAD_SEPARATOR = "#"
MAX_MESSAGE_ID = 255
MAX_ADDRESS = 254
MAX_SUBJECT = 200
MAX_REFERENCES = 20  # the newest ones are looked up
THREAD_ID_CHARS = 16


@dataclass(frozen=True)
class InboundThread:
    """Where an inbound mail goes: ``duplicate`` means it was seen already."""

    thread_id: str
    tracker_raw_id: str  # "<address>#<thread id>" (the tracker key without "email:")
    is_new: bool
    duplicate: bool


@dataclass(frozen=True)
class ThreadState:
    """What a reply in a thread needs: subject, whom it answers, the chain."""

    thread_id: str
    address: str
    subject: str | None
    last_inbound_id: str | None
    references: list[str] = field(default_factory=list)
    last_buttons: list[dict] = field(default_factory=list)


def new_thread_id(message_id: str) -> str:
    """The thread id a mail starting a thread gets (a hash of its Message-ID)."""
    return hashlib.sha256(message_id.encode("utf-8", "replace")).hexdigest()[
        :THREAD_ID_CHARS
    ]


def thread_key(address: str, thread_id: str) -> str:
    """The raw tracker id ``<address>#<thread id>`` of a thread."""
    return f"{address}{THREAD_SEPARATOR}{thread_id}"


def split_thread_key(raw_id: str) -> tuple[str, str | None]:
    """``(address, thread id)`` of a raw e-mail tracker id (thread None if absent)."""
    address, separator, thread = raw_id.rpartition(THREAD_SEPARATOR)
    if not separator or not address or not thread:
        return raw_id, None
    return address, thread


def _text(name: str, value: object, max_len: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{name} must be a non-empty string")
    if len(value) > max_len:
        raise InvalidInput(f"{name} is longer than {max_len} characters")
    return value.strip()


def _subject(subject: str | None) -> str | None:
    if not subject:
        return None
    return subject.strip()[:MAX_SUBJECT] or None


def place_inbound(
    session: Session,
    *,
    message_id: str,
    address: str,
    subject: str | None,
    in_reply_to: str | None = None,
    references: Iterable[str] = (),
    at: dt.datetime | None = None,
) -> InboundThread:
    """Record an inbound mail and return its thread (see the module docstring).

    A ``message_id`` seen before gives ``duplicate=True`` and records nothing.
    The caller commits.

    Raises:
        InvalidInput: empty or over-long message id or address.
    """
    message_id = _text("message_id", message_id, MAX_MESSAGE_ID)
    address = _text("address", address, MAX_ADDRESS).lower()
    seen = session.get(EmailMessage, message_id)
    if seen is not None:
        return InboundThread(
            seen.thread_id, thread_key(seen.address, seen.thread_id), False, True
        )
    cited = [r for r in [in_reply_to, *reversed(list(references))] if r]
    cited = [c[:MAX_MESSAGE_ID] for c in cited][: MAX_REFERENCES + 1]
    thread_id = None
    if cited:
        rows = session.execute(
            select(EmailMessage.message_id, EmailMessage.thread_id).where(
                EmailMessage.message_id.in_(cited), EmailMessage.address == address
            )
        ).all()
        by_id = dict(rows)
        thread_id = next((by_id[c] for c in cited if c in by_id), None)
    is_new = thread_id is None
    if thread_id is None:
        thread_id = new_thread_id(message_id)
    session.add(
        EmailMessage(
            message_id=message_id,
            thread_id=thread_id,
            address=address,
            direction="in",
            subject=_subject(subject),
            created_at=at or utcnow(),
        )
    )
    session.flush()
    return InboundThread(thread_id, thread_key(address, thread_id), is_new, False)


def record_outbound(
    session: Session,
    *,
    message_id: str,
    address: str,
    thread_id: str,
    subject: str | None,
    buttons: list[dict] | None = None,
    at: dt.datetime | None = None,
) -> None:
    """Record a mail sent in a thread, so answers to it find the thread."""
    message_id = _text("message_id", message_id, MAX_MESSAGE_ID)
    address = _text("address", address, MAX_ADDRESS).lower()
    session.add(
        EmailMessage(
            message_id=message_id,
            thread_id=_text("thread_id", thread_id, 32),
            address=address,
            direction="out",
            subject=_subject(subject),
            buttons=list(buttons or []) or None,
            created_at=at or utcnow(),
        )
    )
    session.flush()


def thread_state(session: Session, *, address: str, thread_id: str) -> ThreadState:
    """The thread's subject, last inbound Message-ID, chain and last buttons.

    ``references`` lists the thread's Message-IDs oldest first (at most
    ``MAX_REFERENCES``: the first and the newest). An unknown thread gives an
    empty state (a reply then starts a fresh chain).
    """
    address = address.lower()
    rows = (
        session.execute(
            select(EmailMessage)
            .where(EmailMessage.address == address, EmailMessage.thread_id == thread_id)
            .order_by(EmailMessage.created_at, EmailMessage.message_id)
        )
        .scalars()
        .all()
    )
    subject = next((r.subject for r in rows if r.subject), None)
    inbound = [r for r in rows if r.direction == "in"]
    outbound = [r for r in rows if r.direction == "out"]
    ids = [r.message_id for r in rows]
    if len(ids) > MAX_REFERENCES:
        ids = ids[:1] + ids[-(MAX_REFERENCES - 1) :]
    # A number the customer answers refers to the last mail we sent.
    last_buttons = list(outbound[-1].buttons or []) if outbound else []
    return ThreadState(
        thread_id=thread_id,
        address=address,
        subject=subject,
        last_inbound_id=inbound[-1].message_id if inbound else None,
        references=ids,
        last_buttons=last_buttons,
    )


def forget_inbound(session: Session, *, message_id: str) -> bool:
    """Remove an inbound mail's row (it was not handled: the sender will retry).

    Returns whether a row was removed. The caller commits.
    """
    row = session.get(EmailMessage, message_id)
    if row is None or row.direction != "in":
        return False
    session.delete(row)
    session.flush()
    return True


def inbound_count(session: Session, *, address: str, since: dt.datetime) -> int:
    """How many mails ``address`` sent us since ``since`` (for the reply limit)."""
    return session.execute(
        select(func.count())
        .select_from(EmailMessage)
        .where(
            EmailMessage.address == address.lower(),
            EmailMessage.direction == "in",
            EmailMessage.created_at >= since,
        )
    ).scalar_one()
