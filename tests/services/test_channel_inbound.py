"""Inbound de-duplication, e-mail threads and outbox delivery bookkeeping."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput
from crm_store.models import ChannelReceipt, Conversation, EmailMessage, OutboxMessage
from crm_store.seeding import DEFAULT_AS_OF
from crm_store.services import email_threads, outbound, receipts

NOW = DEFAULT_AS_OF


def test_a_receipt_is_claimed_once_per_channel(session: Session) -> None:
    assert receipts.claim_receipt(session, channel="telegram", external_id="901")
    assert not receipts.claim_receipt(session, channel="telegram", external_id="901")
    # The same id on another channel is another item.
    assert receipts.claim_receipt(session, channel="email", external_id="901")
    assert receipts.release_receipt(session, channel="telegram", external_id="901")
    assert receipts.claim_receipt(session, channel="telegram", external_id="901")


@pytest.mark.parametrize("bad", ["", None, "x" * 256, 42])
def test_a_receipt_needs_a_usable_id(session: Session, bad: object) -> None:
    with pytest.raises(InvalidInput):
        receipts.claim_receipt(session, channel="telegram", external_id=bad)  # type: ignore[arg-type]


def test_old_receipts_are_pruned(session: Session) -> None:
    old = NOW - dt.timedelta(days=40)
    receipts.claim_receipt(session, channel="telegram", external_id="old-1", at=old)
    receipts.claim_receipt(session, channel="telegram", external_id="new-1", at=NOW)
    assert receipts.prune_receipts(session, older_than=NOW - dt.timedelta(days=30)) >= 1
    ids = set(
        session.execute(
            select(ChannelReceipt.external_id).where(
                ChannelReceipt.channel == "telegram"
            )
        ).scalars()
    )
    assert "new-1" in ids and "old-1" not in ids


def test_a_reply_joins_its_thread_and_a_new_mail_starts_one(session: Session) -> None:
    first = email_threads.place_inbound(
        session,
        message_id="<t1@mail.example>",
        address="Ann@Example.com",
        subject="Order",
    )
    assert first.is_new and not first.duplicate
    assert first.tracker_raw_id == f"ann@example.com#{first.thread_id}"
    email_threads.record_outbound(
        session,
        message_id="<r1@northwind.example>",
        address="ann@example.com",
        thread_id=first.thread_id,
        subject="Re: Order",
        buttons=[{"title": "Yes", "payload": "/affirm"}],
    )
    # The customer answers our reply: References name our Message-ID.
    second = email_threads.place_inbound(
        session,
        message_id="<t2@mail.example>",
        address="ann@example.com",
        subject="Re: Order",
        in_reply_to="<r1@northwind.example>",
        references=["<t1@mail.example>", "<r1@northwind.example>"],
    )
    assert second.thread_id == first.thread_id and not second.is_new
    other = email_threads.place_inbound(
        session,
        message_id="<t3@mail.example>",
        address="ann@example.com",
        subject="New",
    )
    assert other.thread_id != first.thread_id and other.is_new
    state = email_threads.thread_state(
        session, address="ann@example.com", thread_id=first.thread_id
    )
    assert state.subject == "Order"
    assert state.last_inbound_id == "<t2@mail.example>"
    assert state.references == [
        "<t1@mail.example>",
        "<r1@northwind.example>",
        "<t2@mail.example>",
    ]
    assert state.last_buttons == [{"title": "Yes", "payload": "/affirm"}]


def test_a_stranger_citing_a_message_id_gets_a_thread_of_their_own(
    session: Session,
) -> None:
    victim = email_threads.place_inbound(
        session, message_id="<v1@mail.example>", address="vic@example.com", subject="x"
    )
    intruder = email_threads.place_inbound(
        session,
        message_id="<i1@evil.example>",
        address="eve@evil.example",
        subject="Re: x",
        in_reply_to="<v1@mail.example>",
    )
    assert intruder.is_new
    assert intruder.tracker_raw_id.startswith("eve@evil.example#")
    assert intruder.tracker_raw_id != victim.tracker_raw_id


def test_a_message_id_seen_before_is_a_duplicate_and_can_be_forgotten(
    session: Session,
) -> None:
    first = email_threads.place_inbound(
        session, message_id="<d1@mail.example>", address="d@example.com", subject="s"
    )
    again = email_threads.place_inbound(
        session, message_id="<d1@mail.example>", address="d@example.com", subject="s"
    )
    assert again.duplicate and again.thread_id == first.thread_id
    assert email_threads.forget_inbound(session, message_id="<d1@mail.example>")
    assert session.get(EmailMessage, "<d1@mail.example>") is None
    assert not email_threads.place_inbound(
        session, message_id="<d1@mail.example>", address="d@example.com", subject="s"
    ).duplicate


def test_thread_keys_split_on_the_last_separator() -> None:
    assert email_threads.split_thread_key("a#b@example.com#abc123") == (
        "a#b@example.com",
        "abc123",
    )
    assert email_threads.split_thread_key("plain@example.com") == (
        "plain@example.com",
        None,
    )


def test_due_messages_follow_the_retry_time_and_a_lease_is_taken_once(
    session: Session,
) -> None:
    message = outbound.queue_address_message(
        session,
        tracker_key="email:due@example.com#t1",
        channel="email",
        recipient="due@example.com",
        text="Your order shipped.",
        at=NOW,
    )
    later = NOW + dt.timedelta(seconds=1)
    due = outbound.due_messages(session, channel="email", now=later, limit=1000)
    assert message.id in [m.id for m in due]
    lease = later + dt.timedelta(minutes=5)
    assert outbound.claim_for_delivery(
        session, message.id, lease_until=lease, now=later
    )
    assert not outbound.claim_for_delivery(
        session, message.id, lease_until=lease, now=later
    )
    retry_at = later + dt.timedelta(seconds=30)
    failed = outbound.mark_failed(
        session, message.id, "relay unreachable", final=False, retry_at=retry_at
    )
    assert failed.status == "pending" and failed.attempts == 1
    not_yet = outbound.due_messages(session, channel="email", now=later, limit=1000)
    assert message.id not in [m.id for m in not_yet]
    due = outbound.due_messages(
        session, channel="email", now=retry_at + dt.timedelta(seconds=1), limit=1000
    )
    assert message.id in [m.id for m in due]


def test_an_undelivered_bot_answer_is_recorded_with_its_conversation(
    session: Session,
) -> None:
    session.add(
        Conversation(
            id="svc-fail-1",
            tracker_key="telegram:555001",
            channel="telegram",
            customer_id=None,
            started_at=NOW,
            last_activity_at=NOW,
        )
    )
    session.flush()
    outbound.record_failed_delivery(
        session,
        tracker_key="telegram:555001",
        channel="telegram",
        text="Your order A10001 is on its way.",
        error="Forbidden: bot was blocked by the user",
    )
    [failed] = outbound.failed_deliveries(session, conversation_id="svc-fail-1")
    assert failed.status == "failed" and failed.author == "bot"
    assert failed.last_error.startswith("Forbidden")
    row = session.get(OutboxMessage, failed.id)
    assert row is not None and row.conversation_id == "svc-fail-1"
    with pytest.raises(InvalidInput):
        outbound.failed_deliveries(session)
