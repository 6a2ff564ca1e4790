"""Admission control: at most N turns are processed at once, the rest wait in line.

Rasa starts processing every incoming message at once. A turn that calls the
action server awaits its answer, and meanwhile every other turn in flight runs
its CPU-bound NLU and policy work; under load a turn that called an action then
waits behind all of them, so the slowest turns (p99) grow with the number of
turns in flight. Two cores gain nothing from more than a few concurrent turns,
so ``install_turn_gate`` lets at most ``limit`` turns run inside
``MessageProcessor.handle_message`` (after Rasa's per-conversation lock); later
ones wait on an ``asyncio.Semaphore`` without using CPU.

The limit comes from ``CRM_MAX_CONCURRENT_TURNS`` (default: two per CPU core
this process may use, at least 2; 0 disables the gate). On 2 cores, 4 gave the
best tails at concurrency 10 (docs/benchmarks.md); 2 cost median latency, 8
interleaved too much. Keep it above the number of custom actions that may be
slow at the same time: a turn waiting on a slow action (up to
``CRM_ACTION_TIMEOUT``) holds its place.
"""

from __future__ import annotations

import asyncio
import functools
import os
from typing import Any

from bot.env_settings import non_negative_int

TURNS_PER_CORE = 2


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_limit() -> int:
    """Two turns in flight per usable core, at least 2."""
    return max(2, TURNS_PER_CORE * usable_cores())


def limit_from_env() -> int:
    """``CRM_MAX_CONCURRENT_TURNS`` as a non-negative int (clear error otherwise)."""
    return non_negative_int("CRM_MAX_CONCURRENT_TURNS", default_limit())


def gate_method(owner: type, name: str, limit: int) -> None:
    """Let at most ``limit`` calls of the coroutine method run at once."""
    stock = getattr(owner, name)
    if getattr(stock, "__turn_gate__", None) is not None:
        stock = stock.__wrapped__
    gate: asyncio.Semaphore | None = None

    @functools.wraps(stock)
    async def gated(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal gate
        if gate is None:  # created on the serving event loop
            gate = asyncio.Semaphore(limit)
        async with gate:
            return await stock(self, *args, **kwargs)

    gated.__turn_gate__ = limit  # type: ignore[attr-defined]
    setattr(owner, name, gated)


def install_turn_gate(limit: int | None = None) -> int:
    """Gate Rasa's ``MessageProcessor.handle_message``; return the limit (0: off)."""
    limit = limit_from_env() if limit is None else limit
    if limit > 0:
        from rasa.core.processor import MessageProcessor

        gate_method(MessageProcessor, "handle_message", limit)
    return limit
