"""Handoff benchmark: how fast a handoff reaches an agent, and a reply the customer.

One stack as ``crm run`` starts it (action server, Rasa server with the web
chat socket and the contact-history broker, console) on a seeded SQLite store,
agents on duty (``CRM_AGENT_HOURS=always``). An agent keeps the queue page's
live stream open (``GET /events/queue``, the server-sent events the page
listens to). For each of N handoffs, one after the other:

1. a new web-chat customer (socket.io, token signed as ``GET /chat`` does) says
   "hello" and waits for the bot's answer: the **baseline** bot turn;
2. the customer says "I want to talk to a person"; **to queue** is the time
   until the agent's open queue stream shows the new handoff;
3. the agent claims it and replies through the API; **to customer** is the time
   from the reply's POST to its arrival in the customer's socket;
4. the agent resolves the handoff (the queue stays short, as in real work).

Ratios are against the baseline bot turn of the same run. Targets (issue 13):
p99 < 1 s for both **to queue** and **to customer** on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from rich.console import Console
from rich.table import Table

from bench.latency import BENCH_DIR, RESULTS_DIR, START_TIMEOUT, percentile
from bot.training import ensure_model
from channels.chat_tokens import issue_chat_token
from runtime.processes import free_port
from runtime.stack import BotStack

HANDOFF_LINK = re.compile(r"/handoffs/(\d+)")
STEP_TIMEOUT = 30.0
PATHS = ("to_queue", "to_customer")
FAILURES = (asyncio.TimeoutError, RuntimeError, aiohttp.ClientError)
BENCH_PASSWORD = "bench-handoff-password"


def _prepare_store(url: str) -> None:
    from crm_store.db import engine_for, session_factory
    from crm_store.migrate import upgrade
    from crm_store.seeding import seed_directory
    from crm_store.services.staff import ensure_demo_staff
    from runtime.supervisor import DEMO_DIR

    upgrade(engine_for(url))
    with session_factory(url).begin() as session:
        seed_directory(session, directory=DEMO_DIR)
    with session_factory(url).begin() as session:
        ensure_demo_staff(session, BENCH_PASSWORD)


class QueueWatcher:
    """The agent's open queue page: reads ``/events/queue`` and notes new handoffs."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        """Watch ``url`` with the agent's ``http`` session (bearer header)."""
        self.http = http
        self.url = url
        self.seen: set[int] = set()
        self.arrivals: dict[int, float] = {}
        self.changed = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def run(self) -> None:
        """Read the stream for ever (reconnecting when the server ends it)."""
        while True:
            forever = aiohttp.ClientTimeout(total=None, sock_connect=STEP_TIMEOUT)
            async with self.http.get(self.url, timeout=forever) as response:
                event = None
                async for raw in response.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:") and event == "queue":
                        now = time.perf_counter()
                        for found in HANDOFF_LINK.findall(line):
                            handoff_id = int(found)
                            if handoff_id not in self.seen:
                                self.seen.add(handoff_id)
                                self.arrivals[handoff_id] = now
                                self.changed.set()

    async def next_new(self, before: set[int]) -> tuple[int, float]:
        """Wait for a handoff id not in ``before``; return it and when it arrived."""
        while True:
            fresh = [h for h in self.arrivals if h not in before]
            if fresh:
                return fresh[0], self.arrivals[fresh[0]]
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), STEP_TIMEOUT)


class Customer:
    """A web-chat customer socket."""

    def __init__(self, rasa_url: str, origin: str, secret: str) -> None:
        """Sign a fresh session token."""
        self.rasa_url, self.origin = rasa_url, origin
        self.token, _ = issue_chat_token(secret)
        self.inbox: asyncio.Queue[tuple[float, dict]] = asyncio.Queue()
        self.sio = socketio.AsyncClient(reconnection=False)

        async def on_message(data: dict) -> None:
            await self.inbox.put((time.perf_counter(), data))

        self.sio.on("bot_uttered", on_message)

    async def connect(self) -> None:
        """Open the socket as the page does."""
        await self.sio.connect(
            self.rasa_url,
            auth={"token": self.token},
            transports=["polling"],  # aiohttp 3.8 (Rasa pin) lacks the WS timeout API
            headers={"Origin": self.origin},
            wait_timeout=STEP_TIMEOUT,
        )

    async def turn(self, text: str) -> float:
        """Send ``text``; seconds until the first answer, then drain the rest."""
        start = time.perf_counter()
        await self.sio.emit("user_uttered", {"message": text})
        at, _ = await asyncio.wait_for(self.inbox.get(), STEP_TIMEOUT)
        await asyncio.sleep(0.3)
        while not self.inbox.empty():
            self.inbox.get_nowait()
        return at - start

    async def wait_for_author(self, author: str) -> float:
        """When the next message by ``author`` arrived (perf_counter)."""
        while True:
            at, data = await asyncio.wait_for(self.inbox.get(), STEP_TIMEOUT)
            if data.get("author") == author:
                return at


async def _login(http: aiohttp.ClientSession, console_url: str) -> None:
    async with http.post(
        f"{console_url}/api/auth/token",
        json={"username": "agent", "password": BENCH_PASSWORD},
    ) as response:
        response.raise_for_status()
        token = (await response.json())["access_token"]
    http.headers["Authorization"] = f"Bearer {token}"


async def _post(http: aiohttp.ClientSession, url: str, body: dict) -> None:
    timeout = aiohttp.ClientTimeout(total=STEP_TIMEOUT)
    async with http.post(url, json=body, timeout=timeout) as response:
        if response.status >= 300:
            raise RuntimeError(f"POST {url}: {response.status} {await response.text()}")


async def drive(stack: BotStack, count: int, console: Console) -> dict[str, Any]:
    """Run ``count`` handoffs one after the other; return the timings in seconds."""
    console_url = stack.console_url or ""
    timings: dict[str, list[float]] = {
        "baseline": [],
        "to_queue": [],
        "to_customer": [],
    }
    errors = 0
    closing: list[asyncio.Future] = []
    async with aiohttp.ClientSession() as http:
        await _login(http, console_url)
        watcher = QueueWatcher(http, f"{console_url}/events/queue")
        task = asyncio.ensure_future(watcher.run())
        await asyncio.sleep(1.0)
        try:
            for number in range(1, count + 1):
                customer = Customer(stack.rasa_url, console_url, stack.console_secret)
                try:
                    await customer.connect()
                    timings["baseline"].append(await customer.turn("hello"))
                    before = set(watcher.arrivals)
                    start = time.perf_counter()
                    await customer.sio.emit(
                        "user_uttered", {"message": "I want to talk to a person"}
                    )
                    handoff_id, seen_at = await watcher.next_new(before)
                    timings["to_queue"].append(seen_at - start)
                    api = f"{console_url}/api/handoffs/{handoff_id}"
                    await _post(http, f"{api}/claim", {})
                    start = time.perf_counter()
                    await _post(http, f"{api}/messages", {"text": f"Hello #{number}"})
                    arrived = await customer.wait_for_author("agent")
                    timings["to_customer"].append(arrived - start)
                    await _post(http, f"{api}/resolve", {"handback": False, "note": ""})
                except (
                    asyncio.TimeoutError,
                    RuntimeError,
                    aiohttp.ClientError,
                ) as error:
                    errors += 1
                    console.print(f"handoff {number}: {type(error).__name__}: {error}")
                finally:
                    # Closing a long-polling client waits for its pending poll
                    # (up to the ping interval): close in the background.
                    closing.append(asyncio.ensure_future(customer.sio.disconnect()))
                if number % 20 == 0:
                    console.print(f"{number}/{count} handoffs ({errors} errors)")
        finally:
            task.cancel()
            await asyncio.gather(*closing, return_exceptions=True)
    return {"timings": timings, "errors": errors}


def summarize(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds."""
    ms = [v * 1000 for v in values] or [float("nan")]
    return {
        "n": len(values),
        "p50_ms": statistics.median(ms),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
    }


