"""The Twilio voice channel over real HTTP: Sanic on a free port, SQLite, signing.

Rasa's agent is a recorder that answers like the bot (and, like the contact
history and the handoff action, opens the key's conversation and queues
handoffs in the store). Requests are signed exactly as Twilio signs them (the
SDK's validator via ``channels.twilio_signature.sign``); the TwiML answers are
parsed with ``xml.etree.ElementTree``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from rasa.core.channels.channel import UserMessage, register
from sanic import Sanic
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker
from yarl import URL

from channels.twilio_signature import SIGNATURE_HEADER, sign
from channels.twilio_voice import (
    FAILED_TEXT,
    HANDOFF_GOODBYE,
    HOLD_TEXT,
    LOST_TEXT,
    SILENCE_GOODBYE,
    SORRY_TEXT,
    TOO_SLOW_TEXT,
    CallRegistry,
    TwilioVoiceInput,
    caller_key,
)
from crm_store.db import make_session_factory
from crm_store.models import ChannelReceipt, Conversation
from crm_store.services.agent_hours import DAYS
from crm_store.services.conversations import open_conversation
from crm_store.services.handoff import (
    HandoffPacket,
    current_conversation_id,
    request_handoff,
)
from crm_store.services.history import latest_conversation, next_conversation_id
from crm_store.services.interactions import NewInteraction, append_interactions

TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC = "https://bot.example.com"
WEBHOOK = "/webhooks/twilio_voice/webhook"
STATUS = "/webhooks/twilio_voice/status"
FROM_NUMBER = "+3197010000099"
AGENT_NUMBER = "+3197010000077"
CALLED = "+3197010000055"
VOICE = "Polly.Amy"
LANGUAGE = "en-GB"
BUTTONS = [{"title": "Yes", "payload": "/affirm"}, {"title": "No", "payload": "/deny"}]
GREETING = "Welcome to Northwind Goods. How can I help you?"
ASK_ORDER = "What is your order number?"
SLOW_SECONDS = 1.2


def new_number() -> str:
    """A caller number no other test uses (the store is shared by the module)."""
    return "+3161" + str(uuid.uuid4().int % 10**7).zfill(7)


def new_call() -> str:
    return "CA" + uuid.uuid4().hex


@dataclass
class RecordingAgent:
    """Stands in for Rasa (and the contact history): keeps messages, answers."""

    store: sessionmaker
    messages: list[UserMessage] = field(default_factory=list)

    def _record(self, key: str, text: str) -> None:
        """What the contact history does: the key's conversation and its turn."""
        with self.store() as session:
            conversation_id = current_conversation_id(
                session, tracker_key=key, channel="voice"
            )
            item = NewInteraction(
                event_id=uuid.uuid4().hex,
                channel="voice",
                direction="in",
                author="customer",
                text=text,
                conversation_id=conversation_id,
            )
            append_interactions(session, items=[item])
            session.commit()

    def _handoff(self, key: str) -> None:
        with self.store() as session:
            request_handoff(
                session,
                conversation_id=current_conversation_id(
                    session, tracker_key=key, channel="voice"
                ),
                packet=HandoffPacket(
                    customer_id=None,
                    verified=False,
                    verification_method=None,
                    channel="voice",
                    reason="customer_request",
                ),
            )
            session.commit()

    async def handle_message(self, message: UserMessage) -> None:
        self.messages.append(message)
        out, to, text = message.output_channel, message.sender_id, message.text
        await asyncio.to_thread(self._record, to, text)
        if text == "fail":
            raise RuntimeError("the turn failed")
        if text == "/greet":
            await out.send_text_message(to, GREETING)
        elif text == "where is my order":
            await out.send_text_message(to, ASK_ORDER)
        elif text == "cancel it":
            await out.send_text_with_buttons(to, "Shall I cancel it?", BUTTONS)
        elif text == "slow":
            await asyncio.sleep(SLOW_SECONDS)
            await out.send_text_message(to, "That took a while.")
        elif text == "a person":
            await asyncio.to_thread(self._handoff, to)
            await out.send_text_message(to, "A colleague will help you.")
        else:
            await out.send_text_message(to, f"You said: {text}")

    @property
    def texts(self) -> list[str]:
        return [m.text for m in self.messages]


