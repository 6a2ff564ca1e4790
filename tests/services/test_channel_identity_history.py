"""Conversations of identity-bearing channels land on the customer's timeline."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.keys import channel_identity
from contact_history.events import recorded_part
from contact_history.recorder import HistoryRecorder
from crm_store.models import ChannelIdentity, Conversation, Customer, Interaction


def user(sender: str, text: str, channel: str, **metadata: Any) -> dict[str, Any]:
    return {
        "sender_id": sender,
        "event": "user",
        "timestamp": time.time(),
        "text": text,
        "message_id": uuid.uuid4().hex,
        "input_channel": channel,
        "parse_data": {"intent": {"name": "greet", "confidence": 0.9}},
        "metadata": metadata,
    }


def record(session: Session, *events: dict[str, Any]) -> None:
    recorder = HistoryRecorder()
    recorder.commit(recorder.record(session, [recorded_part(e) for e in events]))


def conversation_of(session: Session, key: str) -> Conversation:
    return session.execute(
        select(Conversation).where(Conversation.tracker_key == key)
    ).scalar_one()


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("telegram:700000259", ("telegram", "700000259")),
        ("email:ann@example.com#0f3a9c", ("email", "ann@example.com")),
        ("email:ann@example.com", ("email", "ann@example.com")),
        ("sms:+3197010000001", ("phone", "+3197010000001")),
        ("voice:+3197010000001", ("phone", "+3197010000001")),
        ("voice:withheld:CA0123456789abcdef", None),
        ("rest:telegram:700000259", None),
        ("web:AAAAAAAAAAAAAAAAAAAAAA", None),
        ("telegram700000259", None),
        ("", None),
    ],
)
def test_channel_identity_of_a_tracker_key(key: str, expected: object) -> None:
    assert channel_identity(key) == expected


def test_a_registered_telegram_user_lands_on_the_customers_timeline(
    session: Session,
) -> None:
    telegram_id = session.execute(
        select(ChannelIdentity.value).where(
            ChannelIdentity.kind == "telegram", ChannelIdentity.customer_id == "C0007"
        )
    ).scalar_one()
    key = f"telegram:{telegram_id}"
    record(session, user(key, "hello", "telegram"))
    conversation = conversation_of(session, key)
    assert conversation.customer_id == "C0007"
    assert conversation.channel == "telegram"


def test_an_email_sender_is_identified_and_the_subject_is_kept(
    session: Session,
) -> None:
    address = session.get(Customer, "C0001").email
    key = f"email:{address}#a1b2c3d4e5f60718"
    attachments = [{"filename": "receipt.pdf", "content_type": "application/pdf"}]
    record(
        session,
        user(
            key, "where is my order", "email", subject="Order", attachments=attachments
        ),
    )
    conversation = conversation_of(session, key)
    assert conversation.customer_id == "C0001" and conversation.channel == "email"
    row = session.execute(
        select(Interaction).where(Interaction.conversation_id == conversation.id)
    ).scalar_one()
    assert row.customer_id == "C0001"
    assert row.meta == {"subject": "Order", "attachments": attachments}


def test_an_unknown_telegram_user_becomes_a_prospect_and_rest_keys_stay_anonymous(
    session: Session,
) -> None:
    record(session, user("telegram:123456789012", "hi", "telegram"))
    prospect_id = conversation_of(session, "telegram:123456789012").customer_id
    assert prospect_id is not None
    assert session.get(Customer, prospect_id).is_prospect
    record(session, user("rest:telegram:700000259", "hi", "rest", subject="forged"))
    rest = conversation_of(session, "rest:telegram:700000259")
    assert rest.customer_id is None
    row = session.execute(
        select(Interaction).where(Interaction.conversation_id == rest.id)
    ).scalar_one()
    # A REST client's metadata never reaches Rasa (channels.text), and a REST
    # key carries no identity; the subject here stands for any channel-set key.
    assert row.customer_id is None
