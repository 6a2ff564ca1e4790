"""Latency benchmark: the same messages through bare Rasa and through our full stack.

Three servers are started in the same run and measured one after the other at
each concurrency level (interleaved, so background load hits all alike):

- ``bare``: ``rasa run`` on the trivial ``rasa init`` bot (no actions, no broker);
- ``full``: our stack as ``crm run`` starts it: our model, the action server on a
  seeded SQLite store, the guarded Rasa server with the contact-history broker;
- ``full_no_broker``: the same without the event broker, to attribute its cost;
- ``full_no_cache``: ``full`` without the TEDPolicy prediction cache
  (``CRM_POLICY_CACHE_SIZE=0``). The bench's conversations repeat a few dialogue
  paths, so the cache hits far more often here than on real traffic: this row
  shows what our stack costs on top of Rasa's own work when the cache never hits.

The 500 messages form 100 conversations of five turns (greeting, question,
reaction, "are you a bot?", goodbye); at concurrency c, c conversations run at
once, each sending its turns in order. Every run uses fresh sender ids. A
micro-benchmark of the broker itself (``publish`` cost on the event loop and the
writer's throughput) is included.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

from bot.training import ensure_model
from crm_settings import PROJECT_ROOT
from runtime.processes import ServerProcess, free_port, process_env
from runtime.stack import BotStack, RasaVariant

BENCH_DIR = PROJECT_ROOT / "var" / "bench"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
START_TIMEOUT = 300.0
GREETINGS = ("hello", "hi", "good morning", "hey there")
QUESTIONS = (
    "how long does shipping take?",
    "what payment methods do you accept?",
    "when are you open?",
    "how do refunds work?",
)
REACTIONS = ("great", "perfect, thanks", "I am sad", "not good")
CHALLENGES = ("are you a bot?", "am I talking to a human?")
GOODBYES = ("bye", "goodbye", "see you later")


def conversations(count: int) -> list[list[str]]:
    """``count`` five-turn conversations, deterministic."""
    return [
        [
            GREETINGS[i % len(GREETINGS)],
            QUESTIONS[(i // 2) % len(QUESTIONS)],
            REACTIONS[(i // 3) % len(REACTIONS)],
            CHALLENGES[i % len(CHALLENGES)],
            GOODBYES[i % len(GOODBYES)],
        ]
        for i in range(count)
    ]


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


async def drive(
    url: str, convs: list[list[str]], concurrency: int, tag: str
) -> dict[str, Any]:
    """Send every conversation's turns in order, ``concurrency`` at a time."""
    pending: asyncio.Queue[tuple[int, list[str]]] = asyncio.Queue()
    for index, conv in enumerate(convs):
        pending.put_nowait((index, conv))
    latencies: list[float] = []
    errors = 0
    webhook = f"{url}/webhooks/rest/webhook"

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while True:
            try:
                index, conv = pending.get_nowait()
            except asyncio.QueueEmpty:
                return
            sender = f"bench-{tag}-{index}"
            for text in conv:
                started = time.perf_counter()
                try:
                    async with session.post(
                        webhook, json={"sender": sender, "message": text}
                    ) as response:
                        await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                errors += not ok

    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {
        "messages": len(latencies),
        "errors": errors,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p95_ms": percentile(latencies, 95) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "msgs_per_s": len(latencies) / wall,
        "wall_s": wall,
    }


def _scaffold(directory: Path) -> Path:
    """The ``rasa init`` project (same files ``rasa init --no-prompt`` writes)."""
    import rasa.cli

    source = Path(rasa.cli.__file__).parent / "initial_project"
    if not (directory / "config.yml").is_file():
        shutil.copytree(
            source,
            directory,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__", "tests"),
        )
    return directory


def broker_micro(database_url: str, events: int = 5000) -> dict[str, float]:
    """Time ``publish`` and the writer, for 5-turn conversations and worst case."""
    result = _broker_micro(database_url, events, turns=5)
    worst = _broker_micro(database_url, events, turns=1)
    result["writer_events_per_s_all_new_conversations"] = worst["writer_events_per_s"]
    return result