@dataclass
class Call:
    """One phone call against a running server: signed form posts."""

    base: str
    http: aiohttp.ClientSession
    agent: RecordingAgent
    sid: str = field(default_factory=new_call)
    caller: str = field(default_factory=new_number)

    def params(self, **extra: str) -> dict[str, str]:
        params = {
            "AccountSid": "AC" + "0" * 32,
            "CallSid": self.sid,
            "From": self.caller,
            "To": CALLED,
            "CallStatus": "in-progress",
            "Direction": "inbound",
            "FromCity": "",  # Twilio sends blank fields and signs them
        }
        params.update(extra)
        return params

    async def post(
        self,
        path: str = WEBHOOK,
        query: str = "",
        *,
        params: dict[str, str] | None = None,
        signature: str | None = "valid",
        body: bytes | None = None,
    ) -> tuple[int, str]:
        params = self.params() if params is None else params
        signed_url = PUBLIC + path + (f"?{query}" if query else "")
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if signature == "valid":
            headers[SIGNATURE_HEADER] = sign(TOKEN, signed_url, params)
        elif signature is not None:
            headers[SIGNATURE_HEADER] = signature
        url = URL(self.base + path + (f"?{query}" if query else ""), encoded=True)
        data = body if body is not None else urlencode(params).encode()
        async with self.http.post(url, data=data, headers=headers) as response:
            return response.status, await response.text()

    async def twiml(self, query: str = "", **extra: str) -> ET.Element:
        status, text = await self.post(WEBHOOK, query, params=self.params(**extra))
        assert status == 200, text
        return ET.fromstring(text)

    async def follow(self, redirect: ET.Element) -> ET.Element:
        """Post to a Redirect's URL as Twilio does."""
        url = redirect.text or ""
        assert url.startswith(PUBLIC + WEBHOOK)
        query = url.partition("?")[2]
        return await self.twiml(query)

    async def status(self, call_status: str) -> int:
        status, _ = await self.post(
            STATUS, params=self.params(CallStatus=call_status, CallDuration="12")
        )
        return status

    @property
    def key(self) -> str:
        return f"voice:{self.caller}"


