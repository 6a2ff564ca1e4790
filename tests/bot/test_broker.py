"""The contact-history broker against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rasa.utils.endpoints import EndpointConfig
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine

from bot.broker import ContactHistoryBroker, event_id_for
from crm_settings import get_settings
from crm_store.db import make_session_factory
from crm_store.models import ChannelReceipt, Conversation, Customer, Interaction
from crm_store.services.history import latest_conversation
from crm_store.services.interactions import transcript
from crm_store.services.receipts import claim_receipt
from tests.conftest import PG_ADMIN_URL


def user(
    sender: str,
    text: str,
    intent: str = "greet",
    *,
    confidence: float = 0.93,
    channel: str = "rest",
    at: float | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    return {
        "sender_id": sender,
        "event": "user",
        "timestamp": at if at is not None else time.time(),
        "text": text,
        "message_id": message_id or uuid.uuid4().hex,
        "input_channel": channel,
        "parse_data": {"intent": {"name": intent, "confidence": confidence}},
    }


def bot(sender: str, text: str, *, at: float | None = None) -> dict[str, Any]:
    return {
        "sender_id": sender,
        "event": "bot",
        "timestamp": at if at is not None else time.time(),
        "text": text,
        "data": {"buttons": [{"title": "Yes", "payload": "/affirm"}]},
        "metadata": {"utter_action": "utter_greet"},
    }


def slot(sender: str, name: str, value: Any) -> dict[str, Any]:
    return {
        "sender_id": sender,
        "event": "slot",
        "timestamp": time.time(),
        "name": name,
        "value": value,
    }


def new_sender() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


@pytest.fixture()
def broker(empty_engine: Engine) -> Iterator[ContactHistoryBroker]:
    broker = ContactHistoryBroker(
        make_session_factory(empty_engine), flush_interval=0.02
    )
    broker.start()
    yield broker
    broker.stop()


def rows_of(engine: Engine, key: str) -> list[Interaction]:
    """The transcript of the tracker key's newest conversation."""
    with make_session_factory(engine)() as session:
        latest = latest_conversation(session, tracker_key=key)
        return [] if latest is None else transcript(session, conversation_id=latest.id)


def conversation(engine: Engine, key: str) -> Conversation | None:
    """The tracker key's newest conversation."""
    with make_session_factory(engine)() as session:
        return latest_conversation(session, tracker_key=key)


def conversations_of(engine: Engine, key: str) -> list[Conversation]:
    """All conversations of a tracker key, oldest first."""
    with make_session_factory(engine)() as session:
        stmt = (
            select(Conversation)
            .where(Conversation.tracker_key == key)
            .order_by(Conversation.started_at)
        )
        return list(session.execute(stmt).scalars())


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def add_customer(engine: Engine) -> str:
    customer_id = f"T{uuid.uuid4().hex[:8].upper()}"
    with make_session_factory(engine).begin() as session:
        session.add(Customer(id=customer_id, first_name="Test"))
    return customer_id


def test_user_and_bot_messages_become_interactions(
    broker: ContactHistoryBroker, empty_engine: Engine
) -> None:
    sender = new_sender()
    events = [
        {"sender_id": sender, "event": "action", "name": "action_listen"},
        user(sender, "hi there", channel="telegram", confidence=0.87),
        bot(sender, "Hello! How can I help?"),
    ]
    for event in events:
        broker.publish(event)
    assert broker.wait_idle()

    incoming, outgoing = rows_of(empty_engine, sender)
    assert (incoming.direction, incoming.author, incoming.text) == (
        "in",
        "customer",
        "hi there",
    )
    assert (incoming.intent, incoming.confidence) == ("greet", 0.87)
    assert incoming.event_id == events[1]["message_id"]
    assert (outgoing.direction, outgoing.author, outgoing.intent) == (
        "out",
        "bot",
        None,
    )
    assert outgoing.meta == {"utter_action": "utter_greet", "buttons": ["Yes"]}
    assert incoming.channel == outgoing.channel == "telegram"
    opened = conversation(empty_engine, sender)
    assert (opened.channel, opened.status, opened.customer_id) == (
        "telegram",
        "open",
        None,
    )


