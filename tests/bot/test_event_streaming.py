"""Counted event streaming publishes exactly what Rasa's tracker diff publishes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from rasa.core.brokers.broker import EventBroker
from rasa.core.tracker_store import InMemoryTrackerStore, TrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    BotUttered,
    SessionStarted,
    SlotSet,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker

from bot.patches.event_streaming import install_counted_streaming, stored_count


class RecordingBroker(EventBroker):
    """A Rasa event broker that keeps what the tracker store publishes."""

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    def publish(self, event: dict[str, Any]) -> None:
        self.published.append(event)


class CountingStore(InMemoryTrackerStore):
    """Rasa's in-memory store, counting how often a stored tracker is re-read."""

    retrievals = 0

    async def retrieve(self, sender_id: str) -> DialogueStateTracker | None:
        self.retrievals += 1
        return await super().retrieve(sender_id)


@pytest.fixture()
def stock_methods() -> Iterator[None]:
    saved = (TrackerStore.get_or_create_tracker, TrackerStore.stream_events)
    yield
    TrackerStore.get_or_create_tracker, TrackerStore.stream_events = saved


def turn(n: int) -> list[Any]:
    return [
        UserUttered(f"message {n}", {"name": "greet", "confidence": 0.9}),
        SlotSet("customer_id", f"C{n}"),
        BotUttered(f"reply {n}"),
        ActionExecuted("action_listen"),
    ]


async def run_turns(store: CountingStore, sender: str, turns: int) -> None:
    """What Rasa's processor does per message: fetch, add the turn, save."""
    for n in range(turns):
        tracker = await store.get_or_create_tracker(sender)
        for event in turn(n):
            tracker.update(event)
        await store.save(tracker)


def published_texts(broker: RecordingBroker) -> list[tuple[str, Any]]:
    return [(e["event"], e.get("text") or e.get("name")) for e in broker.published]


async def test_same_events_as_rasa_without_rereading(stock_methods: None) -> None:
    stock_broker, counted_broker = RecordingBroker(), RecordingBroker()
    stock = CountingStore(Domain.empty(), event_broker=stock_broker)
    await run_turns(stock, "alice", 3)

    install_counted_streaming()
    install_counted_streaming()  # idempotent
    counted = CountingStore(Domain.empty(), event_broker=counted_broker)
    await run_turns(counted, "alice", 3)

    assert published_texts(counted_broker) == published_texts(stock_broker)
    assert len(counted_broker.published) == 1 + 3 * 4  # first action_listen + turns
    # Rasa re-read the tracker on every save; counted streaming only fetches.
    assert stock.retrievals == 3 + 4  # 3 fetches + 4 saves (one at creation)
    assert counted.retrievals == 3 + 1  # 3 fetches + the creation's save


async def test_second_save_in_a_turn_publishes_only_what_is_new(
    stock_methods: None,
) -> None:
    install_counted_streaming()
    broker = RecordingBroker()
    store = CountingStore(Domain.empty(), event_broker=broker)
    tracker = await store.get_or_create_tracker("bob")
    tracker.update(UserUttered("hi"))
    await store.save(tracker)
    tracker.update(BotUttered("hello"))
    await store.save(tracker)
    assert published_texts(broker) == [
        ("action", "action_listen"),
        ("user", "hi"),
        ("bot", "hello"),
    ]
    assert stored_count(tracker) == len(tracker.events)


async def test_trackers_without_a_count_take_rasas_path(stock_methods: None) -> None:
    install_counted_streaming()
    broker = RecordingBroker()
    store = CountingStore(Domain.empty(), event_broker=broker)
    await run_turns(store, "carol", 1)
    before = len(broker.published)
    # A tracker built elsewhere (e.g. from a request body) holding old and new events.
    stored = await store.retrieve("carol")
    rebuilt = DialogueStateTracker.from_events(
        "carol", [*stored.events, UserUttered("new one")], slots=[]
    )
    assert stored_count(rebuilt) is None
    await store.save(rebuilt)
    assert published_texts(broker)[before:] == [("user", "new one")]


async def test_new_session_in_the_turn_is_published(stock_methods: None) -> None:
    install_counted_streaming()
    broker = RecordingBroker()
    store = CountingStore(Domain.empty(), event_broker=broker)
    await run_turns(store, "dave", 1)
    tracker = await store.get_or_create_tracker("dave")
    tracker.update(ActionExecuted("action_session_start"))
    tracker.update(SessionStarted())
    tracker.update(UserUttered("back again"))
    await store.save(tracker)
    next_turn = await store.get_or_create_tracker("dave")  # last session only
    next_turn.update(BotUttered("welcome back"))
    await store.save(next_turn)
    assert published_texts(broker)[-4:] == [
        ("action", "action_session_start"),
        ("session_started", None),
        ("user", "back again"),
        ("bot", "welcome back"),
    ]