@dataclass
class Server:
    base: str
    http: aiohttp.ClientSession
    agent: RecordingAgent
    channel: TwilioVoiceInput

    def call(self, **kwargs: Any) -> Call:
        return Call(self.base, self.http, self.agent, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@asynccontextmanager
async def serving(
    channel: TwilioVoiceInput, store: sessionmaker
) -> AsyncIterator[Server]:
    Sanic.test_mode = True
    app = Sanic(f"voice_{uuid.uuid4().hex[:8]}")
    agent = RecordingAgent(store)
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
        async with aiohttp.ClientSession() as http:
            yield Server(f"http://127.0.0.1:{port}", http, agent, channel)
    finally:
        await server.before_stop()
        await server.close()
        await server.after_stop()


@pytest.fixture(scope="module")
def store(scratch: Any) -> sessionmaker:
    """One migrated SQLite store for the module (tests use their own numbers)."""
    return make_session_factory(scratch.engine("sqlite"))


def make_channel(store: sessionmaker, **kwargs: Any) -> TwilioVoiceInput:
    options: dict[str, Any] = {
        "auth_token": TOKEN,
        "public_base": PUBLIC + "/",
        "session_factory": store,
        "from_number": FROM_NUMBER,
        "agent_number": AGENT_NUMBER,
        "voice": VOICE,
        "language": LANGUAGE,
        "agent_hours": "always",
        "hold_after": 0.8,
        "max_holds": 3,
        "max_request_bytes": 4096,
    }
    options.update(kwargs)
    return TwilioVoiceInput(**options)


@pytest.fixture()
async def server(store: sessionmaker) -> AsyncIterator[Server]:
    async with serving(make_channel(store), store) as running:
        yield running


def closed_hours() -> str:
    """Agent hours that are certainly not now: one hour on another weekday."""
    day = DAYS[(dt.datetime.utcnow().weekday() + 3) % 7]
    return f"{day} 10:00-11:00 UTC"


def receipts(store: sessionmaker, call_sid: str) -> int:
    with store() as session:
        return session.execute(
            select(func.count())
            .select_from(ChannelReceipt)
            .where(ChannelReceipt.external_id.like(f"{call_sid}:%"))
        ).scalar_one()


def conversation(store: sessionmaker, key: str) -> Conversation | None:
    with store() as session:
        found = latest_conversation(session, tracker_key=key)
        if found is not None:
            session.expunge(found)
        return found


def says(element: ET.Element) -> list[str]:
    return [say.text or "" for say in element.iter("Say")]


def verbs(element: ET.Element) -> list[str]:
    return [child.tag for child in element]


def assert_gather(root: ET.Element, *, next_stage: str) -> ET.Element:
    """The standard answer: a Gather with the bot's Say, then a Redirect."""
    assert verbs(root) == ["Gather", "Redirect"]
    gather, redirect = root
    assert gather.attrib == {
        "input": "speech dtmf",
        "action": PUBLIC + WEBHOOK,
        "method": "POST",
        "language": LANGUAGE,
        "speechTimeout": "auto",
        "hints": gather.attrib["hints"],
        "bargeIn": "true",
    }
    assert {say.attrib["voice"] for say in gather.iter("Say")} == {VOICE}
    assert redirect.text == f"{PUBLIC}{WEBHOOK}?stage={next_stage}"
    assert redirect.attrib["method"] == "POST"
    return gather


# --- who may post -----------------------------------------------------------------


FORGERIES = {
    "missing": None,
    "forged": "bm90IGEgc2lnbmF0dXJl",
    "other token": "other",
    "other url": "other-url",
}


@pytest.mark.parametrize("path", [WEBHOOK, STATUS])
@pytest.mark.parametrize("forgery", list(FORGERIES))
async def test_forged_or_missing_signatures_get_403_and_change_nothing(
    server: Server, store: sessionmaker, path: str, forgery: str
) -> None:
    call = server.call()
    await call.twiml()  # a real call: a turn and an open conversation
    before = len(server.agent.messages)
    params = call.params(CallStatus="completed", SpeechResult="a person")
    signature = FORGERIES[forgery]
    if forgery == "other token":
        signature = sign("another-token-0123456789", PUBLIC + path, params)
    elif forgery == "other url":
        signature = sign(TOKEN, "http://127.0.0.1" + path, params)
    status, text = await call.post(path, params=params, signature=signature)
    assert status == 403
    assert "forbidden" in text
    assert len(server.agent.messages) == before
    assert receipts(store, call.sid) == 0
    found = conversation(store, call.key)
    assert found is not None and found.status == "open"


async def test_a_signature_for_other_parameters_is_refused(server: Server) -> None:
    call = server.call()
    signed = call.params(SpeechResult="hello")
    sent = call.params(SpeechResult="a person")
    signature = sign(TOKEN, PUBLIC + WEBHOOK, signed)
    status, _ = await call.post(WEBHOOK, params=sent, signature=signature)
    assert status == 403
    assert server.agent.messages == []


async def test_the_query_string_is_part_of_the_signed_url(server: Server) -> None:
    call = server.call()
    signature = sign(TOKEN, PUBLIC + WEBHOOK, call.params())
    status, _ = await call.post(
        WEBHOOK, "stage=silence2", params=call.params(), signature=signature
    )
    assert status == 403


async def test_a_wait_request_needs_a_signature_too(server: Server) -> None:
    call = server.call()
    status, _ = await call.post(
        WEBHOOK, f"stage=wait&turn={uuid.uuid4().hex}", signature=None
    )
    assert status == 403


async def test_the_channel_is_off_without_token_or_public_url(
    store: sessionmaker,
) -> None:
    channel = make_channel(store, auth_token=None)
    async with serving(channel, store) as off:
        call = off.call()
        for path in (WEBHOOK, STATUS):
            status, text = await call.post(path)
            assert status == 503
            assert "not configured" in text
        async with off.http.get(off.base + "/webhooks/twilio_voice/") as response:
            assert await response.json() == {"status": "ok", "enabled": False}
        assert off.agent.messages == []


def test_an_enabled_channel_needs_the_store() -> None:
    with pytest.raises(ValueError, match="store"):
        TwilioVoiceInput(auth_token=TOKEN, public_base=PUBLIC, session_factory=None)


async def test_health(server: Server) -> None:
    async with server.http.get(server.base + "/webhooks/twilio_voice/") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok", "enabled": True}


# --- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("drop", "change", "says_"),
    [
        ("CallSid", {}, "CallSid"),
        (None, {"CallSid": "CA123"}, "CallSid"),
        (None, {"CallSid": "XX" + "0" * 32}, "CallSid"),
        ("From", {}, "From"),
        (None, {"From": "  "}, "From"),
    ],
)
@pytest.mark.parametrize("path", [WEBHOOK, STATUS])
async def test_signed_requests_without_a_call_get_400(
    server: Server,
    store: sessionmaker,
    path: str,
    drop: str | None,
    change: dict,
    says_: str,
) -> None:
    call = server.call()
    params = call.params(CallStatus="completed", **change)
    if drop:
        params.pop(drop)
    status, text = await call.post(path, params=params)
    assert status == 400
    assert says_ in text
    assert server.agent.messages == []
    assert receipts(store, call.sid) == 0


