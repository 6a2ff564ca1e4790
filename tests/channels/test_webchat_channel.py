"""The web chat socket over real HTTP/websockets (a Sanic server on a free port).

Rasa's agent is replaced by a recorder that answers through the output channel
Rasa hands it (Rasa's interface); the channel, Rasa's ``register``, Rasa's CORS
setup (as ``crm run`` configures it), Sanic and python-socketio are the real ones.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import socketio
import websockets
from rasa.core.channels.channel import UserMessage, register
from rasa.server import configure_cors
from sanic import Sanic

from channels.chat_tokens import issue_chat_token, token_expiry
from channels.rest import TOO_LONG_NOTICE
from channels.webchat import WebChatInput, chat_origins
from crm_settings import Settings

SECRET = "w" * 40
ORIGIN = "http://localhost:8000"
MAX_CHARS = 50
BUTTONS = [{"title": "Yes", "payload": "/affirm"}, {"title": "No", "payload": "/deny"}]


@dataclass
class RecordingAgent:
    """Stands in for Rasa's agent: keeps each message and answers through its output."""

    messages: list[UserMessage] = field(default_factory=list)

    async def handle_message(self, message: UserMessage) -> None:
        self.messages.append(message)
        out, to = message.output_channel, message.sender_id
        if message.text == "fail":
            raise RuntimeError("the turn failed")
        if message.text == "buttons":
            await out.send_text_with_buttons(to, "Pick one", BUTTONS)
            return
        await out.send_text_message(to, f"got {len(message.text)} characters")


@dataclass
class Server:
    url: str
    agent: RecordingAgent
    clients: list[Any] = field(default_factory=list)

    async def connect(
        self,
        auth: Any = None,
        *,
        origin: str = ORIGIN,
        transport: str = "websocket",
    ) -> Client:
        """Open a socket; raises ``Refused`` with the server's reason."""
        client: Client
        if transport == "websocket":
            client = RawWebSocket()
        else:
            client = PollingClient()
        self.clients.append(client)
        await client.open(self.url, auth, origin)
        return client

    @property
    def last(self) -> UserMessage:
        return self.agent.messages[-1]


class Refused(Exception):
    """The server refused the connection (the reason is the message)."""


class Client:
    """What the tests need of a socket.io client."""

    def __init__(self) -> None:
        self.events: asyncio.Queue = asyncio.Queue()

    async def open(self, url: str, auth: Any, origin: str) -> None:
        raise NotImplementedError

    async def say(self, data: Any) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def next(self, name: str | None = None, timeout: float = 5) -> Any:
        while True:
            event, data = await asyncio.wait_for(self.events.get(), timeout)
            if name is None or event == name:
                return event if name is None else data

    def drained(self) -> list[tuple[str, Any]]:
        items = []
        while not self.events.empty():
            items.append(self.events.get_nowait())
        return items


class PollingClient(Client):
    """python-socketio's client on long polling.

    Its websocket transport needs aiohttp >= 3.10 (Rasa pins 3.9), hence the
    raw client below for websockets. It is closed with ``abort``: waiting for
    its pending long poll would take a ping interval (25 s).
    """

    def __init__(self) -> None:
        super().__init__()
        self.sio = socketio.AsyncClient(reconnection=False)
        self.outcome: asyncio.Future | None = None
        for name in ("bot_uttered", "bot_typing", "customer_uttered", "chat_error"):
            self.sio.on(name, self._recorder(name))
        self.sio.on("connect", self._connected)
        self.sio.on("connect_error", self._refused)

    def _recorder(self, name: str) -> Any:
        async def record(data: Any) -> None:
            await self.events.put((name, data))

        return record

    async def _connected(self) -> None:
        if self.outcome is not None and not self.outcome.done():
            self.outcome.set_result(None)

    async def _refused(self, data: Any) -> None:
        if self.outcome is not None and not self.outcome.done():
            self.outcome.set_result(
                data if isinstance(data, dict) else {"message": data}
            )

    async def open(self, url: str, auth: Any, origin: str) -> None:
        self.outcome = asyncio.get_running_loop().create_future()
        try:
            await self.sio.connect(
                url,
                auth=auth,
                headers={"Origin": origin},
                transports=["polling"],
                socketio_path="/socket.io",
                wait=False,
            )
        except socketio.exceptions.ConnectionError as error:
            raise Refused(str(error)) from error
        refusal = await asyncio.wait_for(self.outcome, 5)
        if refusal is not None:
            await self.close()
            raise Refused(refusal.get("message"))

    async def say(self, data: Any) -> Any:
        return await self.sio.call("user_uttered", data, timeout=5)

    async def close(self) -> None:
        await self.sio.eio.disconnect(abort=True)