@pytest.mark.parametrize(
    ("input_channel", "channel"),
    [
        ("rest", "chat"),
        ("twilio_sms", "sms"),
        ("twilio_voice", "voice"),
        ("email", "email"),
        ("something_else", "chat"),
    ],
)
def test_input_channels_map_to_store_channels(
    broker: ContactHistoryBroker, empty_engine: Engine, input_channel: str, channel: str
) -> None:
    sender = new_sender()
    broker.publish(user(sender, "hello", channel=input_channel))
    assert broker.wait_idle()
    assert conversation(empty_engine, sender).channel == channel
    assert rows_of(empty_engine, sender)[0].channel == channel


def test_redelivered_events_are_stored_once(
    broker: ContactHistoryBroker, empty_engine: Engine
) -> None:
    sender = new_sender()
    events = [
        user(sender, "where is my order", "order_status"),
        bot(sender, "Let me check."),
    ]
    no_id = user(sender, "thanks", "thank")
    del no_id["message_id"]
    events.append(no_id)
    for _ in range(3):
        for event in events:
            broker.publish(dict(event))
        assert broker.wait_idle()
    rows = rows_of(empty_engine, sender)
    assert [r.text for r in rows] == ["where is my order", "Let me check.", "thanks"]
    assert rows[2].event_id == event_id_for(no_id)


def test_customer_slot_links_conversation_and_backfills_history(
    broker: ContactHistoryBroker, empty_engine: Engine
) -> None:
    customer_id = add_customer(empty_engine)
    sender = new_sender()
    broker.publish(user(sender, "hi"))
    broker.publish(bot(sender, "Hi! Who are you?"))
    assert broker.wait_idle()
    assert all(r.customer_id is None for r in rows_of(empty_engine, sender))

    broker.publish(user(sender, "order 1234, postcode 1011AB", "inform"))
    broker.publish(slot(sender, "customer_id", customer_id))
    broker.publish(bot(sender, "Thanks, you are verified."))
    assert broker.wait_idle()

    rows = rows_of(empty_engine, sender)
    assert len(rows) == 4
    assert {r.customer_id for r in rows} == {customer_id}
    assert conversation(empty_engine, sender).customer_id == customer_id


def test_goodbye_closes_as_self_served(
    broker: ContactHistoryBroker, empty_engine: Engine
) -> None:
    sender = new_sender()
    broker.publish(user(sender, "hi"))
    broker.publish(user(sender, "bye", "goodbye"))
    broker.publish(bot(sender, "Bye!"))
    assert broker.wait_idle()
    closed = conversation(empty_engine, sender)
    assert (closed.status, closed.outcome) == ("closed", "self_served")
    assert closed.ended_at is not None
    assert [r.text for r in rows_of(empty_engine, sender)] == ["hi", "bye", "Bye!"]

    # The sender comes back: a new conversation, the old one stays closed.
    broker.publish(user(sender, "hello again"))
    assert broker.wait_idle()
    first, again = conversations_of(empty_engine, sender)
    assert first.id == closed.id and first.status == "closed"
    assert again.status == "open" and again.id != first.id
    assert again.id.startswith("cv_") and sender not in again.id
    assert [r.text for r in rows_of(empty_engine, sender)] == ["hello again"]


def test_escalated_conversation_closes_as_escalated(
    broker: ContactHistoryBroker, empty_engine: Engine
) -> None:
    sender = new_sender()
    broker.publish(user(sender, "I want a human", "request_human"))
    broker.publish(slot(sender, "escalated", True))
    assert broker.wait_idle()
    still_open = conversation(empty_engine, sender)
    assert (still_open.status, still_open.outcome) == ("open", "escalated")
    broker.publish(user(sender, "bye", "goodbye"))
    assert broker.wait_idle()
    closed = conversation(empty_engine, sender)
    assert (closed.status, closed.outcome) == ("closed", "escalated")