@pytest.mark.parametrize(
    ("body", "status_", "says_"),
    [
        (b"CallSid=\xff\xfe", 400, "UTF-8"),
        (b"CallSid=CA1&CallSid=CA2", 400, "twice"),
        (b"x=" + b"y" * 5000, 413, "4096"),
    ],
)
async def test_unreadable_or_oversized_forms_are_refused(
    server: Server, body: bytes, status_: int, says_: str
) -> None:
    call = server.call()
    status, text = await call.post(WEBHOOK, body=body, signature="anything")
    assert status == status_
    assert says_ in text
    assert server.agent.messages == []


async def test_an_unknown_stage_is_400(server: Server) -> None:
    call = server.call()
    status, text = await call.post(WEBHOOK, "stage=dance")
    assert status == 400
    assert "stage" in text
    assert server.agent.messages == []


@pytest.mark.parametrize(
    "answer",
    [
        {"SpeechResult": ""},
        {"SpeechResult": "   "},
        {"SpeechResult": "\x00\x01"},
        {"SpeechResult": "///"},
        {"Digits": "12a"},
        {"Digits": "#"},
        {"Digits": "", "SpeechResult": ""},
    ],
)
async def test_empty_or_unreadable_answers_are_asked_again(
    server: Server, answer: dict[str, str]
) -> None:
    call = server.call()
    await call.twiml()
    root = await call.twiml(**answer)
    gather = assert_gather(root, next_stage="silence2")
    assert says(gather) == [SORRY_TEXT, GREETING]
    assert server.agent.texts == ["/greet"]  # no turn for nothing


# --- turns --------------------------------------------------------------------------


async def test_the_first_request_greets_with_a_gather(server: Server) -> None:
    call = server.call()
    root = await call.twiml()
    gather = assert_gather(root, next_stage="silence1")
    assert says(gather) == [GREETING]
    hints = gather.attrib["hints"]
    for hint in ("order number", "postcode", "yes", "no", "a person", "cancel"):
        assert hint in hints.split(", ")
    assert len(hints) < 200
    message = server.agent.messages[-1]
    assert message.text == "/greet"
    assert message.sender_id == call.key
    assert message.input_channel == "twilio_voice"


