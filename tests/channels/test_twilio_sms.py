"""The Twilio SMS channel over real HTTP: Sanic on a free port, signed requests, SQLite.

Rasa's agent is a recorder that answers through the output channel Rasa hands
it; the channel, Rasa's ``register``, Sanic, the twilio SDK (signatures, TwiML)
and the store (receipts, consents, choices) are the real ones. Requests are
signed exactly as Twilio signs them (``tests.fakes.twilio_api.signed_post``) and
the TwiML answers are parsed as XML.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from rasa.core.channels.channel import UserMessage, register
from sanic import Sanic
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from channels.sms_worker import OPTED_OUT, SmsWorker
from channels.twilio_api import MAX_SMS_CHARS, TwilioSender
from channels.twilio_signature import public_url, sign
from channels.twilio_sms import (
    SORRY_TEXT,
    START_TEXT,
    STOP_TEXT,
    UNSUPPORTED_TEXT,
    WEBHOOK_PATH,
    TwilioSmsInput,
)
from crm_store.db import make_session_factory
from crm_store.models import ChannelReceipt, Consent, OutboxMessage
from crm_store.services.consents import sms_allowed
from crm_store.services.identities import find_customer_by_identity
from crm_store.services.notifier import Notifier
from tests.fakes.twilio_api import FakeTwilioApi, WebhookReply, signed_post

TOKEN = "twilio-auth-token-for-tests-0123"
SID = "AC" + "5" * 32
PUBLIC = "https://bot.northwind.example"
OUR_NUMBER = "+3197010000000"
BUTTONS = [{"title": "Yes", "payload": "/affirm"}, {"title": "No", "payload": "/deny"}]
PARAGRAPH = ("We have checked your order and everything is fine. " * 13).strip()
LONG = "\n\n".join([PARAGRAPH] * 5)  # 3,344 characters
_numbers = itertools.count(int(uuid.uuid4().int % 10**5) * 100)


def new_phone() -> str:
    """A phone number no other test on the shared store uses."""
    return f"+3161{next(_numbers):07d}"


def new_sid() -> str:
    return "SM" + uuid.uuid4().hex


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
            await out.send_text_with_buttons(to, "Cancel order A10001?", BUTTONS)
        elif message.text == "long":
            await out.send_text_message(to, LONG)
        elif message.text == "two answers":
            await out.send_text_message(to, "first answer")
            await out.send_text_message(to, "second answer")
        elif message.text == "silent":
            return
        else:
            await out.send_text_message(to, f"got {message.text}")


@dataclass
class Hook:
    """Posts signed webhook requests to one running server."""

    url: str
    agent: RecordingAgent

    async def post(
        self,
        params: dict[str, str],
        *,
        public_base: str = PUBLIC,
        token: str = TOKEN,
        signature: str | None = None,
        path: str = WEBHOOK_PATH,
    ) -> WebhookReply:
        return await asyncio.to_thread(
            signed_post,
            self.url,
            path,
            params,
            token,
            public_base=public_base,
            signature=signature,
        )

    async def sms(self, phone: str, body: str, **extra: str) -> WebhookReply:
        params = {
            "MessageSid": new_sid(),
            "AccountSid": SID,
            "From": phone,
            "To": OUR_NUMBER,
            "Body": body,
            "NumMedia": "0",
            **extra,
        }
        return await self.post(params)

    def texts(self, phone: str | None = None) -> list[str]:
        return [
            m.text or ""
            for m in self.agent.messages
            if phone is None or m.sender_id == f"sms:{phone}"
        ]


def messages_of(reply: WebhookReply) -> list[str]:
    """The ``<Message>`` texts of a TwiML answer (asserts it is TwiML)."""
    assert reply.status == 200, reply.text
    assert reply.headers["content-type"].startswith("text/xml")
    root = ET.fromstring(reply.text.encode())
    assert root.tag == "Response"
    assert all(child.tag == "Message" for child in root)
    return [child.text or "" for child in root]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@asynccontextmanager
async def serving(channel: TwilioSmsInput) -> AsyncIterator[Hook]:
    """Run ``channel`` in a Sanic app on a free port with a recording agent."""
    Sanic.test_mode = True
    app = Sanic(f"twilio_sms_{uuid.uuid4().hex[:8]}")
    agent = RecordingAgent()
    app.ctx.agent = agent
    register([channel], app, route="/webhooks/")
    port = free_port()
    server = await app.create_server(
        host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False
    )
    await server.startup()
    await server.before_start()
    await server.after_start()
    try:
        yield Hook(f"http://127.0.0.1:{port}", agent)
    finally:
        await server.before_stop()
        await server.close()
        await server.after_stop()


@pytest.fixture(scope="module")
def store(scratch: Any) -> sessionmaker:
    """One migrated SQLite store for the module (tests use their own numbers)."""
    return make_session_factory(scratch.engine("sqlite"))


def make_channel(store: sessionmaker | None, **kwargs: Any) -> TwilioSmsInput:
    options: dict[str, Any] = {
        "account_sid": SID,
        "auth_token": TOKEN,
        "public_base": PUBLIC,
        "session_factory": store,
        "max_message_chars": 200,
        "max_request_bytes": 4096,
        "support_email": "help@northwind.example",
    }
    options.update(kwargs)
    return TwilioSmsInput(**options)


@pytest.fixture()
async def hook(store: sessionmaker) -> AsyncIterator[Hook]:
    async with serving(make_channel(store)) as running:
        yield running


def receipts(store: sessionmaker, message_sid: str) -> int:
    with store() as session:
        return session.execute(
            select(func.count())
            .select_from(ChannelReceipt)
            .where(
                ChannelReceipt.channel == "sms",
                ChannelReceipt.external_id == message_sid,
            )
        ).scalar_one()


def consent(store: sessionmaker, phone: str) -> Consent | None:
    with store() as session:
        match = find_customer_by_identity(session, kind="phone", value=phone)
        if match is None:
            return None
        return session.execute(
            select(Consent).where(
                Consent.customer_id == match.customer_id, Consent.kind == "sms"
            )
        ).scalar_one_or_none()


def sms_params(phone: str, body: str, sid: str | None = None) -> dict[str, str]:
    return {
        "MessageSid": sid or new_sid(),
        "AccountSid": SID,
        "From": phone,
        "To": OUR_NUMBER,
        "Body": body,
        "NumMedia": "0",
    }


# --- who may post -------------------------------------------------------------------


@pytest.mark.parametrize(
    "signature", ["forged+signature/AAAAAAAAAAAAAAA=", ""], ids=["forged", "missing"]
)
async def test_forged_or_missing_signature_is_403_and_leaves_no_trace(
    hook: Hook, store: sessionmaker, signature: str
) -> None:
    params = sms_params(new_phone(), "hello")
    reply = await hook.post(params, signature=signature)
    assert reply.status == 403 and "forbidden" in reply.text
    assert receipts(store, params["MessageSid"]) == 0
    assert hook.agent.messages == []


async def test_a_signature_with_another_token_is_403(
    hook: Hook, store: sessionmaker
) -> None:
    params = sms_params(new_phone(), "hello")
    reply = await hook.post(params, token="another-accounts-token-000000")
    assert reply.status == 403
    assert receipts(store, params["MessageSid"]) == 0


async def test_a_signature_over_the_internal_url_is_403(
    hook: Hook, store: sessionmaker
) -> None:
    params = sms_params(new_phone(), "hello")
    reply = await hook.post(params, public_base=hook.url)  # what Sanic sees
    assert reply.status == 403
    assert receipts(store, params["MessageSid"]) == 0
    assert hook.agent.messages == []


async def test_tampered_parameters_are_403(hook: Hook, store: sessionmaker) -> None:
    phone = new_phone()
    params = sms_params(phone, "hello")
    signature = sign(TOKEN, public_url(PUBLIC, WEBHOOK_PATH), params)
    reply = await hook.post({**params, "Body": "STOP"}, signature=signature)
    assert reply.status == 403
    assert consent(store, phone) is None


async def test_a_public_url_with_a_path_prefix_and_a_query_works(
    store: sessionmaker,
) -> None:
    base = "https://proxy.northwind.example:8443/rasa"
    async with serving(make_channel(store, public_base=base)) as hook:
        phone = new_phone()
        reply = await hook.post(sms_params(phone, "hi"), public_base=base)
        assert messages_of(reply) == ["got hi"]
        query = f"{WEBHOOK_PATH}?source=sms"
        reply = await hook.post(
            sms_params(phone, "again"), public_base=base, path=query
        )
        assert messages_of(reply) == ["got again"]
        # Signed without the prefix (the internal path): refused.
        refused = await hook.post(
            sms_params(phone, "no"), public_base="https://proxy.northwind.example:8443"
        )
        assert refused.status == 403
    assert hook.texts(phone) == ["hi", "again"]


async def test_an_oversized_body_is_413(hook: Hook) -> None:
    reply = await hook.sms(new_phone(), "x" * 5000)
    assert reply.status == 413
    assert hook.agent.messages == []


async def test_the_channel_off_answers_503(store: sessionmaker) -> None:
    async with serving(make_channel(None, auth_token=None)) as hook:
        reply = await hook.sms(new_phone(), "hello")
        assert reply.status == 503 and "not configured" in reply.text
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{hook.url}/webhooks/twilio_sms/") as health:
                assert await health.json() == {"status": "ok", "enabled": False}


def test_the_channel_on_without_a_store_is_refused() -> None:
    with pytest.raises(ValueError):
        make_channel(None)


# --- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"From": "0612345678"}, "E.164"),
        ({"From": ""}, "E.164"),
        ({"MessageSid": ""}, "MessageSid"),
    ],
)
async def test_bad_parameters_are_400_json_and_not_claimed(
    hook: Hook, store: sessionmaker, change: dict[str, str], message: str
) -> None:
    params = {**sms_params(new_phone(), "hello"), **change}
    reply = await hook.post(params)
    assert reply.status == 400
    assert reply.headers["content-type"].startswith("application/json")
    assert message in reply.text
    if params["MessageSid"]:
        assert receipts(store, params["MessageSid"]) == 0
    assert hook.agent.messages == []


async def test_a_missing_body_is_400(hook: Hook) -> None:
    params = sms_params(new_phone(), "hello")
    del params["Body"]
    reply = await hook.post(params)
    assert reply.status == 400 and "Body" in reply.text


async def test_the_store_down_is_503_and_twilio_may_retry(scratch: Any) -> None:
    broken = make_session_factory(scratch.engine("sqlite", migrated=False))
    async with serving(make_channel(broken)) as hook:
        reply = await hook.sms(new_phone(), "STOP")
        assert reply.status == 503 and "store" in reply.text
        assert hook.agent.messages == []


# --- turns --------------------------------------------------------------------------


async def test_a_text_runs_one_turn_with_the_phone_as_identity(
    hook: Hook, store: sessionmaker
) -> None:
    phone = new_phone()
    params = sms_params(phone, "  where is my order\x00  ")
    assert messages_of(await hook.post(params)) == ["got where is my order"]
    [message] = hook.agent.messages
    assert message.text == "where is my order"  # cleaned (no NUL); Rasa strips
    assert message.sender_id == f"sms:{phone}"
    assert message.input_channel == "twilio_sms"
    assert message.message_id == f"sms:{params['MessageSid']}"
    assert receipts(store, params["MessageSid"]) == 1


async def test_a_replayed_message_sid_runs_one_turn(hook: Hook) -> None:
    params = sms_params(new_phone(), "hello")
    first = await hook.post(params)
    again = await hook.post(params)
    assert messages_of(first) == ["got hello"]
    assert messages_of(again) == []
    assert len(hook.agent.messages) == 1


async def test_several_answers_are_joined_and_silence_is_an_empty_response(
    hook: Hook,
) -> None:
    phone = new_phone()
    assert messages_of(await hook.sms(phone, "two answers")) == [
        "first answer\n\nsecond answer"
    ]
    assert messages_of(await hook.sms(phone, "silent")) == []


async def test_buttons_become_numbered_choices_and_a_digit_their_payload(
    hook: Hook,
) -> None:
    phone = new_phone()
    [answer] = messages_of(await hook.sms(phone, "buttons"))
    assert answer == "Cancel order A10001?\n\nReply with a number:\n1. Yes\n2. No"
    await hook.sms(phone, " 2 ")
    assert hook.texts(phone)[-1] == "/deny"
    # The choices are forgotten after an answer without buttons.
    await hook.sms(phone, "1")
    assert hook.texts(phone)[-1] == "1"
    # Another number's digit does not reach these choices.
    other = new_phone()
    await hook.sms(other, "1")
    assert hook.texts(other) == ["1"]


async def test_a_long_answer_is_split_into_parts_of_at_most_1600(hook: Hook) -> None:
    parts = messages_of(await hook.sms(new_phone(), "long"))
    assert len(parts) == 3
    assert all(len(part) <= MAX_SMS_CHARS for part in parts)
    assert "\n\n".join(parts) == LONG


async def test_a_long_message_is_cut_with_a_notice(hook: Hook) -> None:
    phone = new_phone()
    [answer] = messages_of(await hook.sms(phone, "y" * 300))
    assert answer.startswith("Your message was very long, so I read only the first 200")
    assert hook.texts(phone) == ["y" * 200]


async def test_mms_without_text_gets_a_polite_answer_and_no_turn(hook: Hook) -> None:
    phone = new_phone()
    reply = await hook.sms(
        phone, "", NumMedia="1", MediaUrl0="https://api.twilio.com/media/ME1"
    )
    assert messages_of(reply) == [UNSUPPORTED_TEXT]
    assert hook.agent.messages == []
    reply = await hook.sms(phone, "see photo", NumMedia="1")
    assert messages_of(reply) == ["got see photo"]


async def test_an_empty_text_gets_a_polite_answer(hook: Hook) -> None:
    assert messages_of(await hook.sms(new_phone(), "   ")) == [UNSUPPORTED_TEXT]
    assert hook.agent.messages == []


async def test_a_failed_turn_gets_an_apology(hook: Hook) -> None:
    assert messages_of(await hook.sms(new_phone(), "fail")) == [SORRY_TEXT]


async def test_xml_special_characters_are_escaped(hook: Hook) -> None:
    text = "<Say>&amp; \"quotes\" 'and' </Message>"
    assert messages_of(await hook.sms(new_phone(), text)) == [f"got {text}"]


# --- keywords -----------------------------------------------------------------------


async def test_help_is_answered_without_a_turn(hook: Hook) -> None:
    [answer] = messages_of(await hook.sms(new_phone(), " help "))
    assert "STOP" in answer and "help@northwind.example" in answer
    [again] = messages_of(await hook.sms(new_phone(), "Info"))
    assert again == answer
    assert hook.agent.messages == []


async def test_stop_then_texts_then_start(hook: Hook, store: sessionmaker) -> None:
    phone, other = new_phone(), new_phone()
    assert messages_of(await hook.sms(phone, "Stop")) == [STOP_TEXT]
    row = consent(store, phone)
    assert row is not None and row.granted is False and row.source == "sms_stop"
    # A normal text now runs no turn and gets an empty answer.
    assert messages_of(await hook.sms(phone, "where is my order")) == []
    assert hook.agent.messages == []
    # HELP is still answered (carriers require it).
    assert "STOP" in messages_of(await hook.sms(phone, "HELP"))[0]
    # A code queued for the number is not sent; another number's code is.
    with store.begin() as session:
        notifier = Notifier()
        refused = notifier.notify(
            session,
            customer_id=None,
            channel="sms",
            recipient=phone,
            purpose="login_code",
            subject=None,
            body="Your code is 123456.",
        ).id
        notifier.notify(
            session,
            customer_id=None,
            channel="sms",
            recipient=other,
            purpose="login_code",
            subject=None,
            body="Your code is 654321.",
        )
    with FakeTwilioApi() as api:
        sender = TwilioSender(
            api.account_sid, api.auth_token, OUR_NUMBER, api.url, base_delay=0.01
        )
        worker = SmsWorker(None, session_factory=store, sender=sender)
        await asyncio.to_thread(worker.deliver_due_now)
        assert api.messages(to=phone) == []
        assert [m["Body"] for m in api.messages(to=other)] == ["Your code is 654321."]
    with store() as session:
        failed = session.get(OutboxMessage, refused)
        assert failed.status == "failed" and failed.last_error == OPTED_OUT
    # START: allowed again, confirmed, and texts run turns.
    assert messages_of(await hook.sms(phone, "start")) == [START_TEXT]
    with store() as session:
        assert sms_allowed(session, phone=phone)
    assert consent(store, phone).source == "sms_start"
    assert messages_of(await hook.sms(phone, "hello again")) == ["got hello again"]
    assert hook.texts(phone) == ["hello again"]


async def test_a_keyword_inside_a_sentence_is_just_text(hook: Hook) -> None:
    phone = new_phone()
    assert messages_of(await hook.sms(phone, "please stop the order")) == [
        "got please stop the order"
    ]


async def test_a_replayed_stop_is_confirmed_once(
    hook: Hook, store: sessionmaker
) -> None:
    phone = new_phone()
    params = sms_params(phone, "STOP")
    assert messages_of(await hook.post(params)) == [STOP_TEXT]
    assert messages_of(await hook.post(params)) == []
    assert consent(store, phone).granted is False


async def test_keywords_land_on_the_timeline_once(
    hook: Hook, store: sessionmaker
) -> None:
    from crm_store.models import Conversation, Interaction

    phone = new_phone()
    params = sms_params(phone, "STOP")
    await hook.post(params)
    await hook.post(params)  # Twilio's retry: recorded once
    await hook.sms(phone, "help")
    await hook.sms(phone, "START")
    with store() as session:
        conversation = session.execute(
            select(Conversation).where(Conversation.tracker_key == f"sms:{phone}")
        ).scalar_one()
        rows = (
            session.execute(
                select(Interaction)
                .where(Interaction.conversation_id == conversation.id)
                .order_by(Interaction.occurred_at, Interaction.id)
            )
            .scalars()
            .all()
        )
        owner = find_customer_by_identity(session, kind="phone", value=phone)
    assert conversation.channel == "sms"
    assert [(r.author, r.intent) for r in rows if r.direction == "in"] == [
        ("customer", "sms_stop"),
        ("customer", "sms_help"),
        ("customer", "sms_start"),
    ]
    answers = [r.text for r in rows if r.direction == "out"]
    assert answers[0] == STOP_TEXT and answers[-1] == START_TEXT
    # The number's prospect owns the conversation and its rows.
    assert owner is not None and conversation.customer_id == owner.customer_id
    assert {r.customer_id for r in rows} == {owner.customer_id}