def test_idle_conversations_are_closed_as_abandoned(empty_engine: Engine) -> None:
    factory = make_session_factory(empty_engine)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    with factory.begin() as session:  # the same sweep prunes old inbound receipts
        claim_receipt(
            session,
            channel="telegram",
            external_id="old",
            at=now - dt.timedelta(days=8),
        )
        claim_receipt(session, channel="telegram", external_id="new", at=now)
    broker = ContactHistoryBroker(
        make_session_factory(empty_engine),
        flush_interval=0.02,
        inactivity_timeout=dt.timedelta(minutes=30),
        idle_check_interval=0.1,
    )
    broker.start()
    try:
        idle, escalated, active = new_sender(), new_sender(), new_sender()
        long_ago = time.time() - 3600
        broker.publish(user(idle, "hi", at=long_ago))
        broker.publish(user(escalated, "human please", at=long_ago))
        broker.publish(slot(escalated, "escalated", True))
        broker.publish(user(active, "hi"))
        assert broker.wait_idle()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if conversation(empty_engine, idle).status == "closed":
                break
            time.sleep(0.05)
    finally:
        broker.stop()
    assert conversation(empty_engine, idle).outcome == "abandoned"
    assert conversation(empty_engine, escalated).outcome == "escalated"
    assert conversation(empty_engine, escalated).status == "closed"
    assert conversation(empty_engine, active).status == "open"
    with factory() as session:
        kept = {
            r.external_id for r in session.execute(select(ChannelReceipt)).scalars()
        }
    assert kept == {"new"}


def test_publish_never_waits_for_the_database(empty_engine: Engine) -> None:
    """Publishing returns while the store is unreachable; the backlog lands later."""
    broker = ContactHistoryBroker(
        make_session_factory(empty_engine), flush_interval=0.02, max_backoff=0.2
    )
    broker.start()
    sender = new_sender()
    outage = Outage(empty_engine)
    try:
        outage.begin()
        try:
            for index in range(1000):
                broker.publish(user(sender, f"message {index}"))
            assert not broker.wait_idle(0.3)  # the writer is stuck, publish was not
        finally:
            outage.end()
        assert broker.wait_idle(20)
    finally:
        broker.stop()
    assert len(rows_of(empty_engine, sender)) == 1000


def test_writer_process_writes_and_flushes_on_close(empty_engine: Engine) -> None:
    url = empty_engine.url.render_as_string(hide_password=False)
    broker = ContactHistoryBroker(database_url=url, flush_interval=0.02)
    assert broker.mode == "process"
    broker.start()
    sender = new_sender()
    try:
        broker.publish(user(sender, "hello from another process"))
        broker.publish(bot(sender, "hi, how can I help?"))
        assert broker.wait_idle(120), "the writer process wrote nothing"
        assert broker.is_ready()
        for index in range(20):
            broker.publish(user(sender, f"then {index}"))
    finally:
        broker.stop()
    texts = [r.text for r in rows_of(empty_engine, sender)]
    assert texts[:2] == ["hello from another process", "hi, how can I help?"]
    assert len(texts) == 22 and broker.written == 22
    assert not broker.is_ready()


def test_dead_writer_process_is_restarted(empty_engine: Engine) -> None:
    url = empty_engine.url.render_as_string(hide_password=False)
    broker = ContactHistoryBroker(database_url=url, flush_interval=0.02)
    broker.start()
    sender = new_sender()
    try:
        broker.publish(user(sender, "before"))
        assert broker.wait_idle(120)
        broker._process.kill()
        broker._process.join(10)
        assert not broker.is_ready()
        broker.publish(user(sender, "after"))
        assert broker.wait_idle(120), "no new writer took over"
        assert broker.is_ready()
    finally:
        broker.stop()
    assert [r.text for r in rows_of(empty_engine, sender)] == ["before", "after"]


WRITER_VARIABLES = (
    "CRM_DATABASE_URL",
    "CRM_HISTORY_WRITER",
    "CRM_INACTIVITY_TIMEOUT_MINUTES",
    "CRM_IDLE_CHECK_SECONDS",
)


