"""The turn gate on Rasa's own classes: bounded concurrency, every turn served.

Messages go through a real ``Agent.handle_message`` (per-conversation lock from
Rasa's ``InMemoryLockStore``) into the real, gated
``MessageProcessor.handle_message``: session start, the user message logged on
the tracker, the tracker saved. The processor is a real ``MessageProcessor``
whose trained model is replaced by NLU-only model metadata (loading the trained
model would cost a minute; with an NLU-only model Rasa's own method logs the
message and skips dialogue prediction). The slow part underneath is the tracker
store: Rasa's in-memory store behind a 20 ms link, as a remote SQL store would be.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from rasa.core.agent import Agent
from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
from rasa.core.lock_store import InMemoryLockStore
from rasa.core.nlg import TemplatedNaturalLanguageGenerator
from rasa.core.processor import MessageProcessor
from rasa.core.tracker_store import InMemoryTrackerStore
from rasa.engine.graph import GraphSchema
from rasa.engine.storage.storage import ModelMetadata
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.data import TrainingType

from bot.patches.turn_gate import install_turn_gate

pytestmark = pytest.mark.filterwarnings("ignore:No core model:UserWarning")

DELAY = 0.02
STOCK = MessageProcessor.handle_message
DOMAIN = Domain.from_dict({"intents": ["greet"], "responses": {}})


class SlowTrackerStore(InMemoryTrackerStore):
    """Rasa's in-memory tracker store behind a slow link; counts turns in flight.

    A turn starts with the first read of its conversation and ends with the save
    of a tracker holding its user message (one message per conversation here).
    """

    def __init__(self, domain: Domain) -> None:
        super().__init__(domain)
        self.started: set[str] = set()
        self.finished: set[str] = set()
        self.peak = 0

    async def retrieve(self, sender_id: str) -> DialogueStateTracker | None:
        self.started.add(sender_id)
        self.peak = max(self.peak, len(self.started - self.finished))
        await asyncio.sleep(DELAY)
        return await super().retrieve(sender_id)

    async def save(self, tracker: DialogueStateTracker) -> None:
        await asyncio.sleep(DELAY)
        await super().save(tracker)
        if any(isinstance(event, UserUttered) for event in tracker.events):
            self.finished.add(tracker.sender_id)


def nlu_only_metadata() -> ModelMetadata:
    """Metadata of an NLU-only model (Rasa's processor then skips prediction)."""
    return ModelMetadata(
        trained_at=datetime.now(timezone.utc),
        rasa_open_source_version="3.6.21",
        model_id="turn-gate-test",
        assistant_id="turn-gate-test",
        domain=DOMAIN,
        train_schema=GraphSchema({}),
        predict_schema=GraphSchema({}),
        project_fingerprint="turn-gate-test",
        core_target=None,
        nlu_target="nlu",
        language="en",
        training_type=TrainingType.NLU,
    )


def agent_with(store: SlowTrackerStore) -> Agent:
    """A real Agent whose real MessageProcessor has an NLU-only model."""
    agent = Agent(domain=DOMAIN, tracker_store=store, lock_store=InMemoryLockStore())
    processor = MessageProcessor.__new__(MessageProcessor)  # no model to load
    processor.nlg = TemplatedNaturalLanguageGenerator(DOMAIN.responses)
    processor.tracker_store = agent.tracker_store
    processor.lock_store = agent.lock_store
    processor.max_number_of_predictions = 10
    processor.on_circuit_break = None
    processor.action_endpoint = None
    processor.model_metadata = nlu_only_metadata()
    processor.domain = DOMAIN
    processor.http_interpreter = None
    agent.processor = processor
    return agent


@pytest.fixture(autouse=True)
def stock_processor() -> Iterator[None]:
    install_turn_gate(0)
    yield
    install_turn_gate(0)  # leave Rasa's processor as shipped for other tests
    assert MessageProcessor.handle_message is STOCK


async def burst(turns: int) -> SlowTrackerStore:
    """One message from each of ``turns`` conversations, all at once."""
    store = SlowTrackerStore(DOMAIN)
    agent = agent_with(store)
    messages = [
        UserMessage(
            f"hello {n}",
            CollectingOutputChannel(),
            sender_id=f"customer-{n}",
            parse_data={
                "text": f"hello {n}",
                "intent": {"name": "greet", "confidence": 1.0},
                "entities": [],
            },
        )
        for n in range(turns)
    ]
    await asyncio.gather(*(agent.handle_message(m) for m in messages))
    for n in range(turns):  # every turn was served and saved
        tracker = await InMemoryTrackerStore.retrieve(store, f"customer-{n}")
        assert tracker is not None
        assert tracker.latest_message.text == f"hello {n}"
    assert store.finished == {f"customer-{n}" for n in range(turns)}
    return store


@pytest.mark.parametrize("limit", [1, 3, 8])
async def test_at_most_limit_turns_run_and_all_are_served(limit: int) -> None:
    assert install_turn_gate(limit) == limit
    assert MessageProcessor.handle_message is not STOCK
    store = await burst(30)
    assert store.peak == limit


async def test_without_the_gate_every_turn_runs_at_once() -> None:
    store = await burst(30)
    assert store.peak == 30  # what the gate prevents


async def test_limit_zero_turns_the_gate_off() -> None:
    install_turn_gate(2)
    assert install_turn_gate(0) == 0
    assert MessageProcessor.handle_message is STOCK
    store = await burst(30)
    assert store.peak == 30


async def test_regating_replaces_the_limit_instead_of_stacking() -> None:
    install_turn_gate(2)
    install_turn_gate(5)
    assert MessageProcessor.handle_message.__wrapped__ is STOCK
    store = await burst(30)
    assert store.peak == 5


def test_same_limit_keeps_the_installed_gate() -> None:
    install_turn_gate(4)
    gated = MessageProcessor.handle_message
    install_turn_gate(4)
    assert MessageProcessor.handle_message is gated


@pytest.mark.parametrize("bad", [-1, 2.5, "4", True])
def test_bad_limits_are_clear_errors(bad: object) -> None:
    with pytest.raises(ValueError, match="max_concurrent_turns"):
        install_turn_gate(bad)  # type: ignore[arg-type]
    assert MessageProcessor.handle_message is STOCK
