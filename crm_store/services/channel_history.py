"""What a channel answers itself (SMS keywords, media it cannot read) on the timeline.

Most messages reach the contact history through the event broker, because Rasa
handles them. A few never reach Rasa: an SMS STOP, START or HELP, a sticker on
Telegram. The channel records those exchanges here, so agents see them with
the rest of the conversation: the customer's line and the channel's answer, in
the tracker key's current conversation (opened if none; the history writer
continues it).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from crm_store.models import Conversation, utcnow
from crm_store.services.handoff import current_conversation_id
from crm_store.services.identities import resolve_identity
from crm_store.services.interactions import NewInteraction, append_interactions


def record_exchange(
    session: Session,
    *,
    tracker_key: str,
    channel: str,
    event_id: str,
    inbound_text: str,
    answer_text: str | None,
    intent: str | None = None,
    customer_id: str | None = None,
    identity: tuple[str, str] | None = None,
    at: dt.datetime | None = None,
) -> str:
    """Append the customer's line and the channel's answer; return the conversation.

    Idempotent by ``event_id`` (``<event_id>:in`` / ``:out``). ``customer_id``
    names the owner when the conversation is new, else the channel
    ``identity`` ``(kind, value)`` does (its customer, or a new prospect); an
    existing conversation keeps its own.

    Raises:
        InvalidInput: unknown channel or over-long text.
    """
    at = at or utcnow()
    if customer_id is None and identity is not None:
        customer_id = resolve_identity(
            session, kind=identity[0], value=identity[1]
        ).customer_id
    conversation_id = current_conversation_id(
        session,
        tracker_key=tracker_key,
        channel=channel,
        customer_id=customer_id,
        at=at,
    )
    conversation = session.get(Conversation, conversation_id)
    owner = conversation.customer_id if conversation is not None else customer_id
    items = [
        NewInteraction(
            event_id=f"{event_id}:in",
            channel=channel,
            direction="in",
            author="customer",
            text=inbound_text,
            customer_id=owner,
            conversation_id=conversation_id,
            intent=intent,
            occurred_at=at,
        )
    ]
    if answer_text:
        items.append(
            NewInteraction(
                event_id=f"{event_id}:out",
                channel=channel,
                direction="out",
                author="bot",
                text=answer_text,
                customer_id=owner,
                conversation_id=conversation_id,
                occurred_at=at + dt.timedelta(microseconds=1),
            )
        )
    append_interactions(session, items=items)
    return conversation_id
