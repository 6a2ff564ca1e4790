"""Admission control: at most N turns are processed at once, the rest wait in line.

Replaces Rasa 3.6's ``MessageProcessor.handle_message`` with a wrapper that runs
the stock method under an ``asyncio.Semaphore`` (after ``Agent.handle_message``
has taken Rasa's per-conversation lock).

Why: Rasa starts processing every incoming message at once. A turn that calls
the action server awaits its answer, and meanwhile every other turn in flight
runs its CPU-bound NLU and policy work; under load a turn that called an action
then waits behind all of them, so the slowest turns (p99) grow with the number
of turns in flight. Measured cost removed (``crm bench latency``, 2 cores,
docs/benchmarks.md): p99 at concurrency 50 went from 1.59x to 0.73x bare Rasa;
at concurrency 10 a limit of 4 gave full/bare p50 / p99 / throughput 0.64x /
0.51x / 1.55x with the prediction cache (1.05x / 0.87x / 0.96x without), a limit
of 2 0.70x / 0.46x / 1.52x (1.25x / 0.92x / 0.87x), while 8 swung between 0.81x
and 1.36x at p50 from run to run. Later turns wait without using CPU.

The limit is passed in (``Settings.turn_limit``: ``CRM_MAX_CONCURRENT_TURNS``,
default two per usable core; 0 disables the gate). Keep it above the number of
custom actions that may be slow at the same time: a turn waiting on a slow
action (up to ``CRM_ACTION_TIMEOUT``) holds its place.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from bot.patches.values import whole_number

GATE_MARK = "__turn_gate__"


def _stock(method: Any) -> Any:
    """The method under any gate installed here."""
    while getattr(method, GATE_MARK, None) is not None:
        method = method.__wrapped__
    return method


def gate_method(owner: type, name: str, limit: int) -> None:
    """Let at most ``limit`` calls of the coroutine method run at once (0: ungate).

    Re-gating replaces the previous gate instead of stacking a second one; gating
    again with the same limit keeps the installed gate (and its waiting line).
    """
    current = getattr(owner, name)
    if getattr(current, GATE_MARK, None) == limit:
        return
    stock = _stock(current)
    if limit == 0:
        setattr(owner, name, stock)
        return
    gate: asyncio.Semaphore | None = None

    @functools.wraps(stock)
    async def gated(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal gate
        if gate is None:  # created on the serving event loop
            gate = asyncio.Semaphore(limit)
        async with gate:
            return await stock(self, *args, **kwargs)

    setattr(gated, GATE_MARK, limit)
    setattr(owner, name, gated)


def check_limit(limit: int) -> int:
    """``limit`` if it is a whole number >= 0 (ValueError naming the setting)."""
    return whole_number(
        limit, setting="max_concurrent_turns", env="CRM_MAX_CONCURRENT_TURNS"
    )


def install_turn_gate(limit: int) -> int:
    """Gate Rasa's ``MessageProcessor.handle_message``; return the limit (0: off).

    Idempotent; 0 restores Rasa's own method.

    Raises:
        ValueError: ``limit`` is negative or not a whole number.
    """
    from rasa.core.processor import MessageProcessor

    gate_method(MessageProcessor, "handle_message", check_limit(limit))
    return limit
