"""The LRU store and settings behind the TED prediction cache."""

from __future__ import annotations

import pytest

from bot.policy_cache import PredictionCache, freeze, size_from_env


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


@pytest.mark.parametrize(("raw", "size"), [("0", 0), (" 128 ", 128)])
def test_size_from_environment(
    monkeypatch: pytest.MonkeyPatch, raw: str, size: int
) -> None:
    monkeypatch.setenv("CRM_POLICY_CACHE_SIZE", raw)
    assert size_from_env() == size


@pytest.mark.parametrize("raw", ["-1", "many", "1.5"])
def test_bad_size_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("CRM_POLICY_CACHE_SIZE", raw)
    with pytest.raises(ValueError, match="CRM_POLICY_CACHE_SIZE must be"):
        size_from_env()


def test_default_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRM_POLICY_CACHE_SIZE", raising=False)
    assert size_from_env() == 4096