def run_handoff_bench(
    *, handoffs: int = 200, console: Console, output: Path | None = None
) -> dict[str, Any]:
    """Start the stack, run the handoffs, print a table and write JSON."""
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    logs = BENCH_DIR / "handoff-logs"
    shutil.rmtree(logs, ignore_errors=True)
    db = BENCH_DIR / "handoff.db"
    for suffix in ("", "-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    _prepare_store(url)
    model = ensure_model(log=console.print)
    stack = BotStack(
        database_url=url,
        model=model,
        workdir=BENCH_DIR / "handoff-run",
        log_dir=logs,
        console_port=free_port(),
        extra_env={"CRM_AGENT_HOURS": "always", "CRM_HANDOFF_SENDER_LIMIT": "1000"},
    )
    stack.up(START_TIMEOUT)
    try:
        raw = asyncio.run(drive(stack, handoffs, console))
    finally:
        stack.stop()
    figures = {name: summarize(values) for name, values in raw["timings"].items()}
    base = figures["baseline"]
    results = {
        "handoffs": handoffs,
        "errors": raw["errors"],
        "figures": figures,
        "ratios_over_bot_turn": {
            name: {k: figures[name][k] / base[k] for k in ("p50_ms", "p99_ms")}
            for name in PATHS
        },
        "target_p99_ms": 1000,
    }
    _print(results, console)
    output = output or RESULTS_DIR / "handoff.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {output}")
    return results


def _print(results: dict[str, Any], console: Console) -> None:
    table = Table(title=f"handoff, {results['handoffs']} handoffs one after another")
    for column in (
        "path",
        "n",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "p99 / bot turn",
    ):
        table.add_column(column, justify="right")
    labels = {
        "baseline": "bot turn (baseline)",
        "to_queue": "'a person' -> agent's queue page",
        "to_customer": "agent reply -> customer's page",
    }
    for name, label in labels.items():
        row = results["figures"][name]
        ratio = results["ratios_over_bot_turn"].get(name)
        table.add_row(
            label,
            str(row["n"]),
            f"{row['p50_ms']:.0f}",
            f"{row['p90_ms']:.0f}",
            f"{row['p99_ms']:.0f}",
            f"{row['max_ms']:.0f}",
            f"{ratio['p99_ms']:.2f}x" if ratio else "1.00x",
        )
    console.print(table)
    console.print(f"errors: {results['errors']}; target p99 < 1000 ms for both paths")


if __name__ == "__main__":
    run_handoff_bench(console=Console())
