"""A console on a real, seeded SQLite store, for the console tests.

The demo fixture is seeded once per test process into a template file (times
shifted so the fixture's as-of is now, as ``make run`` does), with the demo
staff and one customer's analytics scores; each ``Harness`` works on its own
copy. The courier points at a port nothing listens on: an unreachable Rasa
server must never break the console.
"""

from __future__ import annotations

import atexit
import datetime as dt
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import sessionmaker

from console.app import create_app
from console.server import server_for
from crm_settings import Settings
from crm_store.db import make_engine, make_session_factory
from crm_store.migrate import upgrade
from crm_store.models import CustomerScore, utcnow
from crm_store.seeding import DEFAULT_AS_OF, seed_directory
from crm_store.services.conversations import open_conversation
from crm_store.services.handoff import HandoffPacket, request_handoff
from crm_store.services.interactions import NewInteraction, append_interactions
from crm_store.services.staff import ensure_demo_staff

ROOT = Path(__file__).resolve().parents[2]
DEMO_DIR = ROOT / "data" / "demo"
PASSWORD = "console-test-password"
SECRET = "console-test-secret-" + "x" * 24
SCORED_CUSTOMER = "C0002"
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]*)"')


def unused_port() -> int:
    """A TCP port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@cache
def _scratch() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="console-tests-"))
    atexit.register(shutil.rmtree, directory, True)
    return directory


def _migrated(path: Path) -> sessionmaker:
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    return make_session_factory(engine)


@cache
def seeded_template() -> Path:
    """The seeded store every harness copies (built once per process)."""
    path = _scratch() / "template.db"
    factory = _migrated(path)
    with factory.begin() as session:
        seed_directory(session, directory=DEMO_DIR, as_of=DEFAULT_AS_OF)
        ensure_demo_staff(session, PASSWORD)
        session.merge(
            CustomerScore(
                customer_id=SCORED_CUSTOMER,
                as_of=utcnow(),
                recency_days=49,
                frequency=6,
                monetary=Decimal("645.00"),
                r_score=5,
                f_score=4,
                m_score=4,
                rfm_segment="champions",
                actual_value=Decimal("193.50"),
                clv=Decimal("178.11"),
                clv_heuristic=Decimal("170.00"),
                value_tier="gold",
                churn_risk=0.33,
                churn_band="low",
                explanation={
                    "top_churn_features": [
                        ["days since last purchase", 0.41],
                        ["orders per year", -0.12],
                    ]
                },
            )
        )
    engine = factory.kw["bind"]
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@dataclass(frozen=True)
class HandoffRef:
    """A handoff created for a test, with its conversation."""

    id: int
    conversation_id: str
    tracker_key: str


class Harness:
    """The console app on a private store copy (or an empty migrated store)."""

    def __init__(self, *, seeded: bool = True, **settings: object) -> None:
        directory = Path(tempfile.mkdtemp(dir=_scratch()))
        path = directory / "crm.db"
        if seeded:
            shutil.copyfile(seeded_template(), path)
            self.factory = make_session_factory(make_engine(f"sqlite:///{path}"))
        else:
            self.factory = _migrated(path)
            with self.factory.begin() as session:
                ensure_demo_staff(session, PASSWORD)
        self.rasa_url = f"http://127.0.0.1:{unused_port()}"
        values = {
            "database_url": f"sqlite:///{path}",
            "console_secret": SECRET,
            "rasa_internal_url": self.rasa_url,
            "agent_hours": "always",
            "environment": "development",
            "chat_socket_url": None,
            **settings,
        }
        self.settings = Settings(**values)
        self.app = create_app(
            self.settings, self.factory, watch_seconds=0.05, queue_watch_seconds=None
        )

    def close(self) -> None:
        """Release the store's connections."""
        self.factory.kw["bind"].dispose()

    def client(self, base_url: str = "http://testserver") -> TestClient:
        """A test client (use as a context manager to run the app's lifespan)."""
        client = TestClient(self.app, base_url=base_url)
        client.follow_redirects = False
        return client

    def login(self, client: TestClient, username: str) -> str:
        """Sign in through the login form; return the session's CSRF token."""
        form = client.get("/login")
        token = CSRF_FIELD.search(form.text).group(1)
        answer = client.post(
            "/login",
            data={
                "username": username,
                "password": PASSWORD,
                "csrf_token": token,
                "next": "/",
            },
        )
        assert answer.status_code == 303, answer.text
        page = client.get("/")
        assert page.status_code == 200
        return CSRF_META.search(page.text).group(1)

    def token(self, client: httpx.Client, username: str) -> str:
        """A bearer token for ``username``."""
        answer = client.post(
            "/api/auth/token", json={"username": username, "password": PASSWORD}
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["access_token"]

    def new_handoff(
        self,
        *,
        customer_id: str | None = None,
        text: str = "I want to talk to a person",
        reason: str = "customer_request",
        at: dt.datetime | None = None,
        channel: str = "chat",
        key: str | None = None,
    ) -> HandoffRef:
        """A conversation with two messages (web chat unless told), queued."""
        at = at or utcnow()
        key = key or f"web:{uuid.uuid4().hex[:22]}"
        with self.factory.begin() as session:
            conversation = open_conversation(
                session,
                conversation_id=f"cv_{uuid.uuid4().hex}",
                channel=channel,
                customer_id=customer_id,
                tracker_key=key,
                at=at - dt.timedelta(seconds=5),
            )
            append_interactions(
                session,
                items=[
                    NewInteraction(
                        event_id=f"test:{uuid.uuid4().hex}",
                        channel="chat",
                        direction="in",
                        author="customer",
                        text=text,
                        customer_id=customer_id,
                        conversation_id=conversation.id,
                        intent="request_human",
                        confidence=0.91,
                        occurred_at=at - dt.timedelta(seconds=4),
                    ),
                    NewInteraction(
                        event_id=f"test:{uuid.uuid4().hex}",
                        channel="chat",
                        direction="out",
                        author="bot",
                        text="A colleague will take over.",
                        customer_id=customer_id,
                        conversation_id=conversation.id,
                        occurred_at=at - dt.timedelta(seconds=3),
                    ),
                ],
            )
            packet = HandoffPacket(
                customer_id=customer_id,
                verified=customer_id is not None,
                verification_method="order_postcode" if customer_id else None,
                channel="chat",
                reason=reason,
                last_intents=["request_human"],
                last_messages=[text],
                summary=f"Test handoff: {reason}",
                conversation_id=conversation.id,
                tracker_key=key,
            )
            result = request_handoff(
                session, conversation_id=conversation.id, packet=packet, at=at
            )
        assert result.handoff_id is not None
        return HandoffRef(result.handoff_id, conversation.id, key)

    def customer_says(self, ref: HandoffRef, text: str, customer_id: str | None = None):
        """Record a new customer message in the handoff's conversation."""
        with self.factory.begin() as session:
            append_interactions(
                session,
                items=[
                    NewInteraction(
                        event_id=f"test:{uuid.uuid4().hex}",
                        channel="chat",
                        direction="in",
                        author="customer",
                        text=text,
                        customer_id=customer_id,
                        conversation_id=ref.conversation_id,
                    )
                ],
            )


class LiveServer:
    """The app served by uvicorn on a free port in a thread (for streams)."""

    def __init__(self, app: FastAPI) -> None:
        self.port = unused_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = server_for(
            app, host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("console did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def read_events(
    lines: Iterator[str], wanted: int, *, event: str, timeout: float = 8.0
) -> list[str]:
    """Read server-sent events until ``wanted`` of kind ``event`` arrived.

    ``lines``: ``response.iter_lines()`` of a stream, kept between calls.
    Returns their data (lines joined). Fails after ``timeout`` seconds (the
    client's read timeout covers a silent stream).
    """
    found: list[str] = []
    kind, data = None, []
    deadline = time.monotonic() + timeout
    for line in lines:
        if time.monotonic() > deadline:
            break
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line == "":
            if kind == event:
                found.append("\n".join(data))
                if len(found) >= wanted:
                    return found
            kind, data = None, []
    raise AssertionError(f"only {len(found)} {event!r} events within {timeout} s")
