"""The namespaced REST channel over real HTTP (a Sanic server on a free port).

Rasa's agent is replaced by a recorder that answers like a bot; the channel,
Rasa's ``register`` and Sanic are the real ones.
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
import ujson
from rasa.core.channels.channel import UserMessage, register
from sanic import Sanic

from channels.rest import CLIENT_IP_KEY, NamespacedRestInput

MAX_CHARS = 50
MAX_METADATA = 400
MAX_REQUEST = 16384
IDENTITY = {"v": 2, "sender": "alice", "kind": "email", "value": "a@b.nl", "sig": "0"}


@dataclass
class RecordingAgent:
    """Stands in for Rasa's agent: keeps each message, answers twice."""

    messages: list[UserMessage] = field(default_factory=list)

    async def handle_message(self, message: UserMessage) -> None:
        self.messages.append(message)
        if message.text == "fail":
            raise RuntimeError("the turn failed")
        await message.output_channel.send_text_message(
            message.sender_id, f"got {len(message.text)} characters"
        )
        await message.output_channel.send_text_message(message.sender_id, "bye")


@dataclass
class Client:
    url: str
    agent: RecordingAgent
    http: aiohttp.ClientSession

    async def post(
        self, body: Any, *, raw: bytes | None = None, query: str = "", **headers: str
    ) -> tuple[int, Any]:
        # ujson (as Sanic) writes 1,000 levels; json.dumps stops near 990.
        data = raw if raw is not None else ujson.dumps(body).encode()
        async with self.http.post(
            f"{self.url}/webhooks/rest/webhook{query}",
            data=data,
            headers={"Content-Type": "application/json", **headers},
        ) as response:
            text = await response.text()
            if query:
                return response.status, [json.loads(x) for x in text.splitlines()]
            return response.status, json.loads(text)

    @property
    def last(self) -> UserMessage:
        return self.agent.messages[-1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
async def client() -> AsyncIterator[Client]:
    Sanic.test_mode = True
    app = Sanic(f"rest_{uuid.uuid4().hex[:8]}")
    agent = RecordingAgent()
    app.ctx.agent = agent
    channel = NamespacedRestInput(
        max_message_chars=MAX_CHARS,
        max_metadata_bytes=MAX_METADATA,
        max_request_bytes=MAX_REQUEST,
    )
    register([channel], app, route="/webhooks/")
    port = free_port()
    server = await app.create_server(
        host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False
    )
    await server.startup()
    await server.before_start()
    await server.after_start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Client(f"http://127.0.0.1:{port}", agent, http)
    finally:
        await server.before_stop()
        await server.close()
        await server.after_stop()


async def test_sender_is_namespaced_and_answers_name_the_client(client: Client) -> None:
    status, answers = await client.post({"sender": "alice", "message": "hello"})
    assert status == 200
    assert answers == [
        {"recipient_id": "alice", "text": "got 5 characters"},
        {"recipient_id": "alice", "text": "bye"},
    ]
    assert client.last.sender_id == "rest:alice"
    assert client.last.input_channel == "rest"


@pytest.mark.parametrize(
    "sender", ["telegram:123", "+3197010000001", "sms:+3197010000001", "rest:other"]
)
async def test_look_alike_senders_stay_in_the_rest_namespace(
    client: Client, sender: str
) -> None:
    status, answers = await client.post(
        {"sender": sender, "message": "hi", "input_channel": "telegram"}
    )
    assert status == 200
    assert client.last.sender_id == f"rest:{sender}"
    assert client.last.input_channel == "rest"  # the body cannot choose
    assert {a["recipient_id"] for a in answers} == {sender}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"message": "hi"}, "sender"),
        ({"sender": "", "message": "hi"}, "sender"),
        ({"sender": 42, "message": "hi"}, "sender"),
        ({"sender": "x" * 129, "message": "hi"}, "128"),
        ({"sender": "a\nb", "message": "hi"}, "printable"),
        ({"sender": "a\x00b", "message": "hi"}, "printable"),
        ({"sender": "alice"}, "message"),
        ({"sender": "alice", "message": ""}, "message"),
        ({"sender": "alice", "message": "   "}, "message"),
        ({"sender": "alice", "message": "\x00\x01"}, "message"),
        ({"sender": "alice", "message": {"text": "hi"}}, "message"),
        ({"sender": "alice", "message": None}, "message"),
        (["alice", "hi"], "JSON object"),
        ("hello", "JSON object"),
    ],
)
async def test_bad_bodies_get_400_with_a_json_error(
    client: Client, body: Any, says: str
) -> None:
    status, answer = await client.post(body)
    assert status == 400
    assert says in answer["error"]
    assert client.agent.messages == []


