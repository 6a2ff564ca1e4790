"""Agent messages reach REST clients with their next answer, exactly once.

A real Sanic server with the REST channel on a real store (SQLite and
PostgreSQL); the outbox rows are written by the store service the console uses.
Rasa's agent is a recorder answering through the output channel it is given.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from rasa.core.channels.channel import UserMessage, register
from sanic import Sanic
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from channels.rest import NamespacedRestInput
from crm_store.db import make_engine, make_session_factory
from crm_store.models import OutboxMessage
from crm_store.services import outbound
from crm_store.services.conversations import open_conversation

BUTTONS = [{"title": "Yes please", "payload": "/affirm"}]


class EchoAgent:
    """Stands in for Rasa's agent: one answer per message (none while 'paused')."""

    paused = False

    async def handle_message(self, message: UserMessage) -> None:
        if not self.paused:
            await message.output_channel.send_text_message(message.sender_id, "bot")


@dataclass
class Rest:
    url: str
    agent: EchoAgent
    factory: sessionmaker
    http: aiohttp.ClientSession

    async def post(self, sender: str, *, stream: bool = False) -> list[dict]:
        query = "?stream=true" if stream else ""
        async with self.http.post(
            f"{self.url}/webhooks/rest/webhook{query}",
            json={"sender": sender, "message": "any news?"},
        ) as response:
            assert response.status == 200
            text = await response.text()
        if stream:
            return [json.loads(line) for line in text.splitlines()]
        return json.loads(text)

    def queue(self, sender: str, text: str, **kwargs) -> int:
        with self.factory.begin() as session:
            conversation = open_conversation(
                session,
                conversation_id=f"cv_{uuid.uuid5(uuid.NAMESPACE_URL, sender).hex}",
                channel="chat",
                tracker_key=f"rest:{sender}",
            )
            message = outbound.queue_conversation_message(
                session,
                conversation_id=conversation.id,
                text=text,
                author=kwargs.pop("author", "agent"),
                purpose=kwargs.pop("purpose", "agent_reply"),
                **kwargs,
            )
            return message.id

    def status(self, message_id: int) -> str:
        with self.factory() as session:
            return session.execute(
                select(OutboxMessage.status).where(OutboxMessage.id == message_id)
            ).scalar_one()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def serve(factory: sessionmaker | None) -> tuple[Sanic, object, int, EchoAgent]:
    Sanic.test_mode = True
    app = Sanic(f"rest_out_{uuid.uuid4().hex[:8]}")
    agent = EchoAgent()
    app.ctx.agent = agent
    register([NamespacedRestInput(session_factory=factory)], app, route="/webhooks/")
    port = free_port()
    server = await app.create_server(
        host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False
    )
    await server.startup()
    await server.before_start()
    await server.after_start()
    return app, server, port, agent


async def stop(server) -> None:
    await server.before_stop()
    await server.close()
    await server.after_stop()


@pytest.fixture()
async def rest(empty_engine: Engine) -> AsyncIterator[Rest]:
    factory = make_session_factory(empty_engine)
    _, server, port, agent = await serve(factory)
    try:
        async with aiohttp.ClientSession() as http:
            yield Rest(f"http://127.0.0.1:{port}", agent, factory, http)
    finally:
        await stop(server)


async def test_pending_agent_messages_come_once_after_the_answer(rest: Rest) -> None:
    first = rest.queue("alice", "Hi, Anna here.", buttons=BUTTONS)
    second = rest.queue(
        "alice", "You're next in line.", author="system", purpose="queue_update"
    )
    answers = await rest.post("alice")
    assert answers == [
        {"recipient_id": "alice", "text": "bot"},
        {
            "recipient_id": "alice",
            "text": "Hi, Anna here.",
            "buttons": BUTTONS,
            "author": "agent",
        },
        {"recipient_id": "alice", "text": "You're next in line.", "author": "system"},
    ]
    assert rest.status(first) == rest.status(second) == "sent"
    assert await rest.post("alice") == [{"recipient_id": "alice", "text": "bot"}]


async def test_messages_of_other_senders_stay_pending(rest: Rest) -> None:
    for_bob = rest.queue("bob", "For Bob only.")
    assert await rest.post("carol") == [{"recipient_id": "carol", "text": "bot"}]
    assert rest.status(for_bob) == "pending"
    with rest.factory() as session:
        assert [m.id for m in outbound.pending_messages(session, "rest:bob")] == [
            for_bob
        ]


async def test_a_paused_conversation_still_gets_the_agents_messages(
    rest: Rest,
) -> None:
    rest.agent.paused = True
    rest.queue("dave", "Anna here, looking into it.")
    assert await rest.post("dave") == [
        {
            "recipient_id": "dave",
            "text": "Anna here, looking into it.",
            "author": "agent",
        }
    ]


async def test_streamed_answers_end_with_the_pending_messages(rest: Rest) -> None:
    rest.queue("erin", "Streamed too.")
    lines = await rest.post("erin", stream=True)
    assert lines[-1] == {
        "recipient_id": "erin",
        "text": "Streamed too.",
        "author": "agent",
    }
    assert [line["text"] for line in await rest.post("erin", stream=True)] == ["bot"]


async def test_concurrent_requests_deliver_each_message_once(rest: Rest) -> None:
    ids = [rest.queue("frank", f"message {n}") for n in range(4)]
    answers = await asyncio.gather(*(rest.post("frank") for _ in range(6)))
    delivered = [a["text"] for batch in answers for a in batch if a.get("author")]
    assert sorted(delivered) == [f"message {n}" for n in range(4)]
    assert {rest.status(i) for i in ids} == {"sent"}


async def test_an_unreachable_store_does_not_stop_the_answer() -> None:
    engine = make_engine("postgresql+psycopg2://postgres@127.0.0.1:9/nowhere")
    _, server, port, _ = await serve(make_session_factory(engine))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{port}/webhooks/rest/webhook",
                json={"sender": "gina", "message": "hello"},
            ) as response:
                assert response.status == 200
                assert await response.json() == [
                    {"recipient_id": "gina", "text": "bot"}
                ]
    finally:
        await stop(server)
        engine.dispose()


async def test_without_a_store_the_channel_answers_as_before() -> None:
    _, server, port, _ = await serve(None)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{port}/webhooks/rest/webhook",
                json={"sender": "hal", "message": "hello"},
            ) as response:
                assert await response.json() == [{"recipient_id": "hal", "text": "bot"}]
    finally:
        await stop(server)
