"""The turn gate: bounded concurrency, everyone served, clear errors for bad limits."""

from __future__ import annotations

import asyncio
import os

import pytest

from bot.turn_gate import gate_method, limit_from_env


class Worker:
    """Stands in for Rasa's processor: a coroutine method that awaits I/O."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.done: list[int] = []

    async def handle(self, number: int) -> int:
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(0.01)  # an action-server call
        self.running -= 1
        self.done.append(number)
        return number * 2


@pytest.mark.parametrize("limit", [1, 3, 8])
def test_at_most_limit_turns_run_and_all_are_served(limit: int) -> None:
    class Gated(Worker):
        pass

    gate_method(Gated, "handle", limit)
    worker = Gated()

    async def burst() -> list[int]:
        return await asyncio.gather(*(worker.handle(n) for n in range(40)))

    assert asyncio.run(burst()) == [n * 2 for n in range(40)]
    assert worker.peak == min(limit, 40)
    assert sorted(worker.done) == list(range(40))


def test_ungated_worker_runs_everything_at_once() -> None:
    worker = Worker()

    async def burst() -> None:
        await asyncio.gather(*(worker.handle(n) for n in range(40)))

    asyncio.run(burst())
    assert worker.peak == 40  # what the gate prevents


def test_regating_replaces_the_limit_instead_of_stacking() -> None:
    class Gated(Worker):
        pass

    gate_method(Gated, "handle", 2)
    gate_method(Gated, "handle", 5)
    worker = Gated()

    async def burst() -> None:
        await asyncio.gather(*(worker.handle(n) for n in range(20)))

    asyncio.run(burst())
    assert worker.peak == 5


@pytest.mark.parametrize(
    ("raw", "expected"), [("", None), ("4", 4), (" 0 ", 0), (None, "default")]
)
def test_limit_from_env(monkeypatch, raw, expected) -> None:
    if raw is None:
        monkeypatch.delenv("CRM_MAX_CONCURRENT_TURNS", raising=False)
    else:
        monkeypatch.setenv("CRM_MAX_CONCURRENT_TURNS", raw)
    if expected is None:
        with pytest.raises(ValueError, match="whole number"):
            limit_from_env()
    elif expected == "default":
        assert limit_from_env() == max(2, 2 * len(os.sched_getaffinity(0)))
    else:
        assert limit_from_env() == expected


@pytest.mark.parametrize("raw", ["-1", "eight", "2.5"])
def test_bad_limits_are_clear_errors(monkeypatch, raw) -> None:
    monkeypatch.setenv("CRM_MAX_CONCURRENT_TURNS", raw)
    with pytest.raises(ValueError, match="CRM_MAX_CONCURRENT_TURNS must be"):
        limit_from_env()
