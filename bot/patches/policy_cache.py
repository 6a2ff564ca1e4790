"""Remember TEDPolicy predictions per dialogue state instead of recomputing them.

Replaces Rasa 3.6's ``TEDPolicy.predict_action_probabilities`` with a wrapper
that looks the prediction up in an LRU cache before calling the stock method.

Why: TEDPolicy is the largest cost of a turn, ~6.5 ms per call, two calls per
turn, most of it TensorFlow's per-call overhead, not arithmetic. When TED does
not use message text (no end-to-end stories, as here), its prediction is a pure
function of the last ``max_history`` dialogue states: intents, entities, previous
actions, featurized slots and the active form. Those states repeat across
conversations. Measured cost removed (in process, the latency bench's
conversations, docs/benchmarks.md): 28.5 -> 16.7 ms CPU per turn, 94 % hits,
replies identical.

The wrapper computes the states with TED's own featurizer (~0.5 ms); on a state
sequence seen before it returns a copy of the earlier prediction, otherwise it
runs TED and keeps the result (least recently used entries are evicted). With
end-to-end text features the cache stays out of the way. The size is passed in
(``Settings.policy_cache_size``: ``CRM_POLICY_CACHE_SIZE``, default 4096 state
sequences; 0 disables the cache). Install it before the model is loaded: Rasa's
graph looks the method up then. Every 5,000 predictions the server logs the
cache's fill and hit rate. Exactness is tested on the real model over every
turn of the test stories (``tests/e2e/test_prediction_cache_on_model.py``).
"""

from __future__ import annotations

import copy
import functools
import logging
from collections import OrderedDict
from typing import Any

from bot.patches.values import whole_number

REPORT_EVERY = 5000  # predictions between two hit-rate log lines

logger = logging.getLogger(__name__)


def freeze(value: Any) -> Any:
    """A hashable, order-independent form of Rasa states (dicts, lists, tuples)."""
    if isinstance(value, dict):
        return tuple(sorted((key, freeze(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(freeze(item) for item in value)
    return value


class PredictionCache:
    """A bounded LRU map from frozen state sequences to predictions, with counts."""

    def __init__(self, size: int) -> None:
        """Keep at most ``size`` predictions."""
        self.size = size
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any) -> Any | None:
        """The prediction stored for ``key`` (marked as recently used), or None."""
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return found

    def put(self, key: Any, prediction: Any) -> None:
        """Store a prediction, evicting the least recently used beyond ``size``."""
        self._entries[key] = prediction
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def report_due(self) -> bool:
        """True once every ``REPORT_EVERY`` lookups."""
        return (self.hits + self.misses) % REPORT_EVERY == 0

    def summary(self) -> str:
        """Entries and hit rate, for the log (no dialogue content)."""
        lookups = self.hits + self.misses
        rate = self.hits / lookups if lookups else 0.0
        return (
            f"TED prediction cache: {len(self)}/{self.size} entries, "
            f"{rate:.1%} hits over {lookups} predictions"
        )


def copy_of(prediction: Any) -> Any:
    """A prediction the ensemble may change (it zeroes rejected actions in place)."""
    fresh = copy.copy(prediction)
    fresh.probabilities = list(prediction.probabilities)
    fresh.events = list(prediction.events)
    fresh.optional_events = list(prediction.optional_events)
    return fresh


def uses_text(policy: Any) -> bool:
    """True when TED reads message text (end-to-end): then states are not enough."""
    from rasa.shared.nlu.constants import TEXT

    return bool(policy.only_e2e) or TEXT in (policy.fake_features or {})


def state_key(
    policy: Any, tracker: Any, domain: Any, rule_only_data: dict[str, Any] | None
) -> Any:
    """The states TED featurizes for this prediction, frozen (same arguments as TED)."""
    from rasa.core.policies.policy import SupportedData

    ml_only = policy.supported_data() == SupportedData.ML_DATA
    states = policy.featurizer.prediction_states(
        [tracker],
        domain,
        use_text_for_last_user_input=False,
        ignore_rule_only_turns=ml_only,
        rule_only_data=rule_only_data,
        ignore_action_unlikely_intent=ml_only,
    )
    return freeze(states)


def check_size(size: int) -> int:
    """``size`` if it is a whole number >= 0 (ValueError naming the setting)."""
    return whole_number(size, setting="policy_cache_size", env="CRM_POLICY_CACHE_SIZE")


def install_policy_cache(size: int) -> int:
    """Wrap ``TEDPolicy.predict_action_probabilities``; return the size (0: off).

    Idempotent for the same size; 0 restores Rasa's own method.

    Raises:
        ValueError: ``size`` is negative or not a whole number.
    """
    check_size(size)
    from rasa.core.policies.ted_policy import TEDPolicy

    current = TEDPolicy.predict_action_probabilities
    if getattr(current, "__cache_size__", None) == size:
        return size
    stock = getattr(current, "__wrapped_stock__", current)
    if size == 0:
        TEDPolicy.predict_action_probabilities = stock  # type: ignore[method-assign]
        return 0

    @functools.wraps(stock)
    def predict_action_probabilities(
        self: Any,
        tracker: Any,
        domain: Any,
        rule_only_data: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        if self.model is None or uses_text(self):
            return stock(self, tracker, domain, rule_only_data=rule_only_data, **kwargs)
        cache = self.__dict__.get("_crm_prediction_cache")
        if cache is None:  # one cache per loaded policy (a new model starts empty)
            cache = self.__dict__["_crm_prediction_cache"] = PredictionCache(size)
        key = state_key(self, tracker, domain, rule_only_data)
        found = cache.get(key)
        if found is None:
            found = stock(
                self, tracker, domain, rule_only_data=rule_only_data, **kwargs
            )
            cache.put(key, found)
        if cache.report_due():
            logger.info(cache.summary())
        return copy_of(found)

    predict_action_probabilities.__wrapped_stock__ = stock  # type: ignore[attr-defined]
    predict_action_probabilities.__cache_size__ = size  # type: ignore[attr-defined]
    TEDPolicy.predict_action_probabilities = predict_action_probabilities  # type: ignore[method-assign]
    return size