class RawWebSocket(Client):
    """Socket.IO v5 over a bare websocket (Engine.IO v4), as a browser speaks it."""

    def __init__(self) -> None:
        super().__init__()
        self.ws: Any = None
        self.acks: dict[int, asyncio.Future] = {}
        self.next_id = 0
        self.reader: asyncio.Task | None = None

    async def open(self, url: str, auth: Any, origin: str) -> None:
        ws_url = (
            url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        )
        try:
            self.ws = await websockets.connect(ws_url, extra_headers={"Origin": origin})
        except websockets.exceptions.InvalidStatusCode as error:
            raise Refused(f"HTTP {error.status_code}") from error
        opening = await self.ws.recv()
        assert opening.startswith("0{")
        await self.ws.send("40" + (json.dumps(auth) if auth is not None else ""))
        reply = await asyncio.wait_for(self.ws.recv(), 5)
        if reply.startswith("44"):
            await self.ws.close()
            raise Refused(json.loads(reply[2:]).get("message"))
        assert reply.startswith("40{")
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for packet in self.ws:
            if packet == "2":
                await self.ws.send("3")
            elif packet.startswith("42"):
                name, *args = json.loads(packet[2:])
                await self.events.put((name, args[0] if args else None))
            elif packet.startswith("43"):
                ack_id, _, body = packet[2:].partition("[")
                self.acks.pop(int(ack_id)).set_result(json.loads("[" + body)[0])
            elif packet.startswith("41"):
                await self.events.put(("disconnect", None))

    async def say(self, data: Any) -> Any:
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.acks[self.next_id] = future
        await self.ws.send(f"42{self.next_id}" + json.dumps(["user_uttered", data]))
        return await asyncio.wait_for(future, 5)

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        if self.ws is not None:
            await self.ws.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def token(session: str | None = None, **kwargs: Any) -> dict[str, str]:
    value, _ = issue_chat_token(SECRET, session, **kwargs)
    return {"token": value}


def session_of(auth: dict[str, str]) -> str:
    return auth["token"].split(".")[1]


@pytest.fixture()
async def server() -> AsyncIterator[Server]:
    Sanic.test_mode = True
    app = Sanic(f"web_{uuid.uuid4().hex[:8]}")
    configure_cors(app, "*")  # as `crm run` starts the Rasa server
    agent = RecordingAgent()
    app.ctx.agent = agent
    channel = WebChatInput(
        secret=SECRET,
        origins=[ORIGIN, "http://127.0.0.1:8000"],
        max_message_chars=MAX_CHARS,
    )
    register([channel], app, route="/webhooks/")
    port = free_port()
    srv = await app.create_server(
        host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False
    )
    await srv.startup()
    await srv.before_start()
    await srv.after_start()
    state = Server(f"http://127.0.0.1:{port}", agent)
    try:
        yield state
    finally:
        for client in state.clients:
            await client.close()
        await srv.before_stop()
        await srv.close()
        await srv.after_stop()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_a_message_becomes_a_turn_on_the_sessions_tracker(
    server: Server, transport: str
) -> None:
    auth = token()
    client = await server.connect(auth, transport=transport)
    ack = await client.say({"message": "hello"})
    assert ack == {"ok": True, "cut": False}
    assert await client.next("bot_uttered") == {
        "text": "got 5 characters",
        "author": "bot",
    }
    message = server.last
    assert message.sender_id == f"web:{session_of(auth)}"
    assert message.input_channel == "web"
    assert message.metadata == {"client_ip": "127.0.0.1"}


async def test_typing_is_shown_around_the_turn(server: Server) -> None:
    client = await server.connect(token())
    await client.say({"message": "hi"})
    events = []
    while len(events) < 3:
        events.append(await client.next())
    assert events == ["bot_typing", "bot_uttered", "bot_typing"]
    await client.say({"message": "fail"})  # a failed turn still stops the indicator
    typing = [await client.next("bot_typing"), await client.next("bot_typing")]
    assert typing == [{"typing": True}, {"typing": False}]


async def test_buttons_keep_title_and_payload(server: Server) -> None:
    client = await server.connect(token())
    await client.say({"message": "buttons"})
    assert await client.next("bot_uttered") == {
        "text": "Pick one",
        "author": "bot",
        "buttons": BUTTONS,
    }


@pytest.mark.parametrize(
    "auth",
    [
        None,
        {},
        {"token": ""},
        {"token": 42},
        {"session_id": "AAAAAAAAAAAAAAAAAAAAAA"},
        {"token": issue_chat_token("x" * 40)[0]},  # signed with another secret
        {"token": issue_chat_token(SECRET, ttl_seconds=60, now=time.time() - 120)[0]},
        {"token": "v1.AAAAAAAAAAAAAAAAAAAAAA.9999999999.forged"},
    ],
    ids=["none", "empty", "blank", "number", "session", "other", "expired", "forged"],
)
@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_sockets_without_a_valid_token_are_refused(
    server: Server, auth: Any, transport: str
) -> None:
    with pytest.raises(Refused, match="unauthorized"):
        await server.connect(auth, transport=transport)
    assert server.agent.messages == []