@pytest.fixture()
def writer_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No writer variables set; the settings are re-read before and after."""
    for name in WRITER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def endpoint_config(**kwargs: Any) -> EndpointConfig:
    return EndpointConfig(type="bot.broker.ContactHistoryBroker", **kwargs)


async def test_endpoint_config_applies_when_settings_are_unset(
    writer_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'kwargs.db'}"
    broker = await ContactHistoryBroker.from_endpoint_config(
        endpoint_config(
            database_url=url,
            writer="thread",
            inactivity_timeout_minutes=45,
            idle_check_seconds=7,
            flush_interval_ms=50,
            batch_size=20,
        )
    )
    try:
        assert (broker.mode, broker._database_url) == ("thread", url)
        assert broker.settings.inactivity_timeout == dt.timedelta(minutes=45)
        assert broker.settings.idle_check_interval == 7
        assert (broker.settings.flush_interval, broker.settings.batch_size) == (
            0.05,
            20,
        )
    finally:
        broker.stop()


async def test_settings_override_the_endpoint_config(
    writer_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'settings.db'}"
    writer_env.setenv("CRM_DATABASE_URL", url)
    writer_env.setenv("CRM_HISTORY_WRITER", "thread")
    writer_env.setenv("CRM_INACTIVITY_TIMEOUT_MINUTES", "5")
    writer_env.setenv("CRM_IDLE_CHECK_SECONDS", "2.5")
    broker = await ContactHistoryBroker.from_endpoint_config(
        endpoint_config(writer="process", inactivity_timeout_minutes=45)
    )
    try:
        assert (broker.mode, broker._database_url) == ("thread", url)
        assert broker.settings.inactivity_timeout == dt.timedelta(minutes=5)
        assert broker.settings.idle_check_interval == 2.5
    finally:
        broker.stop()


def test_unknown_writer_mode_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="writer must be one of process, thread"):
        ContactHistoryBroker(database_url="sqlite://", writer="fork")


def test_close_flushes_what_is_buffered(empty_engine: Engine) -> None:
    broker = ContactHistoryBroker(
        make_session_factory(empty_engine), flush_interval=30, batch_size=10_000
    )
    broker.start()
    sender = new_sender()
    for index in range(50):
        broker.publish(user(sender, f"message {index}"))
    broker.stop()
    assert len(rows_of(empty_engine, sender)) == 50
    assert not broker.is_ready()


async def test_async_close_flushes(empty_engine: Engine) -> None:
    broker = ContactHistoryBroker(
        make_session_factory(empty_engine), flush_interval=30, batch_size=10_000
    )
    broker.start()
    sender = new_sender()
    broker.publish(user(sender, "hello"))
    broker.publish(bot(sender, "hi!"))
    await broker.close()  # no yield between publish and close: still handed over
    assert [r.text for r in rows_of(empty_engine, sender)] == ["hello", "hi!"]


async def test_a_turns_events_are_queued_as_one_item() -> None:
    """Within a coroutine, the recorded events of a turn reach the queue together."""
    broker = ContactHistoryBroker(database_url="sqlite://", writer="thread")
    sender = new_sender()  # the writer is not started: the queue keeps what came
    turn = [
        {"sender_id": sender, "event": "action", "name": "action_listen"},
        user(sender, "hi"),
        {"sender_id": sender, "event": "user_featurization", "use_text": True},
        slot(sender, "requested_slot", "postcode"),
        slot(sender, "customer_id", "C1"),
        bot(sender, "Hello!"),
    ]
    for event in turn:
        broker.publish(event)
    assert broker.signals.queue.empty()  # handed over only when the turn yields
    await asyncio.sleep(0)
    item = broker.signals.queue.get_nowait()
    # Messages and story steps (slots, actions but action_listen), with the
    # fields the recorder reads.
    bot_part = {**turn[5], "data": {"buttons": [{"title": "Yes"}]}}
    assert item == [turn[1], turn[3], turn[4], bot_part]
    assert broker.signals.queue.empty()


class Outage:
    """Makes a real database unreachable, then reachable again."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.url = engine.url
        self.moved: list[tuple[Path, Path]] = []

    def begin(self) -> None:
        if self.url.get_backend_name() == "sqlite":
            path = Path(self.url.database)
            for suffix in ("", "-wal", "-shm"):
                source = path.with_name(path.name + suffix)
                if source.exists():
                    target = source.with_name(source.name + ".away")
                    shutil.move(source, target)
                    self.moved.append((target, source))
            # Open connections keep the moved file's inode: sever them, as an
            # unreachable store would.
            self.engine.dispose()
            return
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", future=True)
        name = self.url.database
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
        admin.dispose()

    def end(self) -> None:
        if self.url.get_backend_name() == "sqlite":
            path = Path(self.url.database)
            for suffix in ("", "-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
            for target, source in self.moved:
                shutil.move(target, source)
            return
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", future=True)
        with admin.connect() as conn:
            conn.execute(
                text(f'ALTER DATABASE "{self.url.database}" ALLOW_CONNECTIONS true')
            )
        admin.dispose()


def test_nothing_is_lost_while_the_database_is_down(empty_engine: Engine) -> None:
    broker = ContactHistoryBroker(
        make_session_factory(empty_engine), flush_interval=0.02, max_backoff=0.2
    )
    broker.start()
    sender = new_sender()
    outage = Outage(empty_engine)
    try:
        broker.publish(user(sender, "before"))
        assert broker.wait_idle()
        outage.begin()
        try:
            for index in range(20):
                broker.publish(user(sender, f"during {index}"))
                broker.publish(bot(sender, f"reply {index}"))
            deadline = time.monotonic() + 10
            while broker.failures < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert broker.failures >= 2, "the writer never hit the outage"
            assert not broker.wait_idle(0.3)
        finally:
            outage.end()
        assert broker.wait_idle(20)
    finally:
        broker.stop()
    texts = [r.text for r in rows_of(empty_engine, sender)]
    assert len(texts) == 41
    assert texts[0] == "before" and "during 19" in texts and "reply 19" in texts
    with make_session_factory(empty_engine)() as session:
        assert (
            session.execute(select(func.count()).select_from(Conversation)).scalar_one()
            == 1
        )


@pytest.mark.parametrize(
    "sender", ["a%b_c", "x" * 200, "tele:+31 6 1234", "v1~9", "rest:" + "y" * 300]
)
def test_unusual_sender_ids_keep_one_open_conversation(
    broker: ContactHistoryBroker, empty_engine: Engine, sender: str
) -> None:
    for said in ("one", "two", "bye"):
        broker.publish(user(sender, said, "goodbye" if said == "bye" else "inform"))
        assert broker.wait_idle()
    broker.publish(user(sender, "back again"))
    assert broker.wait_idle()
    with make_session_factory(empty_engine)() as session:
        rows = session.execute(select(Conversation.id, Conversation.tracker_key)).all()
    assert len(rows) == 2 and rows[0].id != rows[1].id
    assert all(r.id.startswith("cv_") and len(r.id) == 35 for r in rows)
    assert rows[0].tracker_key == rows[1].tracker_key
    assert len(rows[0].tracker_key) <= 255
    first, second = conversations_of(empty_engine, rows[0].tracker_key)
    assert first.outcome == "self_served" and second.status == "open"
    with make_session_factory(empty_engine)() as session:
        texts = [r.text for r in transcript(session, conversation_id=first.id)]
    assert texts == ["one", "two", "bye"]
    assert [r.text for r in rows_of(empty_engine, sender)] == ["back again"]


def test_look_alike_sender_ids_never_share_a_conversation(
    broker: ContactHistoryBroker, empty_engine: Engine
) -> None:
    """Issue 11: ``v1~2`` was the second conversation of ``v1``; keys are exact now."""
    keys = ["rest:v1", "rest:v1~2", "rest:" + "z" * 120, "rest:" + "z" * 120 + "~2"]
    for key in keys:
        broker.publish(user(key, f"I am {key}", "goodbye"))
        assert broker.wait_idle()
    broker.publish(user("rest:v1", "v1 is back"))
    assert broker.wait_idle()
    for key in keys:
        owned = conversations_of(empty_engine, key)
        assert len(owned) == (2 if key == "rest:v1" else 1)
        assert {c.tracker_key for c in owned} == {key}
    assert [r.text for r in rows_of(empty_engine, "rest:v1~2")] == ["I am rest:v1~2"]
    assert [r.text for r in rows_of(empty_engine, "rest:v1")] == ["v1 is back"]


def test_control_characters_and_lone_surrogates_are_cleaned(
    broker: ContactHistoryBroker, empty_engine: Engine
) -> None:
    sender = new_sender()
    broker.publish(user(sender, "a\x00b\ud800c\x1bd\ne\tf"))
    broker.publish(bot(sender, "reply \udfff\x00"))
    assert broker.wait_idle()
    assert broker.lost_events == 0
    rows = rows_of(empty_engine, sender)
    assert [r.text for r in rows] == ["ab\ufffdcd\ne\tf", "reply \ufffd"]


def test_full_queue_loses_the_turn_loudly_and_counts_it(
    empty_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    broker = ContactHistoryBroker(
        make_session_factory(empty_engine), flush_interval=0.02, queue_limit=2
    )  # not started: the writer is stopped, nothing leaves the queue
    first, second, third = new_sender(), new_sender(), "rest:someone-else"
    caplog.set_level(logging.ERROR, logger="bot.broker")
    broker.publish(user(first, "one"))
    broker.publish(user(second, "two"))
    assert broker.lost_events == 0
    broker.publish(user(third, "a secret text"))
    broker.publish(bot(third, "and its answer"))
    assert broker.lost_events == 2
    lost = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(lost) == 2
    assert all(third in r.getMessage() for r in lost)
    assert all("full" in r.getMessage() for r in lost)
    assert "secret" not in caplog.text and "answer" not in caplog.text

    broker.start()  # the writer catches up with what was queued
    try:
        assert broker.wait_idle()
    finally:
        broker.stop()
    assert [r.text for r in rows_of(empty_engine, first)] == ["one"]
    assert [r.text for r in rows_of(empty_engine, second)] == ["two"]
    assert conversation(empty_engine, third) is None
    assert broker.lost_events == 2


def test_an_event_the_writer_cannot_record_is_counted_the_rest_written(
    broker: ContactHistoryBroker, empty_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    sender = new_sender()
    caplog.set_level(logging.ERROR, logger="contact_history")
    broker.publish(user(sender, "hi"))
    broker.publish(slot(sender, "customer_id", nested(5000)))  # str() recurses
    broker.publish(bot(sender, "hello"))
    assert broker.wait_idle()
    assert [r.text for r in rows_of(empty_engine, sender)] == ["hi", "hello"]
    assert broker.lost_events == 1
    assert any(
        sender in r.getMessage() and "slot" in r.getMessage()
        for r in caplog.records
        if r.name == "contact_history.writer" and r.levelno == logging.ERROR
    )


def test_writer_process_survives_events_nested_1000_levels(
    empty_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 11: deep metadata made pickling fail in the queue's feeder thread."""
    url = empty_engine.url.render_as_string(hide_password=False)
    broker = ContactHistoryBroker(database_url=url, flush_interval=0.02)
    broker.start()
    sender = new_sender()
    caplog.set_level(logging.ERROR, logger="bot.broker")
    try:
        deep_user = user(sender, "nested metadata")
        deep_user["metadata"] = nested(1000)
        broker.publish(deep_user)
        broker.publish(slot(sender, "escalated", nested(1000)))  # cannot be pickled
        broker.publish(bot(sender, "answered"))
        assert broker.wait_idle(120), "the writer process wrote nothing"
        broker.publish(user(sender, "next turn"))
        assert broker.wait_idle(60)
    finally:
        broker.stop()
    texts = [r.text for r in rows_of(empty_engine, sender)]
    assert texts == ["nested metadata", "answered", "next turn"]
    assert broker.lost_events == 1
    assert any(sender in r.getMessage() for r in caplog.records)
