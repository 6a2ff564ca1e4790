"""Voice benchmark: Twilio voice webhook turns at 20 simultaneous calls vs REST.

One stack as ``crm run`` starts it (action server, Rasa server with the REST and
Twilio routes and the broker) on a seeded SQLite store, with Twilio settings
pointing at a local fake API (``tests.fakes``; the voice turns make no REST
call). ``calls`` callers (default 20) each make ``rounds`` calls at the same
time, every call the way Twilio drives it, with a correct
``X-Twilio-Signature``:

1. the call starts (no speech): the bot greets inside ``<Gather>``;
2. speech: one of the FAQ questions of the latency bench;
3. speech: "thanks, goodbye".

The same number of REST clients send the same three texts at the same time
(the baseline). Figures: webhook turn time p50/p90/p99 per request, and
requests per second, ratios against REST. Target (issue 15): p99 < 1.5 s on a
2-core machine (Twilio waits 15 s at most).
"""

from __future__ import annotations

import json
import secrets
import shutil
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from rich.console import Console
from rich.table import Table

from bench.latency import BENCH_DIR, QUESTIONS, RESULTS_DIR, START_TIMEOUT, percentile
from bot.training import ensure_model
from channels.twilio_signature import SIGNATURE_HEADER, public_url, sign
from runtime.stack import BotStack

VOICE_PATH = "/webhooks/twilio_voice/webhook"
PUBLIC_BASE = "https://voice-bench.example.test"
TIMEOUT = 30.0
TARGET_P99_MS = 1500.0


def _prepare_store(url: str) -> None:
    from crm_store.db import engine_for, session_factory
    from crm_store.migrate import upgrade
    from crm_store.seeding import seed_directory
    from runtime.supervisor import DEMO_DIR

    upgrade(engine_for(url))
    with session_factory(url).begin() as session:
        seed_directory(session, directory=DEMO_DIR)


class Caller:
    """One phone line calling the voice webhook as Twilio does."""

    def __init__(self, rasa_url: str, auth_token: str, number: str) -> None:
        """Remember where to call and how to sign."""
        self.url = rasa_url + VOICE_PATH
        self.signed_url = public_url(PUBLIC_BASE, VOICE_PATH)
        self.token = auth_token
        self.number = number
        self.http = requests.Session()

    def turn(self, call_sid: str, **params: str) -> float:
        """One webhook request; seconds until its TwiML arrived."""
        form = {
            "CallSid": call_sid,
            "AccountSid": "AC" + "0" * 32,
            "From": self.number,
            "To": "+3197010000000",
            "CallStatus": "in-progress",
            **params,
        }
        headers = {SIGNATURE_HEADER: sign(self.token, self.signed_url, form)}
        start = time.perf_counter()
        answer = self.http.post(self.url, data=form, headers=headers, timeout=TIMEOUT)
        elapsed = time.perf_counter() - start
        if answer.status_code != 200 or "<Response" not in answer.text:
            raise RuntimeError(f"voice webhook answered {answer.status_code}")
        return elapsed

    def call(self, n: int) -> list[float]:
        """One call of three turns."""
        sid = "CA" + secrets.token_hex(16)
        return [
            self.turn(sid),
            self.turn(
                sid, SpeechResult=QUESTIONS[n % len(QUESTIONS)], Confidence="0.9"
            ),
            self.turn(sid, SpeechResult="thanks, goodbye", Confidence="0.9"),
        ]


class RestClient:
    """The baseline: the same three texts over the REST webhook."""

    def __init__(self, rasa_url: str, sender: str) -> None:
        """One REST sender."""
        self.url = rasa_url + "/webhooks/rest/webhook"
        self.sender = sender
        self.http = requests.Session()

    def turn(self, sender: str, text: str) -> float:
        """One REST turn."""
        start = time.perf_counter()
        answer = self.http.post(
            self.url, json={"sender": sender, "message": text}, timeout=TIMEOUT
        )
        elapsed = time.perf_counter() - start
        if answer.status_code != 200:
            raise RuntimeError(f"REST answered {answer.status_code}")
        return elapsed

    def call(self, n: int) -> list[float]:
        """One conversation of three turns."""
        sender = f"{self.sender}-{n}-{secrets.token_hex(3)}"
        return [
            self.turn(sender, "hello"),
            self.turn(sender, QUESTIONS[n % len(QUESTIONS)]),
            self.turn(sender, "thanks, goodbye"),
        ]