def _broker_micro(database_url: str, events: int, turns: int) -> dict[str, float]:
    from bot.broker import ContactHistoryBroker
    from crm_store.db import session_factory

    broker = ContactHistoryBroker(session_factory(database_url))
    broker.start()
    now = time.time()
    run = uuid.uuid4().hex[:6]
    batch = []
    for index in range(events // 2):
        sender = f"micro-{run}-{index // turns}"
        batch.append(
            {
                "sender_id": sender,
                "event": "user",
                "timestamp": now + index * 1e-3,
                "text": "how long does shipping take?",
                "message_id": uuid.uuid4().hex,
                "input_channel": "rest",
                "parse_data": {"intent": {"name": "faq", "confidence": 0.97}},
            }
        )
        batch.append(
            {
                "sender_id": sender,
                "event": "bot",
                "timestamp": now + index * 1e-3 + 5e-4,
                "text": "Usually 2-3 working days.",
                "metadata": {"utter_action": "utter_faq/shipping_time"},
            }
        )
    started = time.perf_counter()
    for event in batch:
        broker.publish(event)
    publish_s = time.perf_counter() - started
    broker.wait_idle(300)
    total_s = time.perf_counter() - started
    broker.stop()
    return {
        "events": len(batch),
        "publish_us_per_event": publish_s / len(batch) * 1e6,
        "writer_events_per_s": len(batch) / total_s,
    }


def _prepare_store(url: str) -> None:
    from crm_store.db import engine_for, session_factory
    from crm_store.migrate import upgrade
    from crm_store.seeding import seed_directory

    upgrade(engine_for(url))
    with session_factory(url).begin() as session:
        seed_directory(session, directory=PROJECT_ROOT / "data" / "demo")


FULL_VARIANTS = (
    RasaVariant("full"),
    RasaVariant("full_no_broker", endpoint_overrides={"event_broker": None}),
    RasaVariant("full_no_cache", extra_env={"CRM_POLICY_CACHE_SIZE": "0"}),
)


def start_servers(
    console: Console,
) -> tuple[dict[str, str], list[ServerProcess | BotStack], str]:
    """Train (cached) and start the configurations; return URLs, servers, store URL.

    ``bare`` is a plain ``rasa run``; the ``full*`` servers are one ``BotStack``
    (the start-up ``crm run`` uses) sharing one action server.
    """
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    logs = BENCH_DIR / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    db = BENCH_DIR / "latency.db"
    for suffix in ("", "-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    _prepare_store(url)

    init_dir = _scaffold(BENCH_DIR / "rasa-init")
    bare_model = ensure_model(init_dir, BENCH_DIR / "models", log=console.print)
    full_model = ensure_model(log=console.print)

    bare_port = free_port()
    bare = ServerProcess(
        "bare",
        [
            sys.executable,
            "-m",
            "rasa",
            "run",
            "--model",
            str(bare_model),
            "--port",
            str(bare_port),
            "--interface",
            "127.0.0.1",
            "--endpoints",
            str(init_dir / "endpoints.yml"),
            "--credentials",
            str(init_dir / "credentials.yml"),
        ],
        env=process_env(database_url=url),
        cwd=init_dir,
        log_path=logs / "bare.log",
        ready_url=f"http://127.0.0.1:{bare_port}/",
    )
    full = BotStack(
        database_url=url,
        model=full_model,
        workdir=BENCH_DIR,
        log_dir=logs,
        variants=FULL_VARIANTS,
    )
    servers: list[ServerProcess | BotStack] = [bare, full]
    bare.start()
    full.start()
    try:
        bare.wait_ready(START_TIMEOUT)
        full.wait_ready(START_TIMEOUT)
    except RuntimeError:
        for server in servers:
            server.stop()
        raise
    urls = {"bare": f"http://127.0.0.1:{bare_port}", **full.urls}
    return urls, servers, url


def median_of_rounds(
    per_round: list[dict[str, dict[str, dict[str, Any]]]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per config and level, the median of every figure over the rounds."""
    merged: dict[str, dict[str, dict[str, Any]]] = {}
    for name, levels in per_round[0].items():
        merged[name] = {}
        for level, first in levels.items():
            merged[name][level] = {
                key: statistics.median(r[name][level][key] for r in per_round)
                for key in first
            }
            merged[name][level]["errors"] = sum(
                r[name][level]["errors"] for r in per_round
            )
    return merged


def ratios_over_bare(
    results: dict[str, Any], name: str, levels: tuple[int, ...]
) -> dict[str, dict[str, float]]:
    """Per level, each latency figure and throughput of ``name`` over bare's."""
    configs = results["configs"]
    return {
        str(level): {
            key: configs[name][str(level)][key] / configs["bare"][str(level)][key]
            for key in ("p50_ms", "p95_ms", "p99_ms", "msgs_per_s")
        }
        for level in levels
    }


def run_latency_bench(
    *,
    messages: int = 500,
    concurrency: tuple[int, ...] = (1, 10, 50),
    rounds: int = 1,
    console: Console,
    output: Path | None = None,
) -> dict[str, Any]:
    """Run the benchmark, print a table and write JSON; return the results.

    With ``rounds`` > 1 the whole sweep is repeated on the same servers and the
    table shows the median of each figure over the rounds (all rounds are kept
    in the JSON), which damps background load on a shared machine.
    """
    convs = conversations(max(1, messages // 5))
    urls, servers, store_url = start_servers(console)
    results: dict[str, Any] = {
        "messages": sum(len(c) for c in convs),
        "conversations": len(convs),
        "configs": {name: {} for name in urls},
    }
    run_id = uuid.uuid4().hex[:6]
    per_round: list[dict[str, dict[str, dict[str, Any]]]] = []
    try:
        for name, url in urls.items():  # warm-up: first calls load lazy parts
            asyncio.run(drive(url, conversations(4), 2, f"warm-{run_id}-{name}"))
        for round_no in range(1, rounds + 1):
            measured: dict[str, dict[str, Any]] = {name: {} for name in urls}
            for level in concurrency:
                for name, url in urls.items():
                    console.print(
                        f"round {round_no}/{rounds}: {name}, concurrency {level} ..."
                    )
                    tag = f"{run_id}-r{round_no}-{name}-c{level}"
                    measured[name][str(level)] = asyncio.run(
                        drive(url, convs, level, tag)
                    )
            per_round.append(measured)
    finally:
        for server in reversed(servers):
            server.stop()
    results["rounds"] = per_round
    results["configs"] = median_of_rounds(per_round)
    results["broker_micro"] = broker_micro(store_url)
    results["ratios_full_over_bare"] = ratios_over_bare(results, "full", concurrency)
    results["ratios_no_cache_over_bare"] = ratios_over_bare(
        results, "full_no_cache", concurrency
    )
    _print(results, concurrency, console)
    output = output or RESULTS_DIR / "latency.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {output}")
    return results


def _print(results: dict[str, Any], levels: tuple[int, ...], console: Console) -> None:
    rounds = len(results.get("rounds", [])) or 1
    title = f"latency, {results['messages']} messages per run"
    if rounds > 1:
        title += f", median of {rounds} rounds"
    table = Table(title=title)
    for column in ("config", "conc.", "p50 ms", "p95 ms", "p99 ms", "msg/s", "err"):
        table.add_column(column, justify="right")
    for level in levels:
        for name, per_level in results["configs"].items():
            row = per_level[str(level)]
            table.add_row(
                name,
                str(level),
                f"{row['p50_ms']:.1f}",
                f"{row['p95_ms']:.1f}",
                f"{row['p99_ms']:.1f}",
                f"{row['msgs_per_s']:.1f}",
                str(row["errors"]),
            )
        for label, key in (
            ("full/bare", "ratios_full_over_bare"),
            ("no_cache/bare", "ratios_no_cache_over_bare"),
        ):
            ratio = results[key][str(level)]
            table.add_row(
                label,
                str(level),
                f"{ratio['p50_ms']:.2f}x",
                f"{ratio['p95_ms']:.2f}x",
                f"{ratio['p99_ms']:.2f}x",
                f"{ratio['msgs_per_s']:.2f}x",
                "",
            )
    console.print(table)
    micro = results["broker_micro"]
    console.print(
        f"broker: publish {micro['publish_us_per_event']:.1f} us/event on the event "
        f"loop; writer {micro['writer_events_per_s']:.0f} events/s in 5-turn "
        f"conversations, {micro['writer_events_per_s_all_new_conversations']:.0f} "
        "events/s when every event opens a conversation (SQLite)"
    )


if __name__ == "__main__":
    run_latency_bench(console=Console())
