"""Handoff requests: one open entry per conversation, a limit per sender."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from crm_store.models import Conversation, Handoff
from crm_store.seeding import DEFAULT_AS_OF
from crm_store.services.handoff import (
    HandoffPacket,
    current_conversation_id,
    request_handoff,
)

NOW = DEFAULT_AS_OF
PACKET = HandoffPacket(
    customer_id=None,
    verified=False,
    verification_method=None,
    channel="chat",
    reason="customer_request",
)


def conversation(session: Session, conversation_id: str, key: str) -> str:
    """A new open conversation of ``key``; its earlier one ends (one open per key)."""
    session.execute(
        update(Conversation)
        .where(Conversation.tracker_key == key, Conversation.status == "open")
        .values(status="closed", outcome="abandoned", ended_at=NOW)
    )
    session.add(
        Conversation(
            id=conversation_id,
            tracker_key=key,
            channel="chat",
            started_at=NOW,
            last_activity_at=NOW,
        )
    )
    session.flush()
    return conversation_id


def count(session: Session) -> int:
    return session.execute(select(func.count()).select_from(Handoff)).scalar_one()


def test_one_open_handoff_per_conversation(session: Session) -> None:
    conv = conversation(session, "svc-hd-1", "rest:svc-hd-1")
    first = request_handoff(session, conversation_id=conv, packet=PACKET, at=NOW)
    assert first.status == "queued" and first.position is not None
    before = count(session)
    for _ in range(5):
        again = request_handoff(session, conversation_id=conv, packet=PACKET, at=NOW)
        assert (again.status, again.handoff_id) == ("already_queued", first.handoff_id)
        assert again.position == first.position
    assert count(session) == before
    session.get(Handoff, first.handoff_id).status = "claimed"
    claimed = request_handoff(session, conversation_id=conv, packet=PACKET, at=NOW)
    assert (claimed.status, claimed.handoff_id, claimed.position) == (
        "already_claimed",
        first.handoff_id,
        None,
    )
    session.get(Handoff, first.handoff_id).status = "resolved"
    new = request_handoff(session, conversation_id=conv, packet=PACKET, at=NOW)
    assert new.status == "queued" and new.handoff_id != first.handoff_id


def test_handoffs_are_limited_per_sender_across_conversations(
    session: Session,
) -> None:
    key = "rest:svc-hd-flood"
    for n in range(3):
        conv = conversation(session, f"svc-hd-f{n}", key)
        done = request_handoff(
            session, conversation_id=conv, packet=PACKET, sender_limit=3, at=NOW
        )
        assert done.status == "queued"
    before = count(session)
    conv = conversation(session, "svc-hd-f3", key)
    refused = request_handoff(
        session, conversation_id=conv, packet=PACKET, sender_limit=3, at=NOW
    )
    assert (refused.status, refused.handoff_id, refused.position) == (
        "limited",
        None,
        None,
    )
    assert count(session) == before
    # Another sender is not affected; the window is one hour.
    other = conversation(session, "svc-hd-o", "rest:svc-hd-other")
    assert (
        request_handoff(
            session, conversation_id=other, packet=PACKET, sender_limit=3, at=NOW
        ).status
        == "queued"
    )
    later = NOW + dt.timedelta(hours=1, minutes=1)
    assert (
        request_handoff(
            session, conversation_id=conv, packet=PACKET, sender_limit=3, at=later
        ).status
        == "queued"
    )


def test_current_conversation_is_opened_once_per_key(session: Session) -> None:
    key = "rest:svc-hd-new"
    first = current_conversation_id(session, tracker_key=key, channel="chat", at=NOW)
    again = current_conversation_id(session, tracker_key=key, channel="chat", at=NOW)
    assert first == again
    row = session.get(Conversation, first)
    assert (row.tracker_key, row.status, row.channel) == (key, "open", "chat")
    conversation(session, "svc-hd-existing", "rest:svc-hd-old")
    assert (
        current_conversation_id(session, tracker_key="rest:svc-hd-old", channel="chat")
        == "svc-hd-existing"
    )