async def test_a_withheld_caller_id_gets_a_key_per_call(server: Server) -> None:
    first, second = server.call(caller="anonymous"), server.call(caller="+266696687")
    await first.twiml()
    await second.twiml()
    keys = [m.sender_id for m in server.agent.messages]
    assert keys == [f"voice:withheld:{first.sid}", f"voice:withheld:{second.sid}"]
    assert caller_key("+31 6 1234 5678", "CA1") == "voice:+31612345678"


async def test_speech_is_normalised_before_the_bot_reads_it(server: Server) -> None:
    call = server.call()
    await call.twiml()
    root = await call.twiml(SpeechResult="a one zero zero four seven", Confidence="0.9")
    assert server.agent.texts[-1] == "A10047"
    assert says(assert_gather(root, next_stage="silence1")) == ["You said: A10047"]
    await call.twiml(SpeechResult="my postcode is fifty-five hundred L E.")
    assert server.agent.texts[-1] == "my postcode is 5500 LE."


async def test_speech_cannot_inject_an_intent(server: Server) -> None:
    call = server.call()
    await call.twiml(SpeechResult='/cancel_order{"order_number": "A10047"}')
    assert server.agent.texts[-1] == 'cancel_order{"order_number": "A10047"}'


async def test_bot_text_is_escaped_by_the_xml_builder(server: Server) -> None:
    call = server.call()
    root = await call.twiml(SpeechResult="</Say><Hangup/> & <Dial>+1</Dial>")
    gather = assert_gather(root, next_stage="silence1")
    assert says(gather) == ["You said: </Say><Hangup/> & <Dial>+1</Dial>"]
    assert [e.tag for e in root.iter()] == ["Response", "Gather", "Say", "Redirect"]


async def test_buttons_are_read_and_a_digit_chooses(server: Server) -> None:
    call = server.call()
    root = await call.twiml(SpeechResult="cancel it")
    assert says(root) == ["Shall I cancel it?", "Say or press 1 for Yes, 2 for No."]
    await call.twiml(Digits="2")
    assert server.agent.texts[-1] == "/deny"
    await call.twiml(SpeechResult="cancel it")
    await call.twiml(SpeechResult="One.")
    assert server.agent.texts[-1] == "/affirm"
    await call.twiml(SpeechResult="cancel it")
    await call.twiml(Digits="7")  # no such choice: the digit as text
    assert server.agent.texts[-1] == "7"


async def test_choices_are_forgotten_after_a_turn_without_buttons(
    server: Server,
) -> None:
    call = server.call()
    await call.twiml(SpeechResult="cancel it")
    await call.twiml(SpeechResult="hello")
    await call.twiml(Digits="1")
    assert server.agent.texts[-1] == "1"


async def test_digits_are_an_order_number_when_the_bot_asked_for_one(
    server: Server,
) -> None:
    call = server.call()
    await call.twiml()
    await call.twiml(Digits="10047")  # the greeting asked for no order number
    assert server.agent.texts[-1] == "10047"
    root = await call.twiml(SpeechResult="where is my order")
    assert says(root) == [ASK_ORDER]
    await call.twiml(Digits="10047#")
    assert server.agent.texts[-1] == "A10047"


async def test_a_failed_turn_apologises_and_asks_again(server: Server) -> None:
    call = server.call()
    await call.twiml()
    root = await call.twiml(SpeechResult="fail")
    gather = assert_gather(root, next_stage="silence1")
    assert says(gather) == [FAILED_TEXT, GREETING]


# --- silence ------------------------------------------------------------------------


async def test_silence_reprompts_once_then_says_goodbye(server: Server) -> None:
    call = server.call()
    root = await call.twiml()
    first = await call.follow(root[1])
    gather = assert_gather(first, next_stage="silence2")
    assert says(gather) == [SORRY_TEXT, GREETING]
    second = await call.follow(first[1])
    assert verbs(second) == ["Say", "Hangup"]
    assert says(second) == [SILENCE_GOODBYE]
    assert second[0].attrib["voice"] == VOICE
    assert server.agent.texts == ["/greet"]


