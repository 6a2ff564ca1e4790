"""The Rasa server's control routes and the console's courier that calls them.

A real Sanic server with the web chat and control channels on a free port,
real sockets (a raw Engine.IO v4 websocket, as a browser speaks it), real HTTP
and a real store (SQLite and PostgreSQL) for the courier. Rasa's agent is a
stand-in that has no model loaded: pausing and handing back with a real model
are covered end to end with the real Rasa server.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import websockets
from rasa.core.channels.channel import register
from sanic import Sanic
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from channels.chat_tokens import control_token, issue_chat_token
from channels.control import MAX_PUSH_MESSAGES, ControlInput
from channels.webchat import WebChatInput
from console.courier import Courier
from crm_settings import Settings
from crm_store.db import make_session_factory
from crm_store.models import OutboxMessage
from crm_store.services import outbound
from crm_store.services.conversations import open_conversation

SECRET = "c" * 40
TOKEN = control_token(SECRET)
ORIGIN = "http://localhost:8000"
ROUTES = [
    ("POST", "push"),
    ("POST", "pause"),
    ("POST", "resume"),
    ("POST", "handback"),
    ("GET", "stats"),
]
PUSH = {"tracker_key": "web:AAAAAAAAAAAAAAAAAAAAAA", "messages": [{"text": "Hi"}]}


class NotLoadedAgent:
    """Rasa's agent before a model is loaded (``is_ready`` False)."""

    def __init__(self, lost_events: Any = None) -> None:
        broker = SimpleNamespace(lost_events=lost_events)
        self.tracker_store = SimpleNamespace(event_broker=broker)

    def is_ready(self) -> bool:
        return False

    async def handle_message(self, message: Any) -> None:
        raise AssertionError("no turn expected")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Rasa:
    url: str
    app: Sanic
    server: Any
    http: aiohttp.ClientSession

    async def call(
        self,
        method: str,
        route: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        auth: str | None = f"Bearer {TOKEN}",
    ) -> tuple[int, Any, Any]:
        headers = {"Content-Type": "application/json"}
        if auth is not None:
            headers["Authorization"] = auth
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        async with self.http.request(
            method, f"{self.url}/webhooks/control/{route}", data=data, headers=headers
        ) as response:
            return response.status, await response.json(), response.headers


async def start_rasa(port: int, *, secret: str | None = SECRET) -> tuple[Sanic, Any]:
    Sanic.test_mode = True
    app = Sanic(f"control_{uuid.uuid4().hex[:8]}")
    app.ctx.agent = NotLoadedAgent()
    web = WebChatInput(secret=SECRET, origins=[ORIGIN])
    control = ControlInput(secret=secret or "unused")
    if secret is None:
        control.token = None  # as with CRM_CONSOLE_SECRET unset
    register([web, control], app, route="/webhooks/")
    server = await app.create_server(
        host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False
    )
    await server.startup()
    await server.before_start()
    await server.after_start()
    return app, server


async def stop_rasa(server: Any) -> None:
    await server.before_stop()
    await server.close()
    await server.after_stop()


@pytest.fixture()
async def rasa() -> AsyncIterator[Rasa]:
    port = free_port()
    app, server = await start_rasa(port)
    try:
        async with aiohttp.ClientSession() as http:
            yield Rasa(f"http://127.0.0.1:{port}", app, server, http)
    finally:
        await stop_rasa(server)


@dataclass
class ChatTab:
    """A connected web chat socket (raw Engine.IO v4 websocket)."""

    ws: Any
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    reader: asyncio.Task | None = None

    @classmethod
    async def open(cls, url: str, session: str) -> ChatTab:
        token, _ = issue_chat_token(SECRET, session)
        ws = await websockets.connect(
            url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket",
            extra_headers={"Origin": ORIGIN},
        )
        assert (await ws.recv()).startswith("0{")
        await ws.send("40" + json.dumps({"token": token}))
        assert (await ws.recv()).startswith("40{")
        tab = cls(ws)
        tab.reader = asyncio.create_task(tab._read())
        return tab

    async def _read(self) -> None:
        async for packet in self.ws:
            if packet == "2":
                await self.ws.send("3")
            elif packet.startswith("42"):
                await self.events.put(json.loads(packet[2:]))

    async def next(self, timeout: float = 5) -> list:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        await self.ws.close()


# -- authentication -----------------------------------------------------------


