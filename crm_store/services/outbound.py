"""Messages to a conversation (agent replies, queue updates) through the outbox.

A message is one ``outbox`` row (``pending`` until a channel delivers it,
addressed by tracker key) and, in the same transaction, one ``Interaction``
(event id ``outbox:<id>``), so the contact history shows it at once, whether or
not the customer's channel has picked it up yet. Delivery is the channels'
business: they read ``pending_messages`` and call ``mark_sent`` / ``mark_failed``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput, NotFound
from crm_store.models import Conversation, Handoff, OutboxMessage, utcnow
from crm_store.services.history import stored_tracker_key, touch_open_conversation
from crm_store.services.interactions import NewInteraction, append_interaction

AUTHORS = ("agent", "system", "bot")
PURPOSES = ("agent_reply", "queue_update", "system_notice", "bot_reply")
MAX_TEXT = 4000
MAX_BUTTONS = 10
MAX_BUTTON_TITLE = 80
MAX_BUTTON_PAYLOAD = 200
MAX_ERROR = 500


@dataclass(frozen=True)
class ConversationMessage:
    """One outbound conversation message as plain values.

    ``buttons``: ``[{"title": ..., "payload": ...}]`` (Rasa's button format).
    """

    id: int
    tracker_key: str
    conversation_id: str | None
    channel: str
    handoff_id: int | None
    author: str
    purpose: str
    text: str
    buttons: list[dict] = field(default_factory=list)
    created_at: dt.datetime | None = None
    status: str = "pending"
    attempts: int = 0
    recipient: str | None = None
    subject: str | None = None
    last_error: str | None = None


def _message(row: OutboxMessage) -> ConversationMessage:
    payload = row.payload or {}
    return ConversationMessage(
        id=row.id,
        tracker_key=row.tracker_key or row.recipient,
        conversation_id=row.conversation_id,
        channel=row.channel,
        handoff_id=row.handoff_id,
        author=payload.get("author") or "system",
        purpose=row.purpose,
        text=row.body,
        buttons=list(payload.get("buttons") or []),
        created_at=row.created_at,
        status=row.status,
        attempts=row.attempts or 0,
        recipient=row.recipient,
        subject=row.subject,
        last_error=row.last_error,
    )


def clean_text(text: object) -> str:
    """Strip a message; raise ``InvalidInput`` unless it has 1..4000 characters."""
    if not isinstance(text, str):
        raise InvalidInput("a message must be text")
    cleaned = text.strip()
    if not cleaned:
        raise InvalidInput("a message must not be empty")
    if len(cleaned) > MAX_TEXT:
        raise InvalidInput(f"a message is at most {MAX_TEXT} characters")
    return cleaned


def _buttons(buttons: object) -> list[dict]:
    if buttons is None:
        return []
    if not isinstance(buttons, list | tuple) or len(buttons) > MAX_BUTTONS:
        raise InvalidInput(f"buttons must be a list of at most {MAX_BUTTONS}")
    cleaned = []
    for button in buttons:
        if not isinstance(button, dict):
            raise InvalidInput("each button is {'title': ..., 'payload': ...}")
        title, payload = button.get("title"), button.get("payload")
        if not isinstance(title, str) or not 0 < len(title.strip()) <= MAX_BUTTON_TITLE:
            raise InvalidInput(f"a button title has 1..{MAX_BUTTON_TITLE} characters")
        if (
            not isinstance(payload, str)
            or not 0 < len(payload.strip()) <= MAX_BUTTON_PAYLOAD
        ):
            raise InvalidInput(
                f"a button payload has 1..{MAX_BUTTON_PAYLOAD} characters"
            )
        cleaned.append({"title": title.strip(), "payload": payload.strip()})
    return cleaned


def _handoff_for(
    session: Session, conversation: Conversation, handoff_id: int | None
) -> Handoff | None:
    if handoff_id is None:
        return (
            session.execute(
                select(Handoff)
                .where(
                    Handoff.conversation_id == conversation.id,
                    Handoff.status == "claimed",
                )
                .order_by(Handoff.claimed_at.desc())
                .limit(1)
            )
            .scalars()
            .first()
        )
    handoff = session.get(Handoff, handoff_id)
    if handoff is None:
        raise NotFound(f"handoff {handoff_id} not found")
    if handoff.conversation_id != conversation.id:
        raise InvalidInput(f"handoff {handoff_id} belongs to another conversation")
    return handoff


def queue_conversation_message(
    session: Session,
    *,
    conversation_id: str,
    text: str,
    author: str,
    purpose: str,
    buttons: list[dict] | None = None,
    handoff_id: int | None = None,
    staff_username: str | None = None,
    at: dt.datetime | None = None,
) -> ConversationMessage:
    """Write a message to a conversation: outbox row + timeline interaction.

    Bot answers (author ``bot``, purpose ``bot_reply``: a hand-back turn on a
    channel that cannot take them live) get only the outbox row: the contact
    history already has them from the event broker.

    The outbox row is ``pending``, on the conversation's channel, addressed to
    its tracker key. An agent reply sets the handoff's ``first_response_at``
    once (the given handoff, else the conversation's claimed one) and keeps the
    conversation from idling out.

    Raises:
        InvalidInput: bad author/purpose/buttons, empty or over-long text, a
            conversation without a tracker key (unreachable), or a handoff of
            another conversation.
        NotFound: no such conversation or handoff.
    """
    if author not in AUTHORS:
        raise InvalidInput(f"author must be one of {AUTHORS}")
    if purpose not in PURPOSES:
        raise InvalidInput(f"purpose must be one of {PURPOSES}")
    if (author == "bot") != (purpose == "bot_reply"):
        raise InvalidInput("bot answers, and only they, have the purpose bot_reply")
    cleaned = clean_text(text)
    button_list = _buttons(buttons)
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        raise NotFound(f"conversation {conversation_id} not found")
    if not conversation.tracker_key:
        raise InvalidInput(
            f"conversation {conversation_id} has no tracker key: the customer "
            "cannot be reached through it"
        )
    handoff = _handoff_for(session, conversation, handoff_id)
    at = at or utcnow()
    row = OutboxMessage(
        customer_id=conversation.customer_id,
        channel=conversation.channel,
        recipient=conversation.tracker_key,
        tracker_key=conversation.tracker_key,
        conversation_id=conversation.id,
        handoff_id=handoff.id if handoff is not None else None,
        purpose=purpose,
        body=cleaned,
        payload={"author": author, "buttons": button_list, "staff": staff_username},
        status="pending",
        attempts=0,
        created_at=at,
    )
    session.add(row)
    session.flush()
    if author == "bot":
        return _message(row)
    meta: dict = {
        "purpose": purpose,
        "staff": staff_username,
        "handoff_id": row.handoff_id,
    }
    if button_list:
        meta["buttons"] = button_list
    append_interaction(
        session,
        item=NewInteraction(
            event_id=f"outbox:{row.id}",
            channel=conversation.channel,
            direction="out",
            author=author,
            text=cleaned,
            customer_id=conversation.customer_id,
            conversation_id=conversation.id,
            occurred_at=at,
            meta=meta,
        ),
    )
    touch_open_conversation(session, conversation_id=conversation.id, at=at)
    if handoff is not None and author == "agent" and purpose == "agent_reply":
        session.execute(
            update(Handoff)
            .where(Handoff.id == handoff.id, Handoff.first_response_at.is_(None))
            .values(first_response_at=at)
            .execution_options(synchronize_session="fetch")
        )
    return _message(row)


def queue_address_message(
    session: Session,
    *,
    tracker_key: str,
    channel: str,
    recipient: str,
    text: str,
    author: str = "bot",
    purpose: str = "bot_reply",
    buttons: list[dict] | None = None,
    customer_id: str | None = None,
    at: dt.datetime | None = None,
) -> ConversationMessage:
    """Queue a message to a tracker key whose conversation may not be stored yet.

    Bot answers a channel sends on its own (an e-mail reply collecting a turn's
    answers) go here: the contact history gets them from the event broker, so
    only the outbox row is written (``pending``, ``recipient`` the address).

    Raises:
        InvalidInput: bad author/purpose/buttons, empty text, no key/recipient.
    """
    if author not in AUTHORS:
        raise InvalidInput(f"author must be one of {AUTHORS}")
    if purpose not in PURPOSES:
        raise InvalidInput(f"purpose must be one of {PURPOSES}")
    if not tracker_key or not recipient or not channel:
        raise InvalidInput("a tracker key, a channel and a recipient are required")
    row = OutboxMessage(
        customer_id=customer_id,
        channel=channel,
        recipient=recipient[:254],
        tracker_key=stored_tracker_key(tracker_key),
        purpose=purpose,
        body=clean_text(text),
        payload={"author": author, "buttons": _buttons(buttons), "staff": None},
        status="pending",
        attempts=0,
        created_at=at or utcnow(),
    )
    session.add(row)
    session.flush()
    return _message(row)


def record_failed_delivery(
    session: Session,
    *,
    tracker_key: str,
    channel: str,
    text: str,
    error: str,
    buttons: list[dict] | None = None,
    at: dt.datetime | None = None,
) -> ConversationMessage:
    """Record a bot answer the channel could not deliver (status ``failed``).

    The row names the key's latest conversation when there is one, so agents
    see the failure with the conversation (``failed_deliveries``). ``error``
    must not hold personal data.
    """
    conversation_id = session.execute(
        select(Conversation.id)
        .where(Conversation.tracker_key == stored_tracker_key(tracker_key))
        .order_by(Conversation.started_at.desc())
        .limit(1)
    ).scalar()
    row = OutboxMessage(
        channel=channel,
        recipient=tracker_key[:254],
        tracker_key=stored_tracker_key(tracker_key),
        conversation_id=conversation_id,
        purpose="bot_reply",
        body=(text or "(empty)")[:MAX_TEXT],
        payload={"author": "bot", "buttons": list(buttons or []), "staff": None},
        status="failed",
        attempts=1,
        last_error=(error or "unknown error")[:MAX_ERROR],
        created_at=at or utcnow(),
    )
    session.add(row)
    session.flush()
    return _message(row)


def failed_deliveries(
    session: Session,
    *,
    conversation_id: str | None = None,
    tracker_key: str | None = None,
) -> list[ConversationMessage]:
    """Messages of a conversation (or tracker key) that could not be delivered."""
    query = select(OutboxMessage).where(OutboxMessage.status == "failed")
    if conversation_id is not None:
        query = query.where(OutboxMessage.conversation_id == conversation_id)
    elif tracker_key is not None:
        query = query.where(
            OutboxMessage.tracker_key == stored_tracker_key(tracker_key)
        )
    else:
        raise InvalidInput("a conversation id or a tracker key is required")
    rows = session.execute(
        query.order_by(OutboxMessage.created_at, OutboxMessage.id).limit(100)
    ).scalars()
    return [_message(row) for row in rows]


def pending_messages(
    session: Session, tracker_key: str, *, limit: int = 50
) -> list[ConversationMessage]:
    """The tracker key's undelivered messages, oldest first."""
    if not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise InvalidInput("limit must be between 1 and 1000")
    if not tracker_key:
        return []
    rows = session.execute(
        select(OutboxMessage)
        .where(
            OutboxMessage.tracker_key == stored_tracker_key(tracker_key),
            OutboxMessage.status == "pending",
        )
        .order_by(OutboxMessage.created_at, OutboxMessage.id)
        .limit(limit)
    ).scalars()
    return [_message(row) for row in rows]


def pending_tracker_keys(session: Session, prefix: str) -> list[str]:
    """Tracker keys starting with ``prefix`` (e.g. ``web:``) with pending messages."""
    if not isinstance(prefix, str) or not prefix:
        raise InvalidInput("a tracker key prefix is required, e.g. 'web:'")
    rows = session.execute(
        select(OutboxMessage.tracker_key)
        .where(
            OutboxMessage.status == "pending",
            OutboxMessage.tracker_key.startswith(prefix, autoescape=True),
        )
        .distinct()
        .order_by(OutboxMessage.tracker_key)
    ).scalars()
    return list(rows)


def mark_sent(
    session: Session, ids: list[int], *, at: dt.datetime | None = None
) -> int:
    """Mark pending messages sent; return how many changed (others are left)."""
    ids = [int(i) for i in ids]
    if not ids:
        return 0
    result = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(ids), OutboxMessage.status == "pending")
        .values(status="sent", sent_at=at or utcnow())
        .execution_options(synchronize_session="fetch")
    )
    return result.rowcount or 0


