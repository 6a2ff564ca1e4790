"""The Rasa server's internal e-mail route over real HTTP (Sanic on a free port).

Rasa's agent is replaced by a recorder that answers through the output channel
Rasa hands it; the channel, Rasa's ``register`` and Sanic are the real ones.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from rasa.core.channels.channel import UserMessage, register
from sanic import Sanic

from channels.chat_tokens import control_token, email_ingress_token
from channels.email_input import EmailInput

SECRET = "e" * 40
TOKEN = email_ingress_token(SECRET)
MAX_CHARS = 50
MAX_REQUEST = 4096
THREAD = "a@b.nl#0123456789abcdef"
BUTTONS = [{"title": "Yes", "payload": "/affirm"}, {"title": "No", "payload": "/deny"}]
METADATA = {
    "subject": "My order",
    "attachments": [
        {"filename": "photo.jpg", "content_type": "image/jpeg", "size": 1234}
    ],
}


@dataclass
class RecordingAgent:
    """Stands in for Rasa's agent: keeps each message and answers like a bot."""

    messages: list[UserMessage] = field(default_factory=list)

    async def handle_message(self, message: UserMessage) -> None:
        self.messages.append(message)
        out, to = message.output_channel, message.sender_id
        if message.text == "fail":
            raise RuntimeError("the turn failed")
        if message.text == "buttons":
            await out.send_text_with_buttons(to, "Pick one", BUTTONS)
            return
        if message.text == "media":
            await out.send_image_url(to, "https://example.org/a.png")
            await out.send_custom_json(to, {"kind": "card"})
            return
        await out.send_text_message(to, f"got: {message.text}")