async def test_silence_in_a_call_this_process_does_not_know(server: Server) -> None:
    call = server.call()
    root = await call.twiml("stage=silence1")
    assert says(assert_gather(root, next_stage="silence2")) == [
        SORRY_TEXT,
        "How can I help you?",
    ]
    assert server.agent.messages == []


# --- slow turns ---------------------------------------------------------------------


async def test_a_slow_turn_holds_then_the_wait_request_answers(
    server: Server,
) -> None:
    call = server.call()
    await call.twiml()
    started = asyncio.get_running_loop().time()
    root = await call.twiml(SpeechResult="slow")
    held_for = asyncio.get_running_loop().time() - started
    assert verbs(root) == ["Say", "Redirect"]
    assert says(root) == [HOLD_TEXT]
    assert 0.7 < held_for < 1.2  # hold_after 0.8 s, well before the turn ends
    url = root[1].text or ""
    assert url.startswith(f"{PUBLIC}{WEBHOOK}?stage=wait&turn=")
    answer = await call.follow(root[1])
    assert says(assert_gather(answer, next_stage="silence1")) == ["That took a while."]
    assert server.agent.texts == ["/greet", "slow"]  # the turn ran once


async def test_a_turn_too_slow_for_the_holds_ends_the_call(store: sessionmaker) -> None:
    async with serving(make_channel(store, hold_after=0.3, max_holds=2), store) as srv:
        call = srv.call()
        root = await call.twiml(SpeechResult="slow")
        holds = 0
        while verbs(root) == ["Say", "Redirect"] and says(root) == [HOLD_TEXT]:
            holds += 1
            root = await call.follow(root[1])
        assert holds == 2  # max_holds holding phrases, then goodbye
        assert verbs(root) == ["Say", "Hangup"]
        assert says(root) == [TOO_SLOW_TEXT]


async def test_a_wait_for_an_unknown_turn_asks_again(server: Server) -> None:
    call = server.call()
    await call.twiml()
    root = await call.twiml(f"stage=wait&turn={uuid.uuid4().hex}")
    assert says(assert_gather(root, next_stage="silence1")) == [LOST_TEXT, GREETING]
    root = await call.twiml("stage=wait&turn=not-an-id")
    assert says(root)[0] == LOST_TEXT
    assert server.agent.texts == ["/greet"]


# --- handoff ------------------------------------------------------------------------


async def test_a_handoff_during_agent_hours_dials_the_agent_line(
    server: Server,
) -> None:
    call = server.call()
    await call.twiml()
    root = await call.twiml(SpeechResult="a person")
    assert verbs(root) == ["Say", "Dial"]
    assert says(root) == ["A colleague will help you."]
    dial = root[1]
    assert dial.text == AGENT_NUMBER
    assert dial.attrib["callerId"] == FROM_NUMBER


async def test_without_a_from_number_the_called_number_is_the_caller_id(
    store: sessionmaker,
) -> None:
    async with serving(make_channel(store, from_number=None), store) as srv:
        root = await srv.call().twiml(SpeechResult="a person")
        assert root.find("Dial").attrib["callerId"] == CALLED


@pytest.mark.parametrize(
    "options",
    [{"agent_hours": "closed"}, {"agent_number": None}],
    ids=["outside agent hours", "no agent line"],
)
async def test_otherwise_a_handoff_says_goodbye_and_hangs_up(
    store: sessionmaker, options: dict[str, Any]
) -> None:
    if options.get("agent_hours") == "closed":
        options = {"agent_hours": closed_hours()}
    async with serving(make_channel(store, **options), store) as srv:
        root = await srv.call().twiml(SpeechResult="a person")
        assert verbs(root) == ["Say", "Say", "Hangup"]
        assert says(root) == ["A colleague will help you.", HANDOFF_GOODBYE]
        assert root.find("Dial") is None