def due_messages(
    session: Session, *, channel: str, now: dt.datetime | None = None, limit: int = 50
) -> list[ConversationMessage]:
    """Pending messages of ``channel`` whose (re)try time has come, oldest first.

    Covers both kinds of outbox rows: conversation messages (``tracker_key``)
    and codes/notices to an address (``recipient``, ``subject``).
    """
    now = now or utcnow()
    rows = session.execute(
        select(OutboxMessage)
        .where(
            OutboxMessage.status == "pending",
            OutboxMessage.channel == channel,
            (OutboxMessage.next_attempt_at.is_(None))
            | (OutboxMessage.next_attempt_at <= now),
        )
        .order_by(OutboxMessage.created_at, OutboxMessage.id)
        .limit(limit)
    ).scalars()
    return [_message(row) for row in rows]


def claim_for_delivery(
    session: Session,
    message_id: int,
    *,
    lease_until: dt.datetime,
    now: dt.datetime | None = None,
) -> bool:
    """Take a due pending message for one sender until ``lease_until``.

    One conditional update: of several delivery workers exactly one gets True,
    and a worker that dies holding the lease lets the message come due again.
    """
    now = now or utcnow()
    result = session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == message_id,
            OutboxMessage.status == "pending",
            (OutboxMessage.next_attempt_at.is_(None))
            | (OutboxMessage.next_attempt_at <= now),
        )
        .values(next_attempt_at=lease_until)
        .execution_options(synchronize_session=False)
    )
    return (result.rowcount or 0) == 1


def mark_failed(
    session: Session,
    message_id: int,
    error: str,
    *,
    final: bool,
    retry_at: dt.datetime | None = None,
) -> ConversationMessage:
    """Count a failed delivery (``attempts`` + 1); ``final`` gives up (``failed``).

    ``retry_at``: when the message is due again (None: at once).
    ``error`` must not hold personal data (it is stored; cut to 500 characters).

    Raises:
        NotFound: no such message.
    """
    row = session.get(OutboxMessage, message_id)
    if row is None:
        raise NotFound(f"outbox message {message_id} not found")
    row.attempts = (row.attempts or 0) + 1
    row.last_error = (error or "unknown error")[:MAX_ERROR]
    row.next_attempt_at = retry_at
    if final and row.status == "pending":
        row.status = "failed"
    session.flush()
    return _message(row)