@pytest.mark.parametrize(("method", "route"), ROUTES)
async def test_every_route_requires_the_bearer_token(
    rasa: Rasa, method: str, route: str
) -> None:
    status, body, headers = await rasa.call(method, route, PUSH, auth=None)
    assert (status, headers.get("WWW-Authenticate")) == (401, "Bearer")
    assert "bearer token is required" in body["error"]
    for auth in (f"Basic {TOKEN}", "Bearer", "Bearer ", TOKEN):
        status, _, _ = await rasa.call(method, route, PUSH, auth=auth)
        assert status == 401, auth
    chat_token, _ = issue_chat_token(SECRET)
    for wrong in (control_token("x" * 40), TOKEN[:-1], chat_token, SECRET, "é"):
        status, body, _ = await rasa.call(method, route, PUSH, auth=f"Bearer {wrong}")
        assert (status, body) == (403, {"error": "the bearer token is not valid"})


async def test_without_a_secret_the_routes_are_off() -> None:
    port = free_port()
    _, server = await start_rasa(port, secret=None)
    try:
        async with aiohttp.ClientSession() as http:
            rasa = Rasa(f"http://127.0.0.1:{port}", None, server, http)  # type: ignore[arg-type]
            for method, route in ROUTES:
                status, body, _ = await rasa.call(method, route, PUSH)
                assert status == 503 and "CRM_CONSOLE_SECRET" in body["error"]
    finally:
        await stop_rasa(server)


# -- validation ---------------------------------------------------------------

KEY = "web:AAAAAAAAAAAAAAAAAAAAAA"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "JSON object"),
        (b"", "JSON object"),
        (b"[1, 2]", "JSON object"),
        (b'"text"', "JSON object"),
        ({"messages": [{"text": "hi"}]}, "tracker_key"),
        ({"tracker_key": "alice", "messages": [{"text": "hi"}]}, "tracker_key"),
        ({"tracker_key": "fax:1", "messages": [{"text": "hi"}]}, "tracker_key"),
        ({"tracker_key": "web:", "messages": [{"text": "hi"}]}, "tracker_key"),
        ({"tracker_key": 7, "messages": [{"text": "hi"}]}, "tracker_key"),
        ({"tracker_key": "web:a\nb", "messages": [{"text": "hi"}]}, "tracker_key"),
        ({"tracker_key": KEY}, "messages"),
        ({"tracker_key": KEY, "messages": []}, "messages"),
        ({"tracker_key": KEY, "messages": "hi"}, "messages"),
        (
            {"tracker_key": KEY, "messages": [{"text": "x"}] * (MAX_PUSH_MESSAGES + 1)},
            "messages",
        ),
        ({"tracker_key": KEY, "messages": ["hi"]}, "messages[0] must be an object"),
        ({"tracker_key": KEY, "messages": [{}]}, "messages[0].text"),
        ({"tracker_key": KEY, "messages": [{"text": " \x00 "}]}, "messages[0].text"),
        ({"tracker_key": KEY, "messages": [{"text": 5}]}, "messages[0].text"),
        ({"tracker_key": KEY, "messages": [{"text": "x" * 4001}]}, "4000"),
        (
            {"tracker_key": KEY, "messages": [{"text": "a", "author": "customer"}]},
            "author",
        ),
        ({"tracker_key": KEY, "messages": [{"text": "a", "ref": 5}]}, "ref"),
    ],
)
async def test_bad_pushes_are_refused_with_a_json_error(
    rasa: Rasa, body: Any, says: str
) -> None:
    if isinstance(body, bytes):
        status, answer, _ = await rasa.call("POST", "push", raw=body)
    else:
        status, answer, _ = await rasa.call("POST", "push", body)
    assert status == 400
    assert says in answer["error"]


@pytest.mark.parametrize("route", ["pause", "resume", "handback"])
async def test_pause_and_handback_validate_before_touching_rasa(
    rasa: Rasa, route: str
) -> None:
    for bad in ({}, {"tracker_key": "nobody"}, {"tracker_key": ["web:x"]}):
        status, answer, _ = await rasa.call("POST", route, bad)
        assert status == 400 and "tracker_key" in answer["error"]
    status, answer, _ = await rasa.call("POST", route, raw=b"nope")
    assert status == 400
    status, answer, _ = await rasa.call("POST", route, {"tracker_key": KEY})
    assert (status, answer) == (503, {"error": "the bot has no model loaded yet"})