def _phase(clients: list[Any], rounds: int) -> dict[str, Any]:
    """Every client makes ``rounds`` calls; all clients at the same time."""
    timings: list[float] = []
    errors = 0
    lock = threading.Lock()
    barrier = threading.Barrier(len(clients))

    def run(client: Any) -> None:
        nonlocal errors
        barrier.wait()
        for n in range(rounds):
            try:
                values = client.call(n)
            except (RuntimeError, OSError, requests.RequestException):
                with lock:
                    errors += 1
                continue
            with lock:
                timings.extend(values)

    start = time.perf_counter()
    with ThreadPoolExecutor(len(clients)) as pool:
        list(pool.map(run, clients))
    wall = time.perf_counter() - start
    ms = [t * 1000 for t in timings] or [float("nan")]
    return {
        "requests": len(timings),
        "errors": errors,
        "p50_ms": statistics.median(ms),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
        "requests_per_s": len(timings) / wall,
    }


def run_voice_bench(
    *, calls: int = 20, rounds: int = 5, console: Console, output: Path | None = None
) -> dict[str, Any]:
    """Start the stack, run REST then voice, ``calls`` at once; print, write JSON."""
    from tests.fakes.twilio_api import FakeTwilioApi

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    logs = BENCH_DIR / "voice-logs"
    shutil.rmtree(logs, ignore_errors=True)
    db = BENCH_DIR / "voice.db"
    for suffix in ("", "-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    _prepare_store(url)
    model = ensure_model(log=console.print)
    api = FakeTwilioApi().start()
    stack = BotStack(
        database_url=url,
        model=model,
        workdir=BENCH_DIR / "voice-run",
        log_dir=logs,
        extra_env={
            "TWILIO_ACCOUNT_SID": api.account_sid,
            "TWILIO_AUTH_TOKEN": api.auth_token,
            "TWILIO_FROM_NUMBER": "+3197010000000",
            "TWILIO_PUBLIC_URL": PUBLIC_BASE,
            "TWILIO_API_URL": api.url,
            "CRM_VERIFY_CLIENT_LIMIT": "100000",
        },
    )
    try:
        stack.up(START_TIMEOUT)
        rest = [RestClient(stack.rasa_url, f"bench-rest-{i}") for i in range(calls)]
        voice = [
            Caller(stack.rasa_url, api.auth_token, f"+3197020{i:06d}")
            for i in range(calls)
        ]
        rest[0].call(0)  # warm up both paths
        voice[0].call(0)
        console.print(f"  REST: {calls} clients x {rounds} conversations ...")
        baseline = _phase(rest, rounds)
        console.print(f"  voice: {calls} callers x {rounds} calls ...")
        measured = _phase(voice, rounds)
    finally:
        stack.stop()
        api.stop()
    results = {
        "simultaneous_calls": calls,
        "calls_per_caller": rounds,
        "rest": baseline,
        "voice": measured,
        "voice_over_rest": {
            key: measured[key] / baseline[key]
            for key in ("p50_ms", "p99_ms", "requests_per_s")
        },
        "target_p99_ms": TARGET_P99_MS,
    }
    _print(results, console)
    output = output or RESULTS_DIR / "voice.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {output}")
    return results


def _print(results: dict[str, Any], console: Console) -> None:
    table = Table(
        title=(
            f"voice webhook, {results['simultaneous_calls']} simultaneous calls "
            f"x {results['calls_per_caller']} calls of 3 turns"
        )
    )
    for column in ("path", "requests", "errors", "p50 ms", "p90 ms", "p99 ms", "req/s"):
        table.add_column(column, justify="right")
    for name, label in (
        ("rest", "REST webhook (baseline)"),
        ("voice", "voice webhook"),
    ):
        row = results[name]
        table.add_row(
            label,
            str(row["requests"]),
            str(row["errors"]),
            f"{row['p50_ms']:.0f}",
            f"{row['p90_ms']:.0f}",
            f"{row['p99_ms']:.0f}",
            f"{row['requests_per_s']:.1f}",
        )
    console.print(table)
    ratio = results["voice_over_rest"]
    console.print(
        f"voice/REST: p50 {ratio['p50_ms']:.2f}x, p99 {ratio['p99_ms']:.2f}x, "
        f"req/s {ratio['requests_per_s']:.2f}x; target p99 < "
        f"{results['target_p99_ms']:.0f} ms"
    )