async def test_a_handoff_of_an_earlier_closed_conversation_does_not_count(
    server: Server, store: sessionmaker
) -> None:
    call = server.call()
    await call.twiml(SpeechResult="a person")
    assert await call.status("completed") == 204
    assert conversation(store, call.key).status == "closed"
    again = server.call(caller=call.caller)
    root = await again.twiml()
    assert verbs(root) == ["Gather", "Redirect"]


# --- status callbacks ---------------------------------------------------------------


async def test_a_status_callback_closes_the_conversation_once(
    server: Server, store: sessionmaker
) -> None:
    call = server.call()
    await call.twiml()
    await call.twiml(SpeechResult="where is my order")
    assert await call.status("completed") == 204
    closed = conversation(store, call.key)
    assert (closed.status, closed.outcome) == ("closed", "self_served")
    # The same number calls again; a replayed callback must not close that one.
    with store() as session:
        open_conversation(
            session,
            conversation_id=next_conversation_id(session, tracker_key=call.key),
            channel="voice",
            tracker_key=call.key,
        )
        session.commit()
    assert await call.status("completed") == 204
    assert conversation(store, call.key).status == "open"
    assert receipts(store, call.sid) == 1


async def test_a_caller_who_said_nothing_abandoned_the_call(
    server: Server, store: sessionmaker
) -> None:
    call = server.call()
    await call.twiml()
    assert await call.status("no-answer") == 204
    closed = conversation(store, call.key)
    assert (closed.status, closed.outcome) == ("closed", "abandoned")


async def test_an_escalated_call_closes_as_escalated(
    store: sessionmaker,
) -> None:
    async with serving(make_channel(store, agent_number=None), store) as srv:
        call = srv.call()
        await call.twiml(SpeechResult="a person")
        assert await call.status("completed") == 204
        closed = conversation(store, call.key)
        assert (closed.status, closed.outcome) == ("closed", "escalated")


async def test_another_process_reads_whether_the_caller_spoke_from_the_store(
    server: Server, store: sessionmaker
) -> None:
    call = server.call()
    await call.twiml()
    await call.twiml(SpeechResult="hello")
    server.channel.calls.pop(call.sid)  # as if another instance got the callback
    assert await call.status("completed") == 204
    closed = conversation(store, call.key)
    assert (closed.status, closed.outcome) == ("closed", "self_served")
    silent = server.call()
    await silent.twiml()
    server.channel.calls.pop(silent.sid)
    assert await silent.status("completed") == 204
    assert conversation(store, silent.key).outcome == "abandoned"


@pytest.mark.parametrize("call_status", ["ringing", "in-progress", "answered", "?"])
async def test_other_statuses_change_nothing(
    server: Server, store: sessionmaker, call_status: str
) -> None:
    call = server.call()
    await call.twiml()
    assert await call.status(call_status) == 204
    assert conversation(store, call.key).status == "open"
    assert receipts(store, call.sid) == 0


async def test_a_status_callback_without_a_conversation_is_fine(
    server: Server, store: sessionmaker
) -> None:
    call = server.call()
    assert await call.status("busy") == 204
    # Nothing to close and nothing kept: a later callback may still close it.
    assert receipts(store, call.sid) == 0
    assert conversation(store, call.key) is None


def test_the_call_registry_is_bounded_and_forgets_old_calls() -> None:
    registry = CallRegistry(max_calls=3, ttl=3600)
    for n in range(5):
        registry.state(f"CA{n}").spoke = True
    assert len(registry) == 3
    assert registry.get("CA0") is None and registry.get("CA4") is not None
    expiring = CallRegistry(max_calls=10, ttl=0.0)
    expiring.state("CA0")
    expiring.state("CA1")  # a new call prunes the expired ones
    assert expiring.get("CA0") is None
    assert expiring.pop("CA1") is not None and len(expiring) == 0
