"""The TED prediction cache changes no prediction: real model, every test story.

The trained model is loaded once. Every story of ``tests/conversations`` (what
``rasa test core`` evaluates, read the way it reads them) is replayed turn by
turn as ``rasa test core`` does: before each action of the story, the real
processor predicts the next action through the model's graph (all policies and
the ensemble); then the story's own event is applied. This runs three times: TED
as Rasa ships it, then with the cache (filling it), then again (reading it). On
every prediction the ensemble's action, policy and probabilities and TED's own
probabilities must be the same in all three runs.

Rasa's graph looks ``predict_action_probabilities`` up when the model is loaded,
so the model is loaded with a dispatcher in its place that calls whichever TED
method the run uses: Rasa's own, or the cache installed by ``install_policy_cache``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from rasa.core.agent import Agent
from rasa.core.policies.ted_policy import TEDPolicy
from rasa.core.test import _create_data_generator
from rasa.shared.core.events import ActionExecuted
from rasa.shared.core.trackers import DialogueStateTracker

from bot.patches.policy_cache import PredictionCache, install_policy_cache
from bot.training import ensure_model
from tests.e2e.conftest import PROJECT

STORIES = PROJECT / "tests" / "conversations"
STOCK = TEDPolicy.predict_action_probabilities


@dataclass(frozen=True)
class Step:
    """One prediction: before an action of a story."""

    story: str
    index: int
    expected: str
    action: str
    policy: str | None
    probabilities: tuple[float, ...]
    ted: tuple[tuple[float, ...], ...]  # TED's own output(s) during the prediction


class Harness:
    """The loaded model, the story trackers, and the TED method in use."""

    def __init__(self) -> None:
        self.ted_method: Callable[..., Any] = STOCK
        self.ted_outputs: list[tuple[float, ...]] = []
        self.policies: set[Any] = set()
        self.first_call: tuple[Any, Any, dict[str, Any]] | None = None
        harness = self

        def dispatch(policy: Any, tracker: Any, domain: Any, **kwargs: Any) -> Any:
            harness.policies.add(policy)
            if harness.first_call is None:
                harness.first_call = (tracker.copy(), domain, dict(kwargs))
            prediction = harness.ted_method(policy, tracker, domain, **kwargs)
            harness.ted_outputs.append(tuple(prediction.probabilities))
            return prediction

        install_policy_cache(0)
        TEDPolicy.predict_action_probabilities = dispatch  # type: ignore[method-assign]
        try:
            self.agent = Agent.load(str(ensure_model(PROJECT)))
        finally:
            TEDPolicy.predict_action_probabilities = STOCK  # type: ignore[method-assign]
        generator = _create_data_generator(
            str(STORIES), self.agent, use_conversation_test_files=True
        )
        self.trackers = generator.generate_story_trackers()

    def run(self, ted_method: Callable[..., Any]) -> list[Step]:
        """Every prediction of every story with ``ted_method`` as TED's method."""
        self.ted_method = ted_method
        return [step for tracker in self.trackers for step in self.replay(tracker)]

    def replay(self, story: DialogueStateTracker) -> Iterator[Step]:
        """Predict before each action of the story, then apply the story's event."""
        processor = self.agent.processor
        assert processor is not None
        events = list(story.events)
        partial = DialogueStateTracker.from_events(
            story.sender_id,
            events[:1],
            processor.domain.slots,
            sender_source=story.sender_source,
        )
        for index, event in enumerate(events[1:], start=1):
            if isinstance(event, ActionExecuted):
                self.ted_outputs = []
                _action, prediction = processor.predict_next_with_tracker_if_should(
                    partial
                )
                names = processor.domain.action_names_or_texts
                yield Step(
                    story=story.sender_id,
                    index=index,
                    expected=event.action_name or event.action_text or "",
                    action=names[prediction.max_confidence_index],
                    policy=prediction.policy_name,
                    probabilities=tuple(prediction.probabilities),
                    ted=tuple(self.ted_outputs),
                )
            partial.update(event)


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    yield Harness()
    install_policy_cache(0)  # leave TED as Rasa ships it for other tests
    assert TEDPolicy.predict_action_probabilities is STOCK


def story_count() -> int:
    """Stories in the test files, counted from the YAML itself."""
    return sum(
        len(yaml.safe_load(path.read_text()).get("stories", []))
        for path in sorted(STORIES.glob("*.yml"))
    )


def assert_same(got: list[Step], want: list[Step]) -> None:
    assert len(got) == len(want)
    for ours, stock in zip(got, want, strict=True):
        where = f"{stock.story} event {stock.index} (expected {stock.expected})"
        assert (ours.story, ours.index) == (stock.story, stock.index)
        assert ours.action == stock.action, where
        assert ours.policy == stock.policy, where
        assert ours.probabilities == pytest.approx(stock.probabilities, abs=1e-6), where
        assert len(ours.ted) == len(stock.ted), where
        for ted_ours, ted_stock in zip(ours.ted, stock.ted, strict=True):
            assert ted_ours == pytest.approx(ted_stock, abs=1e-6), where


def test_cache_changes_no_prediction_on_any_test_story(harness: Harness) -> None:
    assert len(harness.trackers) == story_count() == 54
    stock = harness.run(STOCK)
    assert len(stock) > 5 * len(harness.trackers)
    assert all(len(step.ted) == 1 for step in stock)  # TED ran on every prediction
    assert {step.story for step in stock} == {t.sender_id for t in harness.trackers}

    assert install_policy_cache(4096) == 4096
    cached_method = TEDPolicy.predict_action_probabilities
    install_policy_cache(0)  # the class is Rasa's again; the run uses the wrapper
    filling = harness.run(cached_method)
    reading = harness.run(cached_method)

    (policy,) = harness.policies
    cache: PredictionCache = policy.__dict__["_crm_prediction_cache"]
    assert_same(filling, stock)
    assert_same(reading, stock)
    # The second cached run is answered from the cache alone, and the stories
    # share states (hits in the first run) without all being alike.
    assert cache.hits >= len(stock) + 1
    assert cache.hits + cache.misses == 2 * len(stock)
    assert 1 < len(cache) < len(stock)
    # What the ensemble does to a prediction must not reach the cache.
    assert harness.first_call is not None
    tracker, domain, kwargs = harness.first_call
    hits = cache.hits
    hit = cached_method(policy, tracker, domain, **kwargs)
    hit.probabilities[:] = [99.0] * len(hit.probabilities)
    again = cached_method(policy, tracker, domain, **kwargs)
    assert cache.hits == hits + 2
    assert again.probabilities == pytest.approx(list(stock[0].ted[0]), abs=1e-6)
