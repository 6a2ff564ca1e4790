"""Channels benchmark: Telegram webhooks and inbound mail against the REST webhook.

One stack as ``crm run`` starts it (action server, Rasa server with the REST,
Telegram and e-mail routes and the contact-history broker, SMTP listener and
mail worker) on a seeded SQLite store. Telegram's side is the local fake Bot
API and the relay is a real aiosmtpd server (``tests.fakes``), both on
127.0.0.1, so the figures hold our code's cost, not a cloud's.

Every message is a first contact (a new REST sender, a new Telegram user, a new
mail thread) asking one of the same FAQ questions, so the three channels run
the same dialogue work:

- **REST**: ``POST /webhooks/rest/webhook`` until the answer arrives;
- **Telegram**: ``POST /webhooks/telegram/webhook`` (secret header) until its
  200, which Telegram's side gets after the turn ran and the answer was sent
  to the Bot API (``sendMessage``);
- **e-mail (SMTP)**: one mail (MAIL, RCPT, DATA) on an open SMTP connection,
  as a sending MTA delivers several mails per connection (the counterpart of
  REST's keep-alive), until the listener's 250, which comes after the turn ran
  and the reply was queued;
- **e-mail (new session)**: the same with a fresh connection per mail (connect,
  greeting, EHLO, ..., QUIT): what a sender that does not reuse connections waits;
- **e-mail (reply)**: from the start of a mail until its reply reached the relay
  (the worker composes and sends it).

Phase 1 sends ``messages`` of each, one at a time, the channels interleaved
(latency, p50/p99); phase 2 sends ``messages`` of each at ``concurrency``
(throughput, messages/s). Ratios are against REST of the same run. Target
(issue 14): the channel adds less than 5 ms at p50 over REST.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import secrets
import shutil
import smtplib
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import requests
from rich.console import Console
from rich.table import Table

from bench.latency import BENCH_DIR, QUESTIONS, RESULTS_DIR, START_TIMEOUT, percentile
from bot.training import ensure_model
from runtime.processes import free_port
from runtime.stack import BotStack

SUPPORT = "support@northwind.example"
CHANNELS = ("rest", "telegram", "email_smtp")
LATENCY_CHANNELS = (*CHANNELS, "email_session")
TIMEOUT = 30.0
TARGET_ADDED_P50_MS = 5.0


def _prepare_store(url: str) -> None:
    from crm_store.db import engine_for, session_factory
    from crm_store.migrate import upgrade
    from crm_store.seeding import seed_directory
    from runtime.supervisor import DEMO_DIR

    upgrade(engine_for(url))
    with session_factory(url).begin() as session:
        seed_directory(session, directory=DEMO_DIR)


class Clients:
    """One first-contact message per call on each channel; times in seconds."""

    def __init__(
        self, stack: BotStack, telegram_secret: str, smtp_port: int, relay: Any
    ):
        """Remember where the channels are."""
        self.rest_url = f"{stack.rasa_url}/webhooks/rest/webhook"
        self.telegram_url = f"{stack.rasa_url}/webhooks/telegram/webhook"
        self.telegram_secret = telegram_secret
        self.smtp_port = smtp_port
        self.relay = relay
        self.http = requests.Session()
        self.ids = itertools.count(1)
        self.run = secrets.token_hex(3)
        self.reply_times: list[float] = []
        self._local = threading.local()
        self._open: list[smtplib.SMTP] = []

    def _question(self, n: int) -> str:
        return QUESTIONS[n % len(QUESTIONS)]

    def rest(self) -> float:
        """One REST turn."""
        n = next(self.ids)
        start = time.perf_counter()
        answer = self.http.post(
            self.rest_url,
            json={"sender": f"bench-{self.run}-{n}", "message": self._question(n)},
            timeout=TIMEOUT,
        )
        elapsed = time.perf_counter() - start
        if answer.status_code != 200 or not answer.json():
            raise RuntimeError(f"REST answered {answer.status_code}")
        return elapsed

    def telegram(self) -> float:
        """One Telegram update through the webhook."""
        n = next(self.ids)
        user = 900_000_000 + n
        update = {
            "update_id": int(time.time()) % 100_000 * 10_000 + n,
            "message": {
                "message_id": n,
                "date": int(time.time()),
                "chat": {"id": user, "type": "private"},
                "from": {"id": user, "is_bot": False, "first_name": "Bench"},
                "text": self._question(n),
            },
        }
        start = time.perf_counter()
        answer = self.http.post(
            self.telegram_url,
            json=update,
            headers={"X-Telegram-Bot-Api-Secret-Token": self.telegram_secret},
            timeout=TIMEOUT,
        )
        elapsed = time.perf_counter() - start
        if answer.status_code != 200:
            raise RuntimeError(f"Telegram webhook answered {answer.status_code}")
        return elapsed

    def _mail(self) -> tuple[str, EmailMessage]:
        n = next(self.ids)
        address = f"bench.{self.run}.{n}@example.org"
        mail = EmailMessage()
        mail["From"] = address
        mail["To"] = SUPPORT
        mail["Subject"] = "A question"
        mail["Message-ID"] = make_msgid(domain="bench.example")
        mail.set_content(f"Hello,\n\n{self._question(n)}\n\nThanks\n")
        return address, mail

    def _await_reply(self, address: str, start: float) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not self.relay.to(address):
            if time.monotonic() > deadline:
                raise RuntimeError("no reply reached the relay")
            time.sleep(0.002)
        self.reply_times.append(time.perf_counter() - start)

    def _connection(self) -> smtplib.SMTP:
        smtp = getattr(self._local, "smtp", None)
        if smtp is None:
            smtp = smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=TIMEOUT)
            smtp.ehlo()
            self._local.smtp = smtp
            self._open.append(smtp)
        return smtp

    def email_smtp(self) -> float:
        """One mail on this thread's open SMTP connection; notes the reply time."""
        address, mail = self._mail()
        smtp = self._connection()
        start = time.perf_counter()
        try:
            smtp.send_message(mail, from_addr=address, to_addrs=[SUPPORT])
        except (smtplib.SMTPException, OSError):
            self._local.smtp = None
            raise
        elapsed = time.perf_counter() - start
        self._await_reply(address, start)
        return elapsed

    def email_session(self) -> float:
        """One mail in a session of its own (connect ... QUIT)."""
        address, mail = self._mail()
        start = time.perf_counter()
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=TIMEOUT) as smtp:
            smtp.send_message(mail, from_addr=address, to_addrs=[SUPPORT])
        elapsed = time.perf_counter() - start
        self._await_reply(address, start)
        return elapsed

    def close(self) -> None:
        """Close the open SMTP connections."""
        for smtp in self._open:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()
        self._open.clear()


