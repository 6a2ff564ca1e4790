"""Conversation messages via the outbox: timeline entry, first response, delivery."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput, NotFound
from crm_store.models import Conversation, Handoff, Interaction, OutboxMessage
from crm_store.seeding import DEFAULT_AS_OF
from crm_store.services import outbound, queue
from crm_store.services.handoff import HandoffPacket, request_handoff
from crm_store.services.interactions import transcript
from crm_store.services.staff import create_staff

NOW = DEFAULT_AS_OF


def conversation(
    session: Session, conv_id: str, key: str | None, customer: str | None = "C0001"
) -> str:
    session.add(
        Conversation(
            id=conv_id,
            tracker_key=key,
            channel="chat",
            customer_id=customer,
            started_at=NOW,
            last_activity_at=NOW,
        )
    )
    session.flush()
    return conv_id


def handoff_for(session: Session, conv_id: str) -> int:
    packet = HandoffPacket(
        customer_id="C0001",
        verified=True,
        verification_method="order_postcode",
        channel="chat",
        reason="customer_request",
    )
    result = request_handoff(session, conversation_id=conv_id, packet=packet, at=NOW)
    return result.handoff_id


def test_agent_reply_is_in_the_timeline_and_sets_first_response(
    session: Session,
) -> None:
    conv = conversation(session, "svc-out-1", "web:svc-out-1")
    handoff_id = handoff_for(session, conv)
    at = NOW + dt.timedelta(minutes=3)
    message = outbound.queue_conversation_message(
        session,
        conversation_id=conv,
        text="  Hello, this is Anna from support.  ",
        author="agent",
        purpose="agent_reply",
        handoff_id=handoff_id,
        staff_username="anna",
        at=at,
    )
    assert message.text == "Hello, this is Anna from support."
    assert (message.tracker_key, message.channel, message.status) == (
        "web:svc-out-1",
        "chat",
        "pending",
    )
    assert (message.author, message.purpose, message.handoff_id) == (
        "agent",
        "agent_reply",
        handoff_id,
    )
    row = session.get(OutboxMessage, message.id)
    assert (row.recipient, row.customer_id, row.conversation_id) == (
        "web:svc-out-1",
        "C0001",
        conv,
    )
    history = transcript(session, conversation_id=conv)
    assert [(i.event_id, i.direction, i.author, i.text) for i in history] == [
        (f"outbox:{message.id}", "out", "agent", "Hello, this is Anna from support.")
    ]
    assert history[0].meta == {
        "purpose": "agent_reply",
        "staff": "anna",
        "handoff_id": handoff_id,
    }
    assert history[0].customer_id == "C0001" and history[0].occurred_at == at
    handoff = session.get(Handoff, handoff_id)
    assert handoff.first_response_at == at
    # A later reply keeps the first response time; the conversation stays active.
    later = at + dt.timedelta(minutes=5)
    outbound.queue_conversation_message(
        session,
        conversation_id=conv,
        text="Still there?",
        author="agent",
        purpose="agent_reply",
        handoff_id=handoff_id,
        at=later,
    )
    session.refresh(handoff)
    assert handoff.first_response_at == at
    assert session.get(Conversation, conv).last_activity_at == later


def test_reply_without_handoff_id_uses_the_claimed_handoff(session: Session) -> None:
    conv = conversation(session, "svc-out-2", "web:svc-out-2")
    handoff_id = handoff_for(session, conv)
    system = outbound.queue_conversation_message(
        session,
        conversation_id=conv,
        text="You are number 2 in the queue.",
        author="system",
        purpose="queue_update",
        buttons=[{"title": "Cancel", "payload": "/cancel_handoff"}],
        at=NOW,
    )
    # A system message is no agent response, and nothing was claimed yet.
    assert system.handoff_id is None and system.buttons == [
        {"title": "Cancel", "payload": "/cancel_handoff"}
    ]
    assert session.get(Handoff, handoff_id).first_response_at is None
    item = session.execute(
        select(Interaction).where(Interaction.event_id == f"outbox:{system.id}")
    ).scalar_one()
    assert item.author == "system" and item.meta["buttons"][0]["title"] == "Cancel"
    staff = create_staff(
        session, username="svc-out-agent", password="a long password", role="agent"
    )
    queue.claim(session, handoff_id, staff.id, now=NOW)
    reply = outbound.queue_conversation_message(
        session,
        conversation_id=conv,
        text="Hi!",
        author="agent",
        purpose="agent_reply",
        at=NOW + dt.timedelta(seconds=30),
    )
    assert reply.handoff_id == handoff_id
    assert session.get(Handoff, handoff_id).first_response_at == NOW + dt.timedelta(
        seconds=30
    )


@pytest.mark.parametrize(
    ("changes", "error", "says"),
    [
        ({"text": ""}, InvalidInput, "must not be empty"),
        ({"text": "   \n "}, InvalidInput, "must not be empty"),
        ({"text": "x" * 4001}, InvalidInput, "at most 4000"),
        ({"text": None}, InvalidInput, "must be text"),
        ({"author": "customer"}, InvalidInput, "author must be one of"),
        ({"purpose": "marketing"}, InvalidInput, "purpose must be one of"),
        ({"buttons": [{"title": ""}]}, InvalidInput, "button title"),
        ({"buttons": [{"title": "ok", "payload": 3}]}, InvalidInput, "payload"),
        ({"buttons": "yes"}, InvalidInput, "buttons must be a list"),
        ({"conversation_id": "svc-out-none"}, NotFound, "not found"),
        ({"conversation_id": "svc-out-nokey"}, InvalidInput, "no tracker key"),
        ({"handoff_id": 999_999}, NotFound, "handoff"),
        ({"handoff_id": "other"}, InvalidInput, "another conversation"),
    ],
)
def test_bad_messages_are_refused(
    session: Session, changes: dict, error: type, says: str
) -> None:
    conv = conversation(session, "svc-out-3", "web:svc-out-3")
    conversation(session, "svc-out-nokey", None)
    other = conversation(session, "svc-out-other", "web:svc-out-other")
    if changes.get("handoff_id") == "other":
        changes = {"handoff_id": handoff_for(session, other)}
    args = {
        "conversation_id": conv,
        "text": "hello",
        "author": "agent",
        "purpose": "agent_reply",
    } | changes
    with pytest.raises(error, match=says):
        outbound.queue_conversation_message(session, **args)
    assert outbound.pending_messages(session, "web:svc-out-3") == []


def test_pending_messages_delivery_and_failures(session: Session) -> None:
    conv = conversation(session, "svc-out-4", "web:svc-out-4")
    rest = conversation(session, "svc-out-5", "rest:svc-out-5")
    ids = [
        outbound.queue_conversation_message(
            session,
            conversation_id=conv,
            text=f"message {n}",
            author="system",
            purpose="system_notice",
            at=NOW + dt.timedelta(seconds=n),
        ).id
        for n in (2, 0, 1)
    ]
    outbound.queue_conversation_message(
        session,
        conversation_id=rest,
        text="for rest",
        author="system",
        purpose="system_notice",
        at=NOW,
    )
    pending = outbound.pending_messages(session, "web:svc-out-4")
    assert [m.text for m in pending] == ["message 0", "message 1", "message 2"]
    assert outbound.pending_messages(session, "web:svc-out-4", limit=1)[0].id == ids[1]
    keys = outbound.pending_tracker_keys(session, "web:svc-out-")
    assert keys == ["web:svc-out-4"]
    assert "rest:svc-out-5" in outbound.pending_tracker_keys(session, "rest:")
    # LIKE wildcards in the prefix match literally.
    assert outbound.pending_tracker_keys(session, "web:svc%out") == []
    with pytest.raises(InvalidInput):
        outbound.pending_tracker_keys(session, "")
    sent_at = NOW + dt.timedelta(minutes=1)
    assert outbound.mark_sent(session, [ids[1], ids[2]], at=sent_at) == 2
    assert outbound.mark_sent(session, [ids[1]], at=sent_at) == 0  # already sent
    assert outbound.mark_sent(session, []) == 0
    assert [m.id for m in outbound.pending_messages(session, "web:svc-out-4")] == [
        ids[0]
    ]
    assert session.get(OutboxMessage, ids[1]).sent_at == sent_at
    once = outbound.mark_failed(session, ids[0], "socket closed", final=False)
    assert (once.status, once.attempts) == ("pending", 1)
    final = outbound.mark_failed(session, ids[0], "gave up " + "x" * 600, final=True)
    assert (final.status, final.attempts) == ("failed", 2)
    assert len(session.get(OutboxMessage, ids[0]).last_error) == 500
    assert outbound.pending_messages(session, "web:svc-out-4") == []
    assert "web:svc-out-4" not in outbound.pending_tracker_keys(session, "web:")
    with pytest.raises(NotFound):
        outbound.mark_failed(session, 999_999, "x", final=True)
    # Every message stays in the timeline whatever its delivery state.
    assert len(transcript(session, conversation_id=conv)) == 3


def test_bot_answers_go_to_the_outbox_only(session: Session) -> None:
    """A hand-back turn's answers on REST: already in the history via the broker."""
    conv = conversation(session, "svc-out-bot", "rest:svc-out-bot")
    before = session.query(Interaction).filter_by(conversation_id=conv).count()
    message = outbound.queue_conversation_message(
        session,
        conversation_id=conv,
        text="You're back with the assistant.",
        author="bot",
        purpose="bot_reply",
        buttons=[{"title": "5", "payload": "5"}],
    )
    assert message.author == "bot" and message.buttons[0]["title"] == "5"
    assert [m.id for m in outbound.pending_messages(session, "rest:svc-out-bot")] == [
        message.id
    ]
    assert session.query(Interaction).filter_by(conversation_id=conv).count() == before
    for author, purpose in (("bot", "agent_reply"), ("agent", "bot_reply")):
        with pytest.raises(InvalidInput, match="bot_reply"):
            outbound.queue_conversation_message(
                session, conversation_id=conv, text="x", author=author, purpose=purpose
            )