@dataclass
class Client:
    url: str
    agent: RecordingAgent
    http: aiohttp.ClientSession

    async def post(
        self,
        body: Any = None,
        *,
        raw: bytes | None = None,
        token: str | None = TOKEN,
        path: str = "/webhooks/email/webhook",
    ) -> tuple[int, Any]:
        data = raw if raw is not None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.post(
            f"{self.url}{path}", data=data, headers=headers
        ) as response:
            return response.status, json.loads(await response.text())

    @property
    def last(self) -> UserMessage:
        return self.agent.messages[-1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def turn(text: str = "hello", **changes: Any) -> dict[str, Any]:
    body = {
        "thread_key": THREAD,
        "text": text,
        "message_id": "<m1@example.org>",
        "metadata": METADATA,
    }
    body.update(changes)
    return body


async def start(secret: str) -> tuple[Any, str, RecordingAgent]:
    Sanic.test_mode = True
    app = Sanic(f"email_{uuid.uuid4().hex[:8]}")
    agent = RecordingAgent()
    app.ctx.agent = agent
    channel = EmailInput(
        secret=secret, max_message_chars=MAX_CHARS, max_request_bytes=MAX_REQUEST
    )
    register([channel], app, route="/webhooks/")
    port = free_port()
    server = await app.create_server(
        host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False
    )
    await server.startup()
    await server.before_start()
    await server.after_start()
    return server, f"http://127.0.0.1:{port}", agent


async def stop(server: Any) -> None:
    await server.before_stop()
    await server.close()
    await server.after_stop()


@pytest.fixture()
async def client() -> AsyncIterator[Client]:
    server, url, agent = await start(SECRET)
    try:
        async with aiohttp.ClientSession() as http:
            yield Client(url, agent, http)
    finally:
        await stop(server)


async def test_a_turn_runs_on_the_thread_key_with_the_metadata(client: Client) -> None:
    status, answer = await client.post(turn("where is my parcel?"))
    assert status == 200
    assert answer == {"messages": [{"text": "got: where is my parcel?"}], "cut": False}
    message = client.last
    assert message.sender_id == f"email:{THREAD}"
    assert message.input_channel == "email"
    assert message.message_id == "<m1@example.org>"
    assert message.metadata == METADATA


async def test_only_subject_and_attachments_reach_rasa(client: Client) -> None:
    metadata = {**METADATA, "identity": {"v": 2}, "client_ip": "1.2.3.4"}
    status, _ = await client.post(turn(metadata=metadata))
    assert status == 200
    assert client.last.metadata == METADATA


async def test_buttons_are_returned(client: Client) -> None:
    status, answer = await client.post(turn("buttons"))
    assert status == 200
    assert answer["messages"] == [{"text": "Pick one", "buttons": BUTTONS}]


async def test_an_image_becomes_its_url_and_custom_payloads_are_skipped(
    client: Client,
) -> None:
    status, answer = await client.post(turn("media"))
    assert status == 200
    assert answer["messages"] == [{"text": "https://example.org/a.png"}]


async def test_long_text_is_cut_and_the_notice_comes_first(client: Client) -> None:
    status, answer = await client.post(turn("y" * 300))
    assert status == 200
    assert client.last.text == "y" * MAX_CHARS
    assert answer["cut"] is True
    assert answer["messages"] == [
        {"text": "Your message was very long, so I read only the first 50 characters."},
        {"text": "got: " + "y" * MAX_CHARS},
    ]


async def test_a_long_message_id_is_cut(client: Client) -> None:
    status, _ = await client.post(turn(message_id="<" + "m" * 400 + ">"))
    assert status == 200
    assert len(client.last.message_id) == 255


@pytest.mark.parametrize(
    "token", [None, "", "wrong", control_token(SECRET), TOKEN + "0", TOKEN.upper()]
)
async def test_without_the_right_token_the_answer_is_403(
    client: Client, token: str | None
) -> None:
    status, answer = await client.post(turn(), token=token)
    assert (status, answer) == (403, {"error": "forbidden"})
    assert client.agent.messages == []


async def test_the_token_is_checked_before_the_body(client: Client) -> None:
    status, answer = await client.post(raw=b"x" * (MAX_REQUEST * 2), token="wrong")
    assert (status, answer) == (403, {"error": "forbidden"})


async def test_without_a_secret_the_route_answers_503() -> None:
    server, url, agent = await start("")
    try:
        async with aiohttp.ClientSession() as http:
            status, answer = await Client(url, agent, http).post(turn())
    finally:
        await stop(server)
    assert status == 503
    assert "CRM_CONSOLE_SECRET" in answer["error"]
    assert agent.messages == []


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (turn(thread_key=None), "thread_key"),
        (turn(thread_key="a@b.nl"), "thread_key"),
        (turn(thread_key="#0123"), "thread_key"),
        (turn(thread_key="nobody#0123"), "thread_key"),
        (turn(thread_key="a@b.nl#" + "x" * 250), "248"),
        (turn(thread_key="a\n@b.nl#0123"), "printable"),
        (turn(thread_key=["a@b.nl#0123"]), "thread_key"),
        (turn(text=None), "message"),
        (turn(text=""), "message"),
        (turn(text=" \x00\x01 "), "message"),
        (turn(text={"t": "hi"}), "message"),
        (turn(message_id=None), "message_id"),
        (turn(message_id=""), "message_id"),
        (turn(message_id=12), "message_id"),
        (turn(metadata=[]), "metadata"),
        (turn(metadata={"subject": 3}), "subject"),
        (turn(metadata={"subject": "s" * 201}), "subject"),
        (turn(metadata={"attachments": {"a": 1}}), "attachments"),
        (turn(metadata={"attachments": [{}] * 21}), "attachments"),
        (turn(metadata={"attachments": ["a.pdf"]}), "attachments[0]"),
        (turn(metadata={"attachments": [{"data": "AAAA"}]}), "attachments[0]"),
        (turn(metadata={"attachments": [{"size": -1}]}), "size"),
        (turn(metadata={"attachments": [{"size": True}]}), "size"),
        (turn(metadata={"attachments": [{"filename": "f" * 256}]}), "filename"),
        (["a@b.nl#0123", "hi"], "JSON object"),
    ],
)
async def test_malformed_bodies_get_400(client: Client, body: Any, says: str) -> None:
    status, answer = await client.post(body)
    assert status == 400
    assert says in answer["error"]
    assert client.agent.messages == []


@pytest.mark.parametrize("raw", [b"", b"not json", b"\xff\xfe{}", b'{"text": "a"'])
async def test_unparsable_bodies_get_400(client: Client, raw: bytes) -> None:
    status, answer = await client.post(raw=raw)
    assert (status, answer) == (
        400,
        {"error": "the request body must be a JSON object"},
    )


async def test_a_body_over_the_limit_gets_413(client: Client) -> None:
    status, answer = await client.post(turn("z" * (MAX_REQUEST + 1)))
    assert status == 413
    assert str(MAX_REQUEST) in answer["error"]
    assert client.agent.messages == []


async def test_a_failing_turn_gets_500_and_the_route_goes_on(client: Client) -> None:
    status, answer = await client.post(turn("fail"))
    assert (status, answer) == (500, {"error": "the turn failed"})
    status, answer = await client.post(turn("next"))
    assert (status, answer["messages"]) == (200, [{"text": "got: next"}])