def summarize(values: list[float], wall: float | None = None) -> dict[str, float]:
    """n, p50/p90/p99/max in milliseconds, and messages/s over ``wall``."""
    ms = [v * 1000 for v in values] or [float("nan")]
    figures = {
        "n": len(values),
        "p50_ms": statistics.median(ms),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
    }
    if wall:
        figures["msg_per_s"] = len(values) / wall
    return figures


def _sequential(clients: Clients, messages: int, console: Console) -> dict[str, Any]:
    timings: dict[str, list[float]] = {name: [] for name in LATENCY_CHANNELS}
    errors = 0
    count = len(LATENCY_CHANNELS)
    for i in range(messages):
        shift = i % count  # no channel always first
        order = LATENCY_CHANNELS[shift:] + LATENCY_CHANNELS[:shift]
        for name in order:
            try:
                timings[name].append(getattr(clients, name)())
            except (RuntimeError, OSError, requests.RequestException):
                errors += 1
        if (i + 1) % 50 == 0:
            console.print(f"  latency: {i + 1}/{messages} of each channel")
    reply = list(clients.reply_times)
    figures = {name: summarize(values) for name, values in timings.items()}
    figures["email_reply"] = summarize(reply)
    return {"figures": figures, "errors": errors}


def _concurrent(
    clients: Clients, messages: int, concurrency: int, console: Console
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    errors = 0
    for name in CHANNELS:
        call: Callable[[], float] = getattr(clients, name)

        def one(_: int, call: Callable[[], float] = call) -> float | None:
            try:
                return call()
            except (RuntimeError, OSError, requests.RequestException):
                return None

        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            values = list(pool.map(one, range(messages)))
        wall = time.perf_counter() - start
        done = [v for v in values if v is not None]
        errors += len(values) - len(done)
        results[name] = summarize(done, wall)
        console.print(f"  throughput: {name} {results[name]['msg_per_s']:.1f} msg/s")
    return {"figures": results, "errors": errors}


def run_channels_bench(
    *,
    messages: int = 200,
    concurrency: int = 8,
    console: Console,
    output: Path | None = None,
) -> dict[str, Any]:
    """Start the stack, run both phases, print a table and write JSON."""
    from tests.fakes.smtp_sink import SmtpSink
    from tests.fakes.telegram_api import FakeTelegramApi

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    logs = BENCH_DIR / "channels-logs"
    shutil.rmtree(logs, ignore_errors=True)
    db = BENCH_DIR / "channels.db"
    for suffix in ("", "-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    _prepare_store(url)
    model = ensure_model(log=console.print)
    telegram = FakeTelegramApi().start()
    relay = SmtpSink().start()
    secret = secrets.token_urlsafe(24)
    smtp_port = free_port()
    stack = BotStack(
        database_url=url,
        model=model,
        workdir=BENCH_DIR / "channels-run",
        log_dir=logs,
        smtp_port=smtp_port,
        extra_env={
            "TELEGRAM_BOT_TOKEN": telegram.token,
            "TELEGRAM_WEBHOOK_SECRET": secret,
            "TELEGRAM_API_URL": telegram.url,
            "SMTP_RELAY_HOST": relay.host,
            "SMTP_RELAY_PORT": str(relay.port),
            "CRM_VERIFY_CLIENT_LIMIT": "100000",
        },
    )
    try:
        stack.up(START_TIMEOUT)
        clients = Clients(stack, secret, smtp_port, relay)
        for name in LATENCY_CHANNELS:  # warm up every path once
            getattr(clients, name)()
        clients.reply_times.clear()
        latency = _sequential(clients, messages, console)
        throughput = _concurrent(clients, messages, concurrency, console)
        clients.close()
    finally:
        stack.stop()
        telegram.stop()
        relay.stop()
    results = _results(messages, concurrency, latency, throughput)
    _print(results, console)
    output = output or RESULTS_DIR / "channels.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {output}")
    return results


def _results(
    messages: int, concurrency: int, latency: dict, throughput: dict
) -> dict[str, Any]:
    lat, thr = latency["figures"], throughput["figures"]
    rest = lat["rest"]
    return {
        "messages_per_channel": messages,
        "concurrency": concurrency,
        "errors": latency["errors"] + throughput["errors"],
        "latency": lat,
        "throughput": thr,
        "vs_rest": {
            name: {
                "added_p50_ms": lat[name]["p50_ms"] - rest["p50_ms"],
                "p50_ratio": lat[name]["p50_ms"] / rest["p50_ms"],
                "p99_ratio": lat[name]["p99_ms"] / rest["p99_ms"],
                "msg_per_s_ratio": (
                    thr[name]["msg_per_s"] / thr["rest"]["msg_per_s"]
                    if name in thr
                    else None
                ),
            }
            for name in ("telegram", "email_smtp", "email_session")
        },
        "target_added_p50_ms": TARGET_ADDED_P50_MS,
    }


def _print(results: dict[str, Any], console: Console) -> None:
    table = Table(
        title=(
            f"channels, {results['messages_per_channel']} first contacts per channel "
            f"(throughput at concurrency {results['concurrency']})"
        )
    )
    for column in (
        "channel",
        "p50 ms",
        "p99 ms",
        "added p50 ms",
        "p50 / REST",
        "msg/s",
        "msg/s / REST",
    ):
        table.add_column(column, justify="right")
    labels = {
        "rest": "REST webhook (baseline)",
        "telegram": "Telegram webhook",
        "email_smtp": "e-mail (SMTP, open connection)",
        "email_session": "e-mail (SMTP, new session)",
        "email_reply": "e-mail (reply at relay)",
    }
    for name, label in labels.items():
        row = results["latency"][name]
        versus = results["vs_rest"].get(name, {})
        throughput = results["throughput"].get(name, {})
        table.add_row(
            label,
            f"{row['p50_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
            f"{versus['added_p50_ms']:+.1f}" if versus else "",
            f"{versus['p50_ratio']:.2f}x" if versus else "",
            f"{throughput['msg_per_s']:.1f}" if throughput else "",
            f"{versus['msg_per_s_ratio']:.2f}x"
            if versus.get("msg_per_s_ratio")
            else "",
        )
    console.print(table)
    console.print(
        f"errors: {results['errors']}; target: a channel adds < "
        f"{results['target_added_p50_ms']:.0f} ms at p50 over REST"
    )
