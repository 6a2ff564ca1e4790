"""Store-issued conversation ids and tracker-key lookups (both backends)."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.models import Conversation
from crm_store.services.conversations import close_conversation, open_conversation
from crm_store.services.history import (
    latest_conversation,
    next_conversation_id,
    stored_tracker_key,
)
from crm_store.services.links import conversation_id_for, known_conversation_id

START = dt.datetime(2024, 5, 1, 9, 0)


def new_key() -> str:
    return f"rest:svc-{uuid.uuid4().hex[:10]}"


def start(session: Session, key: str, at: dt.datetime = START) -> str:
    conversation_id = next_conversation_id(session, tracker_key=key)
    open_conversation(
        session, conversation_id=conversation_id, channel="chat", tracker_key=key, at=at
    )
    session.flush()
    return conversation_id


def test_ids_are_opaque_and_never_repeat(session: Session) -> None:
    key = "rest:v1~2"
    ids = {next_conversation_id(session, tracker_key=key) for _ in range(200)}
    assert len(ids) == 200
    assert all(i.startswith("cv_") and len(i) == 35 and key not in i for i in ids)


def test_latest_conversation_follows_the_tracker_key(session: Session) -> None:
    key = new_key()
    assert latest_conversation(session, tracker_key=key) is None
    first = start(session, key)
    close_conversation(session, conversation_id=first, outcome="self_served")
    second = start(session, key, START + dt.timedelta(hours=1))

    latest = latest_conversation(session, tracker_key=key)
    assert latest is not None and latest.id == second != first
    assert latest_conversation(session, sender_id=key).id == second  # older keyword
    stored = session.execute(
        select(Conversation.tracker_key).where(Conversation.id.in_([first, second]))
    ).scalars()
    assert set(stored) == {key}


def test_look_alike_keys_do_not_resolve_to_each_other(session: Session) -> None:
    key = new_key()
    start(session, key)
    for other in (key + "~2", key[:-1], key.removeprefix("rest:"), "sms:" + key[5:]):
        assert latest_conversation(session, tracker_key=other) is None
        assert conversation_id_for(session, other) is None


def test_over_long_keys_are_stored_hashed_and_still_distinct(session: Session) -> None:
    base = "email:" + "a" * 300
    one, two = base + "@one.example", base + "@two.example"
    assert len(stored_tracker_key(one)) == 255
    assert stored_tracker_key(one) != stored_tracker_key(two)
    assert stored_tracker_key("rest:short") == "rest:short"
    first = start(session, one)
    assert latest_conversation(session, tracker_key=one).id == first
    assert latest_conversation(session, tracker_key=two) is None


def test_links_resolve_a_tracker_key_or_keep_a_stored_id(session: Session) -> None:
    key = new_key()
    assert known_conversation_id(session, key) is None  # not written yet
    conversation_id = start(session, key)
    assert conversation_id_for(session, key) == conversation_id
    assert known_conversation_id(session, key) == conversation_id
    assert known_conversation_id(session, conversation_id) == conversation_id
    assert known_conversation_id(session, "cv_" + "0" * 32) is None
    assert known_conversation_id(session, None) is None
    assert known_conversation_id(session, "") is None


def test_seeded_fixture_conversations_keep_their_ids(session: Session) -> None:
    seeded = session.execute(
        select(Conversation).where(Conversation.id.like("history-%")).limit(1)
    ).scalar_one()
    assert seeded.tracker_key is None
    assert known_conversation_id(session, seeded.id) == seeded.id


def test_two_openers_of_one_tracker_key_share_one_open_conversation(
    session: Session,
) -> None:
    """The writer and an action may both open a key's first conversation at once."""
    key = new_key()
    first = start(session, key)
    second = open_conversation(
        session,
        conversation_id=next_conversation_id(session, tracker_key=key),
        channel="chat",
        tracker_key=key,
        at=START,
    )
    assert second.id == first
    rows = session.execute(
        select(Conversation).where(Conversation.tracker_key == key)
    ).scalars()
    assert [row.id for row in rows] == [first]
    # Once it is closed, the key's next conversation is a new one.
    close_conversation(session, conversation_id=first, outcome="abandoned")
    assert start(session, key) != first
