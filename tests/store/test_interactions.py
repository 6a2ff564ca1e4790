"""Contact history: idempotent appends, concurrency, stable timeline pagination."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import threading
import uuid

import pytest
from sqlalchemy import func, select

from crm_store.db import make_engine, make_session_factory, retry_when_locked
from crm_store.errors import InvalidInput, NotFound
from crm_store.models import Conversation, Customer, Interaction
from crm_store.services.conversations import (
    close_conversation,
    close_inactive_conversations,
    open_conversation,
)
from crm_store.services.interactions import (
    NewInteraction,
    append_interaction,
    append_interactions,
    timeline,
    transcript,
)


def new_customer(factory) -> str:
    customer_id = f"T{uuid.uuid4().hex[:10].upper()}"
    with factory.begin() as session:
        session.add(Customer(id=customer_id, first_name="Test", last_name="Person"))
    return customer_id


def message(customer_id, n, *, at=None, event_id=None, conversation_id=None):
    return NewInteraction(
        event_id=event_id or f"evt-{customer_id}-{n}",
        customer_id=customer_id,
        conversation_id=conversation_id,
        channel="chat",
        direction="in" if n % 2 else "out",
        author="customer" if n % 2 else "bot",
        text=f"message {n}",
        intent="greet" if n % 2 else None,
        confidence=0.9 if n % 2 else None,
        occurred_at=at or dt.datetime(2026, 11, 1, 12, 0) + dt.timedelta(seconds=n),
    )


def count_for(factory, customer_id) -> int:
    with factory() as session:
        return session.execute(
            select(func.count())
            .select_from(Interaction)
            .where(Interaction.customer_id == customer_id)
        ).scalar_one()


def test_same_event_id_twice_stores_one_row(factory):
    customer_id = new_customer(factory)
    item = message(customer_id, 1)
    with factory.begin() as session:
        assert append_interaction(session, item=item) is True
    with factory.begin() as session:
        assert append_interaction(session, item=item) is False
        # Duplicates inside one batch are also stored once.
        assert (
            append_interactions(session, items=[item, item, message(customer_id, 2)])
            == 1
        )
    assert count_for(factory, customer_id) == 2


def test_fields_round_trip(factory):
    customer_id = new_customer(factory)
    item = NewInteraction(
        event_id=f"rt-{customer_id}",
        customer_id=customer_id,
        channel="telegram",
        direction="in",
        author="customer",
        text="Wáár is mijn bestelling? 📦",
        intent="order_status",
        confidence=0.87,
        occurred_at=dt.datetime(
            2026, 11, 2, 8, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))
        ),
        meta={"message_id": "abc", "entities": [{"entity": "order_number"}]},
    )
    with factory.begin() as session:
        append_interaction(session, item=item)
    with factory() as session:
        row = timeline(session, customer_id=customer_id).items[0]
    assert (row.channel, row.direction, row.author, row.intent) == (
        "telegram",
        "in",
        "customer",
        "order_status",
    )
    assert row.text == item.text and row.confidence == pytest.approx(0.87)
    assert row.occurred_at == dt.datetime(2026, 11, 2, 7, 30)  # stored as UTC
    assert row.meta == item.meta


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"channel": "fax"}, "unknown channel"),
        ({"direction": "sideways"}, "direction must be"),
        ({"author": "robot"}, "author must be"),
        ({"confidence": 1.5}, "confidence must be"),
        ({"event_id": ""}, "event_id is required"),
    ],
)
def test_invalid_interactions_are_rejected_and_nothing_of_the_batch_is_written(
    factory, change, error
):
    customer_id = new_customer(factory)
    good = message(customer_id, 1)
    bad = NewInteraction(**{**message(customer_id, 2).__dict__, **change})
    with pytest.raises(InvalidInput, match=error):
        with factory.begin() as session:
            append_interactions(session, items=[good, bad])
    assert count_for(factory, customer_id) == 0


def _append_many(url: str, customer_id: str, worker: int, per_worker: int) -> None:
    engine = make_engine(url)
    factory = make_session_factory(engine)
    for n in range(per_worker):
        item = message(customer_id, n, event_id=f"c-{customer_id}-{worker}-{n}")
        # Every worker also re-sends a shared event id: must be stored once.
        shared = message(customer_id, n, event_id=f"c-{customer_id}-shared-{n}")

        def write(item=item, shared=shared) -> None:
            with factory.begin() as session:
                append_interactions(session, items=[item, shared])

        retry_when_locked(write)
    engine.dispose()


def test_concurrent_appends_from_8_threads_lose_nothing(factory, engine):
    customer_id = new_customer(factory)
    url = engine.url.render_as_string(hide_password=False)
    threads = [
        threading.Thread(target=_append_many, args=(url, customer_id, w, 25))
        for w in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert count_for(factory, customer_id) == 8 * 25 + 25


def test_concurrent_appends_from_8_processes_lose_nothing(factory, engine):
    customer_id = new_customer(factory)
    url = engine.url.render_as_string(hide_password=False)
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_append_many, args=(url, customer_id, w, 20))
        for w in range(8)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * 8
    assert count_for(factory, customer_id) == 8 * 20 + 20


def test_timeline_is_newest_first_across_channels_and_pages_completely(factory):
    customer_id = new_customer(factory)
    base = dt.datetime(2026, 10, 1)
    items = []
    for n in range(23):
        items.append(
            NewInteraction(
                event_id=f"p-{customer_id}-{n}",
                customer_id=customer_id,
                channel=("chat", "sms", "email", "voice", "telegram")[n % 5],
                direction="in",
                author="customer",
                text=str(n),
                # Pairs of rows share a timestamp: the id breaks the tie.
                occurred_at=base + dt.timedelta(minutes=n // 2),
            )
        )
    with factory.begin() as session:
        append_interactions(session, items=items)
    seen, cursor = [], None
    with factory() as session:
        while True:
            page = timeline(session, customer_id=customer_id, limit=5, cursor=cursor)
            seen.extend(page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    keys = [(row.occurred_at, row.id) for row in seen]
    assert keys == sorted(keys, reverse=True)
    assert sorted(int(row.text) for row in seen) == list(range(23))
    assert {row.channel for row in seen} == {
        "chat",
        "sms",
        "email",
        "voice",
        "telegram",
    }


def test_timeline_pagination_is_stable_while_new_rows_arrive(factory):
    customer_id = new_customer(factory)
    with factory.begin() as session:
        append_interactions(session, items=[message(customer_id, n) for n in range(30)])
    seen, cursor, extra = [], None, 0
    with factory() as session:
        while True:
            page = timeline(session, customer_id=customer_id, limit=7, cursor=cursor)
            seen.extend(row.event_id for row in page.items)
            # A new message arrives between page reads (newer than everything).
            with factory.begin() as writer:
                append_interaction(
                    writer,
                    item=message(
                        customer_id,
                        1000 + extra,
                        event_id=f"late-{customer_id}-{extra}",
                        at=dt.datetime(2026, 12, 1) + dt.timedelta(seconds=extra),
                    ),
                )
            extra += 1
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    expected = [f"evt-{customer_id}-{n}" for n in reversed(range(30))]
    assert seen == expected  # no row skipped, none repeated
    with factory() as session:
        first = timeline(session, customer_id=customer_id, limit=1).items[0]
    assert first.event_id == f"late-{customer_id}-{extra - 1}"


@pytest.mark.parametrize("cursor", ["garbage", "!!!", "MjAyNi0xMS0wMQ"])
def test_malformed_cursor_is_a_clear_error(factory, cursor):
    with factory() as session:
        with pytest.raises(InvalidInput, match="malformed cursor"):
            timeline(session, customer_id="C0001", cursor=cursor)


@pytest.mark.parametrize("limit", [0, -1, 201])
def test_page_size_is_bounded(factory, limit):
    with factory() as session:
        with pytest.raises(InvalidInput, match="limit"):
            timeline(session, customer_id="C0001", limit=limit)


def test_fixture_history_is_in_the_timeline(factory):
    with factory() as session:
        page = timeline(session, customer_id="C0703", limit=50)
    rows = [r for r in page.items if r.meta.get("source") == "fixture"]
    assert rows and all(r.customer_id == "C0703" for r in rows)
    assert rows[0].intent in {
        "complaint",
        "product_question",
        "billing_question",
        "refund_status",
        "damaged_item",
        "delivery_delay",
    }


def test_conversation_lifecycle_and_transcript(factory):
    customer_id = new_customer(factory)
    conversation_id = f"conv-{uuid.uuid4().hex}"
    start = dt.datetime(2026, 11, 3, 9, 0)
    with factory.begin() as session:
        open_conversation(
            session, conversation_id=conversation_id, channel="sms", at=start
        )
        # Opening again is a touch, not a second record; the customer is filled in.
        open_conversation(
            session,
            conversation_id=conversation_id,
            channel="sms",
            customer_id=customer_id,
            at=start + dt.timedelta(minutes=1),
        )
        append_interactions(
            session,
            items=[
                message(
                    customer_id,
                    n,
                    conversation_id=conversation_id,
                    at=start + dt.timedelta(seconds=10 * (3 - n)),
                )
                for n in range(3)
            ],
        )
    with factory.begin() as session:
        rows = transcript(session, conversation_id=conversation_id)
        assert [r.text for r in rows] == ["message 2", "message 1", "message 0"]
        conversation = session.get(Conversation, conversation_id)
        assert conversation.customer_id == customer_id
        assert conversation.last_activity_at == start + dt.timedelta(minutes=1)
        close_conversation(
            session, conversation_id=conversation_id, outcome="self_served"
        )
    with factory() as session:
        assert session.get(Conversation, conversation_id).outcome == "self_served"
    with factory.begin() as session:
        with pytest.raises(InvalidInput):
            close_conversation(session, conversation_id=conversation_id, outcome="meh")
        with pytest.raises(NotFound):
            close_conversation(session, conversation_id="nope", outcome="abandoned")


def test_idle_conversations_close_as_abandoned(factory):
    conversation_id = f"idle-{uuid.uuid4().hex}"
    old = dt.datetime(2020, 1, 1)
    with factory.begin() as session:
        open_conversation(
            session, conversation_id=conversation_id, channel="chat", at=old
        )
    with factory.begin() as session:
        closed = close_inactive_conversations(
            session, idle_for=dt.timedelta(minutes=30), now=dt.datetime(2020, 1, 2)
        )
    assert closed >= 1
    with factory() as session:
        conversation = session.get(Conversation, conversation_id)
    assert (conversation.status, conversation.outcome) == ("closed", "abandoned")