# -- push and stats -------------------------------------------------------------


async def test_push_reaches_the_sessions_open_tabs_only(rasa: Rasa) -> None:
    session, other = "S" * 22, "T" * 22
    tab = await ChatTab.open(rasa.url, session)
    stranger = await ChatTab.open(rasa.url, other)
    try:
        body = {
            "tracker_key": f"web:{session}",
            "messages": [
                {"text": "Hi, Anna\x07 here.", "ref": "outbox:7"},
                {
                    "text": "Still there?",
                    "author": "system",
                    "buttons": [{"title": "Yes", "payload": "/affirm"}, {"x": 1}],
                },
            ],
        }
        status, answer, _ = await rasa.call("POST", "push", body)
        assert (status, answer) == (200, {"delivered": True})
        assert await tab.next() == [
            "bot_uttered",
            {"text": "Hi, Anna here.", "author": "agent", "ref": "outbox:7"},
        ]
        assert await tab.next() == [
            "bot_uttered",
            {
                "text": "Still there?",
                "author": "system",
                "buttons": [{"title": "Yes", "payload": "/affirm"}],
            },
        ]
        await asyncio.sleep(0.1)
        assert stranger.events.empty()
    finally:
        await tab.close()
        await stranger.close()


async def test_push_without_a_tab_or_to_another_channel_is_not_delivered(
    rasa: Rasa,
) -> None:
    for key in (KEY, "rest:alice", "telegram:42"):
        body = {"tracker_key": key, "messages": [{"text": "Hello"}]}
        status, answer, _ = await rasa.call("POST", "push", body)
        assert (status, answer) == (200, {"delivered": False})


async def test_stats_report_the_brokers_lost_events(rasa: Rasa) -> None:
    assert (await rasa.call("GET", "stats"))[:2] == (200, {"lost_events": None})
    rasa.app.ctx.agent = NotLoadedAgent(lost_events=3)
    assert (await rasa.call("GET", "stats"))[:2] == (200, {"lost_events": 3})


# -- the courier ----------------------------------------------------------------


def settings_for(url: str, secret: str | None = SECRET) -> Settings:
    return Settings(rasa_internal_url=url, console_secret=secret)


def web_conversation(factory: sessionmaker, session_id: str) -> str:
    with factory.begin() as session:
        conversation = open_conversation(
            session,
            conversation_id=f"cv_{uuid.uuid4().hex}",
            channel="chat",
            tracker_key=f"web:{session_id}",
        )
        return conversation.id


def queue(factory: sessionmaker, conversation_id: str, text: str, **kwargs: Any) -> int:
    with factory.begin() as session:
        return outbound.queue_conversation_message(
            session,
            conversation_id=conversation_id,
            text=text,
            author=kwargs.pop("author", "agent"),
            purpose=kwargs.pop("purpose", "agent_reply"),
            **kwargs,
        ).id


def rows(factory: sessionmaker, ids: list[int]) -> list[tuple[str, int, str | None]]:
    with factory() as session:
        found = session.execute(
            select(OutboxMessage)
            .where(OutboxMessage.id.in_(ids))
            .order_by(OutboxMessage.id)
        ).scalars()
        return [(r.status, r.attempts, r.last_error) for r in found]


@pytest.fixture()
def factory(empty_engine: Engine) -> sessionmaker:
    return make_session_factory(empty_engine)


async def test_courier_pushes_pending_web_messages_once(
    rasa: Rasa, factory: sessionmaker
) -> None:
    session = "U" * 22
    conversation = web_conversation(factory, session)
    ids = [
        queue(
            factory,
            conversation,
            "Anna here.",
            buttons=[{"title": "OK", "payload": "/ok"}],
        ),
        queue(
            factory,
            conversation,
            "You're next.",
            author="system",
            purpose="queue_update",
        ),
    ]
    courier = Courier(settings_for(rasa.url), session_factory=factory)
    tab = await ChatTab.open(rasa.url, session)
    try:
        assert await courier.deliver(f"web:{session}") == 2
        assert await tab.next() == [
            "bot_uttered",
            {
                "text": "Anna here.",
                "author": "agent",
                "buttons": [{"title": "OK", "payload": "/ok"}],
                "ref": f"outbox:{ids[0]}",
            },
        ]
        assert (await tab.next())[1]["ref"] == f"outbox:{ids[1]}"
        assert [r[0] for r in rows(factory, ids)] == ["sent", "sent"]
        assert await courier.deliver(f"web:{session}") == 0
        await asyncio.sleep(0.1)
        assert tab.events.empty()
    finally:
        await tab.close()
        await courier.aclose()


