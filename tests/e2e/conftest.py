"""End-to-end harness: real Rasa and action servers against a temporary store.

The session-scoped ``stack`` fixture:
- migrates a SQLite file in a tmp dir and seeds it from ``data/demo`` (timestamps
  shifted to now, as ``crm run`` does);
- trains the model if the training data changed (``bot.training.ensure_model``;
  a cached model is reused);
- starts a ``runtime.stack.BotStack`` (the one start-up ``crm run`` and the
  latency bench use too): the action server, the guarded Rasa server
  (``python -m bot.server``) and the agent console on free ports, never
  5005/5055/8000, with its own ``endpoints.yml`` (broker flushing every 50 ms),
  agents on duty around the clock (``CRM_AGENT_HOURS=always``), the demo staff
  accounts with ``DEMO_PASSWORD`` and logs in the tmp dir;
- runs the Twilio SMS and voice channels against a local fake Twilio API
  (``tests.fakes.twilio_api``; webhooks signed for ``twilio_public_url``), and
  the Telegram channel against a local fake Bot API
  (``tests.fakes.telegram_api``) and the e-mail process (SMTP listener on a free
  port, replies through ``tests.fakes.smtp_sink``, a real aiosmtpd relay);
- stops everything at the end of the session.

Set ``CRM_E2E_PROJECT`` to run against another Rasa project directory (used to
develop the harness before the bot content existed).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from sqlalchemy.orm import sessionmaker

from bot.training import ensure_model
from crm_store.db import make_engine, make_session_factory
from crm_store.migrate import upgrade
from crm_store.seeding import seed_directory
from crm_store.services.staff import ensure_demo_staff
from runtime.processes import free_port
from runtime.stack import BotStack
from tests.fakes.smtp_sink import SmtpSink
from tests.fakes.telegram_api import FakeTelegramApi
from tests.fakes.twilio_api import FakeTwilioApi

ROOT = Path(__file__).resolve().parents[2]
PROJECT = Path(os.environ.get("CRM_E2E_PROJECT", ROOT)).resolve()
DEMO_DIR = ROOT / "data" / "demo"
START_TIMEOUT = float(os.environ.get("CRM_E2E_START_TIMEOUT", 180))
REPLY_TIMEOUT = 30.0
DEMO_PASSWORD = "e2e-" + secrets.token_hex(8)
T = TypeVar("T")


@dataclass
class Stack:
    """Handles on the running servers and the store they write to."""

    rasa_url: str
    action_url: str
    database_url: str
    identity_secret: str
    factory: sessionmaker
    workdir: Path
    processes: BotStack
    console_url: str
    console_secret: str
    demo_password: str
    telegram: FakeTelegramApi
    telegram_secret: str
    relay: SmtpSink
    smtp_port: int
    twilio: FakeTwilioApi
    twilio_public_url: str
    http: requests.Session = field(default_factory=requests.Session)

    def send(
        self, sender: str, text: str, metadata: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """POST a message to the REST webhook and return the bot's replies."""
        response = self.http.post(
            f"{self.rasa_url}/webhooks/rest/webhook",
            json={"sender": sender, "message": text, "metadata": metadata or {}},
            timeout=REPLY_TIMEOUT,
        )
        response.raise_for_status()
        return response.json()

    def texts(
        self, sender: str, text: str, metadata: dict[str, Any] | None = None
    ) -> list[str]:
        """Like ``send`` but return only the reply texts."""
        return [r["text"] for r in self.send(sender, text, metadata) if r.get("text")]

    def stop_action_server(self) -> None:
        """Stop the action server (the Rasa server keeps running)."""
        self.processes.stop_action_server()

    def start_action_server(self) -> None:
        """(Re)start the action server and wait until it is healthy."""
        self.processes.start_action_server(START_TIMEOUT)

    def eventually(
        self,
        probe: Callable[[], T],
        *,
        timeout: float = 10.0,
        interval: float = 0.05,
    ) -> T:
        """Return ``probe()`` once truthy (the broker writes asynchronously).

        Raises AssertionError with the last value if it stays falsy.
        """
        deadline = time.monotonic() + timeout
        value = probe()
        while not value and time.monotonic() < deadline:
            time.sleep(interval)
            value = probe()
        if not value:
            raise AssertionError(f"condition not met within {timeout}s: {value!r}")
        return value


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("e2e")
    database_url = f"sqlite:///{workdir / 'crm.db'}"
    engine = make_engine(database_url)
    upgrade(engine)
    factory = make_session_factory(engine)
    with factory.begin() as session:
        seed_directory(session, directory=DEMO_DIR)
    with factory.begin() as session:
        ensure_demo_staff(session, DEMO_PASSWORD)

    model = ensure_model(PROJECT)
    identity_secret = secrets.token_hex(32)
    telegram = FakeTelegramApi().start()
    telegram_secret = secrets.token_urlsafe(24)
    relay = SmtpSink().start()
    smtp_port = free_port()
    twilio = FakeTwilioApi().start()
    twilio_public_url = "https://bot.e2e.example.test/base"
    processes = BotStack(
        database_url=database_url,
        model=model,
        workdir=workdir,
        log_dir=workdir,
        project=PROJECT,
        extra_env={
            "CRM_IDENTITY_SECRET": identity_secret,
            # Every e2e sender comes from 127.0.0.1: one client for the limits.
            "CRM_VERIFY_CLIENT_LIMIT": "10000",
            "CRM_AGENT_HOURS": "always",
            "TELEGRAM_BOT_TOKEN": telegram.token,
            "TELEGRAM_WEBHOOK_SECRET": telegram_secret,
            "TELEGRAM_API_URL": telegram.url,
            "SMTP_RELAY_HOST": relay.host,
            "SMTP_RELAY_PORT": str(relay.port),
            "TWILIO_ACCOUNT_SID": twilio.account_sid,
            "TWILIO_AUTH_TOKEN": twilio.auth_token,
            "TWILIO_FROM_NUMBER": "+3197010000000",
            "TWILIO_PUBLIC_URL": twilio_public_url,
            "TWILIO_API_URL": twilio.url,
            "TWILIO_AGENT_NUMBER": "+3197010009999",
            # Outbound mail/SMS give up after 3 tries, 0.3 s apart at first.
            "CRM_DELIVERY_ATTEMPTS": "3",
            "CRM_DELIVERY_RETRY_SECONDS": "0.3",
        },
        console_port=free_port(),
        smtp_port=smtp_port,
        endpoint_overrides={
            "event_broker": {
                "type": "bot.broker.ContactHistoryBroker",
                "flush_interval_ms": 50,
                "batch_size": 100,
            }
        },
    )
    try:
        processes.up(START_TIMEOUT)
        yield Stack(
            rasa_url=processes.rasa_url,
            action_url=processes.action_url,
            database_url=database_url,
            identity_secret=identity_secret,
            factory=factory,
            workdir=workdir,
            processes=processes,
            console_url=processes.console_url or "",
            console_secret=processes.console_secret,
            demo_password=DEMO_PASSWORD,
            telegram=telegram,
            telegram_secret=telegram_secret,
            relay=relay,
            smtp_port=smtp_port,
            twilio=twilio,
            twilio_public_url=twilio_public_url,
        )
    finally:
        processes.stop()
        telegram.stop()
        relay.stop()
        twilio.stop()
        engine.dispose()
