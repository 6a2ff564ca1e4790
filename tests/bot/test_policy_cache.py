"""The LRU store behind the TED prediction cache, and installing it on TEDPolicy.

That cached predictions equal TED's own is tested on the trained model in
``tests/e2e/test_prediction_cache_on_model.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from rasa.core.policies.ted_policy import TEDPolicy

from bot.patches.policy_cache import PredictionCache, freeze, install_policy_cache

STOCK = TEDPolicy.predict_action_probabilities


def test_states_freeze_independently_of_dict_order() -> None:
    one = [[{"user": {"intent": "greet"}, "slots": {"a": (1.0,), "b": (0.0,)}}]]
    two = [[{"slots": {"b": (0.0,), "a": (1.0,)}, "user": {"intent": "greet"}}]]
    other = [[{"user": {"intent": "greet"}, "slots": {"a": (0.0,), "b": (0.0,)}}]]
    assert freeze(one) == freeze(two)
    assert hash(freeze(one)) == hash(freeze(two))
    assert freeze(one) != freeze(other)


def test_least_recently_used_entries_go_first() -> None:
    cache = PredictionCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the oldest
    cache.put("c", 3)
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c"), len(cache)) == (1, 3, 2)
    assert (cache.hits, cache.misses) == (3, 1)
    assert cache.summary() == (
        "TED prediction cache: 2/2 entries, 75.0% hits over 4 predictions"
    )


@pytest.fixture()
def stock_ted() -> Iterator[None]:
    install_policy_cache(0)
    yield
    install_policy_cache(0)  # leave TED as Rasa ships it for other tests
    assert TEDPolicy.predict_action_probabilities is STOCK


def test_install_wraps_ted_once_and_zero_restores_it(stock_ted: None) -> None:
    assert install_policy_cache(128) == 128
    wrapped = TEDPolicy.predict_action_probabilities
    assert wrapped is not STOCK
    assert wrapped.__wrapped_stock__ is STOCK
    assert install_policy_cache(128) == 128
    assert TEDPolicy.predict_action_probabilities is wrapped  # idempotent
    install_policy_cache(64)
    assert TEDPolicy.predict_action_probabilities.__wrapped_stock__ is STOCK
    assert install_policy_cache(0) == 0
    assert TEDPolicy.predict_action_probabilities is STOCK


@pytest.mark.parametrize("bad", [-1, 1.5, "128", None])
def test_bad_size_is_a_clear_error(stock_ted: None, bad: object) -> None:
    with pytest.raises(ValueError, match="policy_cache_size"):
        install_policy_cache(bad)  # type: ignore[arg-type]
    assert TEDPolicy.predict_action_probabilities is STOCK
