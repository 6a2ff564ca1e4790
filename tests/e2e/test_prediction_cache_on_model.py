"""The TED prediction cache returns what TED itself predicts, on the real model."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from rasa.core.agent import Agent
from rasa.core.policies.ted_policy import TEDPolicy
from rasa.utils.endpoints import EndpointConfig

from bot.policy_cache import install_policy_cache
from bot.training import ensure_model
from tests.e2e.conftest import PROJECT, Stack

SCRIPTS = [
    ["hi", "how long does shipping take?", "thanks", "bye"],
    ["hello", "where is my order?", "ORD-10001", "1011 AB", "thank you", "goodbye"],
    ["are you a bot?", "I want to talk to a human"],
    ["hey", "what's the weather in Paris?", "tell me a joke", "bye"],
    ["I want to return something", "never mind", "ok bye"],
]


@pytest.fixture()
def stock_ted() -> Iterator[None]:
    yield
    install_policy_cache(0)  # leave TED as Rasa ships it for other tests


async def test_cached_predictions_equal_teds_own(stack: Stack, stock_ted: None) -> None:
    install_policy_cache(0)
    calls: list[tuple[Any, Any, Any, dict[str, Any]]] = []
    stock = TEDPolicy.predict_action_probabilities

    def recording(self: Any, tracker: Any, domain: Any, **kwargs: Any) -> Any:
        calls.append((self, tracker.copy(), domain, kwargs))
        return stock(self, tracker, domain, **kwargs)

    # Rasa's graph looks the method up when the model is loaded.
    TEDPolicy.predict_action_probabilities = recording  # type: ignore[method-assign]
    agent = Agent.load(
        str(ensure_model(PROJECT)),
        action_endpoint=EndpointConfig(stack.action_url),
    )
    try:
        for script in SCRIPTS:
            sender = f"cache-{uuid.uuid4().hex[:8]}"
            for text in script:
                await agent.handle_text(text, sender_id=sender)
    finally:
        TEDPolicy.predict_action_probabilities = stock  # type: ignore[method-assign]
    assert len(calls) >= 2 * sum(len(s) for s in SCRIPTS)

    expected = [
        stock(policy, tracker, domain, **kwargs).probabilities
        for policy, tracker, domain, kwargs in calls
    ]
    assert install_policy_cache(512) == 512
    for _ in range(2):  # the first pass fills the cache, the second reads it
        for call, want in zip(calls, expected, strict=True):
            policy, tracker, domain, kwargs = call
            got = TEDPolicy.predict_action_probabilities(
                policy, tracker, domain, **kwargs
            )
            assert got.probabilities == pytest.approx(want, abs=1e-6)
            got.probabilities[0] = 99.0  # what the ensemble does must not stick
    cache = calls[0][0].__dict__["_crm_prediction_cache"]
    assert cache.hits >= len(calls)  # the whole second pass and repeats
    assert 1 < len(cache) < len(calls)  # states repeat, but not all are alike