async def test_concurrent_deliveries_push_each_message_once(
    rasa: Rasa, factory: sessionmaker
) -> None:
    session = "V" * 22
    conversation = web_conversation(factory, session)
    for n in range(3):
        queue(factory, conversation, f"part {n}")
    courier = Courier(settings_for(rasa.url), session_factory=factory)
    tab = await ChatTab.open(rasa.url, session)
    try:
        counts = await asyncio.gather(
            *(courier.deliver(f"web:{session}") for _ in range(4))
        )
        assert sum(counts) == 3
        texts = [(await tab.next())[1]["text"] for _ in range(3)]
        assert texts == ["part 0", "part 1", "part 2"]
        await asyncio.sleep(0.1)
        assert tab.events.empty()
    finally:
        await tab.close()
        await courier.aclose()


async def test_courier_leaves_rest_and_other_channels_pending(
    rasa: Rasa, factory: sessionmaker
) -> None:
    with factory.begin() as session:
        conversation = open_conversation(
            session, conversation_id="cv_rest_1", channel="chat", tracker_key="rest:ann"
        ).id
    message = queue(factory, conversation, "For the REST client.")
    courier = Courier(settings_for(rasa.url), session_factory=factory)
    try:
        assert await courier.deliver("rest:ann") == 0
        assert await courier.deliver("not a key") == 0
        assert rows(factory, [message]) == [("pending", 0, None)]
    finally:
        await courier.aclose()


async def test_courier_keeps_messages_pending_while_rasa_is_down(
    factory: sessionmaker,
) -> None:
    session = "W" * 22
    conversation = web_conversation(factory, session)
    message = queue(factory, conversation, "Private text 12345")
    down = f"http://127.0.0.1:{free_port()}"
    courier = Courier(
        settings_for(down),
        session_factory=factory,
        max_attempts=3,
        base_delay=0.05,
        max_delay=0.1,
    )
    try:
        assert await courier.deliver(f"web:{session}") == 0  # no exception
        status, attempts, error = rows(factory, [message])[0]
        assert (status, attempts) == ("pending", 1)
        assert "unreachable" in error and "12345" not in error
        await courier.retries_done()
        assert rows(factory, [message])[0][:2] == ("failed", 3)
        assert await courier.pause(f"web:{session}") is False
        assert await courier.hand_back(f"web:{session}") == []
        assert await courier.stats() is None
    finally:
        await courier.aclose()


async def test_a_retry_delivers_once_rasa_is_back(factory: sessionmaker) -> None:
    session = "X" * 22
    conversation = web_conversation(factory, session)
    message = queue(factory, conversation, "Sorry for the wait.")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    courier = Courier(settings_for(url), session_factory=factory, base_delay=0.5)
    server = None
    try:
        assert await courier.deliver(f"web:{session}") == 0
        assert rows(factory, [message])[0][:2] == ("pending", 1)
        _, server = await start_rasa(port)
        await courier.retries_done()
        assert rows(factory, [message])[0][:2] == ("sent", 1)
    finally:
        await courier.aclose()
        if server is not None:
            await stop_rasa(server)


async def test_courier_with_a_wrong_or_no_secret_keeps_messages_pending(
    rasa: Rasa, factory: sessionmaker
) -> None:
    session = "Y" * 22
    conversation = web_conversation(factory, session)
    message = queue(factory, conversation, "Hello")
    for secret in ("z" * 40, None):
        courier = Courier(
            settings_for(rasa.url, secret), session_factory=factory, max_attempts=99
        )
        try:
            assert await courier.deliver(f"web:{session}") == 0
        finally:
            await courier.aclose()
    status, attempts, error = rows(factory, [message])[0]
    assert (status, attempts) == ("pending", 2)
    assert "CRM_CONSOLE_SECRET" in error


async def test_courier_control_calls_report_the_servers_answer(rasa: Rasa) -> None:
    courier = Courier(settings_for(rasa.url))
    try:
        assert await courier.stats() == {"lost_events": None}
        assert await courier.pause(KEY) is False  # no model loaded: 503
        assert await courier.hand_back(KEY) == []
    finally:
        await courier.aclose()