@pytest.mark.parametrize(
    "raw", [b"not json", b"", b"\xff\xfe{}", b'{"sender": "a", "message": "hi"']
)
async def test_unparsable_bodies_get_400(client: Client, raw: bytes) -> None:
    status, answer = await client.post(None, raw=raw)
    assert (status, answer) == (
        400,
        {"error": "the request body must be a JSON object"},
    )
    assert client.agent.messages == []


async def test_a_body_over_the_limit_gets_413(client: Client) -> None:
    status, answer = await client.post(
        {"sender": "alice", "message": "x" * (MAX_REQUEST + 10)}
    )
    assert status == 413
    assert str(MAX_REQUEST) in answer["error"]
    assert client.agent.messages == []


async def test_long_text_is_cut_and_the_answer_says_so(client: Client) -> None:
    status, answers = await client.post({"sender": "alice", "message": "y" * 300})
    assert status == 200
    assert client.last.text == "y" * MAX_CHARS
    assert answers[0] == {
        "recipient_id": "alice",
        "text": "Your message was very long, so I read only the first 50 characters.",
    }
    assert answers[1]["text"] == f"got {MAX_CHARS} characters"
    status, answers = await client.post({"sender": "alice", "message": "z" * MAX_CHARS})
    assert answers[0]["text"] == f"got {MAX_CHARS} characters"  # no notice


async def test_nul_controls_and_lone_surrogates_are_cleaned(client: Client) -> None:
    raw = b'{"sender": "alice", "message": "a\\u0000b\\ud800c\\u001bd\\ne\\tf"}'
    status, _ = await client.post(None, raw=raw)
    assert status == 200
    assert client.last.text == "ab\ufffdcd\ne\tf"


async def test_only_the_identity_passes_plus_the_peer_address(client: Client) -> None:
    status, _ = await client.post(
        {
            "sender": "alice",
            "message": "hi",
            "metadata": {
                "identity": IDENTITY,
                "verified": True,
                CLIENT_IP_KEY: "10.9.8.7",
            },
        },
        **{"X-Forwarded-For": "10.1.2.3"},
    )
    assert status == 200
    assert client.last.metadata == {"identity": IDENTITY, CLIENT_IP_KEY: "127.0.0.1"}


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "metadata",
    [
        {"identity": IDENTITY, "padding": "p" * MAX_METADATA},  # too large
        {"identity": nested(5)},  # 6 levels with the outer dict
        {"identity": IDENTITY, "x": nested(1000)},
        nested(1000),
        ["identity"],
        "identity",
    ],
    ids=["too-large", "depth-6", "nested-1000-beside", "nested-1000", "list", "str"],
)
async def test_bad_metadata_is_dropped_and_the_message_goes_through(
    client: Client, metadata: Any
) -> None:
    status, answers = await client.post(
        {"sender": "alice", "message": "hi", "metadata": metadata}
    )
    assert status == 200 and answers[0]["text"] == "got 2 characters"
    assert client.last.metadata == {CLIENT_IP_KEY: "127.0.0.1"}


async def test_metadata_at_the_depth_limit_passes(client: Client) -> None:
    status, _ = await client.post(
        {"sender": "alice", "message": "hi", "metadata": {"identity": nested(4)}}
    )
    assert status == 200
    assert client.last.metadata["identity"] == nested(4)


async def test_a_failing_turn_still_answers_and_logs_no_text(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    status, answers = await client.post({"sender": "alice", "message": "fail"})
    assert (status, answers) == (200, [])
    assert "rest:alice" in caplog.text
    status, answers = await client.post({"sender": "alice", "message": "again"})
    assert status == 200 and len(answers) == 2


async def test_streaming_answers_carry_the_notice_and_the_client_id(
    client: Client,
) -> None:
    status, lines = await client.post(
        {"sender": "bob", "message": "w" * 80}, query="?stream=true"
    )
    assert status == 200
    assert [line["recipient_id"] for line in lines] == ["bob"] * 3
    assert "first 50 characters" in lines[0]["text"]
    assert lines[1]["text"] == f"got {MAX_CHARS} characters"
    assert client.last.sender_id == "rest:bob"