async def test_pages_of_other_origins_cannot_open_a_socket(server: Server) -> None:
    for transport in ("websocket", "polling"):
        with pytest.raises(Refused):
            await server.connect(
                token(), origin="http://evil.example", transport=transport
            )


async def test_the_socket_answers_cors_once_despite_rasas_cors(server: Server) -> None:
    """Rasa's ``--cors "*"`` must not add a second Access-Control-Allow-Origin."""
    import aiohttp

    url = f"{server.url}/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers={"Origin": ORIGIN}) as response:
            assert response.status == 200
            assert response.headers.getall("Access-Control-Allow-Origin") == [ORIGIN]
        async with http.get(url, headers={"Origin": "http://evil.example"}) as response:
            assert response.status == 400
            assert "Access-Control-Allow-Origin" not in response.headers
        async with http.get(
            f"{server.url}/webhooks/web/", headers={"Origin": "http://a.example"}
        ) as response:  # other routes keep Rasa's CORS
            assert response.headers.getall("Access-Control-Allow-Origin") == [
                "http://a.example"
            ]


async def test_a_client_cannot_choose_its_session(server: Server) -> None:
    auth = token()
    client = await server.connect({**auth, "session_id": "BBBBBBBBBBBBBBBBBBBBBB"})
    await client.say(
        {"message": "hi", "session_id": "CCCCCCCCCCCCCCCCCCCCCC", "sender": "rest:x"}
    )
    assert server.last.sender_id == f"web:{session_of(auth)}"
    assert server.last.input_channel == "web"


async def test_tabs_of_one_session_share_it_and_others_see_nothing(
    server: Server,
) -> None:
    auth = token()
    first = await server.connect(auth)
    second = await server.connect(auth)
    stranger = await server.connect(token())
    await first.say({"message": "hello"})
    assert await second.next("customer_uttered") == {"text": "hello"}
    assert (await second.next("bot_uttered"))["text"] == "got 5 characters"
    assert (await first.next("bot_uttered"))["text"] == "got 5 characters"
    await asyncio.sleep(0.2)
    assert stranger.drained() == []
    assert ("customer_uttered", {"text": "hello"}) not in first.drained()


async def test_text_is_cleaned_and_cut_like_rest(server: Server) -> None:
    client = await server.connect(token())
    await client.say({"message": "a\x00b\x07c\nd\te\ud800"})
    assert server.last.text == "abc\nd\te\ufffd"
    ack = await client.say({"message": "x" * (MAX_CHARS + 25)})
    assert ack == {"ok": True, "cut": True}
    assert server.last.text == "x" * MAX_CHARS
    notice = await client.next("bot_uttered")
    while notice["author"] != "system":
        notice = await client.next("bot_uttered")
    assert notice["text"] == TOO_LONG_NOTICE.format(limit=MAX_CHARS)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({}, "message must be a string"),
        ({"message": None}, "message must be a string"),
        ({"message": 42}, "message must be a string"),
        ({"message": {"text": "hi"}}, "message must be a string"),
        ({"message": ""}, "must contain text"),
        ({"message": "  \n "}, "must contain text"),
        ({"message": "\x00\x01"}, "must contain text"),
        ("hello", "must be an object"),
        (["hello"], "must be an object"),
        (None, "must be an object"),
    ],
)
async def test_bad_messages_get_an_error_and_no_turn(
    server: Server, data: Any, says: str
) -> None:
    client = await server.connect(token())
    ack = await client.say(data)
    assert says in ack["error"]
    assert says in (await client.next("chat_error"))["error"]
    assert server.agent.messages == []


async def test_a_token_that_expires_while_connected_stops_the_session(
    server: Server,
) -> None:
    auth = token(ttl_seconds=2)
    client = await server.connect(auth)
    await asyncio.sleep(max(token_expiry(auth["token"]) - time.time(), 0) + 0.1)
    assert await client.say({"message": "hi"}) == {"error": "unauthorized"}
    assert server.agent.messages == []


async def test_the_health_route_answers(server: Server) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/webhooks/web/") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}


def test_origins_default_to_the_console_and_follow_the_setting() -> None:
    assert chat_origins(Settings(console_port=8123)) == [
        "http://localhost:8123",
        "http://127.0.0.1:8123",
    ]
    custom = Settings(chat_origins=" https://shop.example/ , https://m.shop.example")
    assert chat_origins(custom) == ["https://shop.example", "https://m.shop.example"]
    assert chat_origins(Settings(chat_origins="*")) == "*"


def test_no_secret_refuses_every_socket() -> None:
    channel = WebChatInput(secret=None, origins=[ORIGIN])
    channel.secret = None  # the environment may hold one
    with pytest.raises(ValueError, match="not configured"):
        channel.session_of(token())
