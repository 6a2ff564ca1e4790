"""Exponential back-off: the one retry schedule of every sender and worker."""

from __future__ import annotations


def backoff_delay(attempt: int, base: float, maximum: float) -> float:
    """Seconds to wait after the ``attempt``-th failure: ``base`` doubling, capped."""
    return min(base * 2 ** max(attempt - 1, 0), maximum)
