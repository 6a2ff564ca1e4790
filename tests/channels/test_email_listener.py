"""The SMTP listener end to end over real sockets.

``smtplib`` (in a thread) talks to the real aiosmtpd server of
``channels.email.build_server`` with the real ``MailHandler``, which calls a
real Sanic app running ``EmailInput`` over HTTP; Rasa's agent there is a
recorder that answers like a bot. The store is a fresh, migrated SQLite file
per test.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage as Mail
from typing import Any

import pytest
from rasa.core.channels.channel import UserMessage, register
from sanic import Sanic
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from channels.chat_tokens import email_ingress_token
from channels.email import NO_TEXT_REPLY, MailHandler, build_server, serve
from channels.email_input import EmailInput
from crm_settings import PROJECT_ROOT, Settings
from crm_store.db import make_session_factory
from crm_store.models import EmailMessage, OutboxMessage
from crm_store.services import email_threads

SECRET = "m" * 40
TOKEN = email_ingress_token(SECRET)
SUPPORT = "support@northwind.example"
CUSTOMER = "jane.doe@example.org"
LIMIT = 1024 * 1024
MAX_CHARS = 500
BUTTONS = [
    {"title": "Track my order", "payload": "/track_order"},
    {"title": "Return an item", "payload": "/start_return"},
]


@dataclass
class RecordingAgent:
    """Stands in for Rasa's agent: keeps each message and answers like a bot."""

    messages: list[UserMessage] = field(default_factory=list)
    delay: float = 0.0

    async def handle_message(self, message: UserMessage) -> None:
        self.messages.append(message)
        await asyncio.sleep(self.delay)
        out, to = message.output_channel, message.sender_id
        if message.text == "fail":
            raise RuntimeError("the turn failed")
        if message.text == "silence":
            return
        await out.send_text_message(to, f"got: {message.text}")
        if "menu" in message.text:
            await out.send_text_with_buttons(to, "What can I do?", BUTTONS)


@dataclass
class Rig:
    host: str
    port: int
    agent: RecordingAgent
    factory: sessionmaker
    queued: list[int]
    rasa_url: str

    async def send(
        self,
        raw: bytes,
        *,
        mail_from: str = CUSTOMER,
        to: tuple[str, ...] = (SUPPORT,),
        port: int | None = None,
    ) -> tuple[int, str]:
        """One SMTP transaction on a new connection: the DATA reply."""
        return await asyncio.to_thread(
            transact, self.host, port or self.port, raw, mail_from, to
        )

    def outbox(self) -> list[OutboxMessage]:
        with self.factory() as session:
            return list(
                session.execute(select(OutboxMessage).order_by(OutboxMessage.id))
                .scalars()
                .all()
            )

    def email_rows(self) -> list[EmailMessage]:
        with self.factory() as session:
            return list(session.execute(select(EmailMessage)).scalars().all())

    @property
    def last(self) -> UserMessage:
        return self.agent.messages[-1]


def transact(
    host: str, port: int, raw: bytes, mail_from: str, to: tuple[str, ...]
) -> tuple[int, str]:
    with smtplib.SMTP(host, port, timeout=30) as client:
        client.ehlo("client.example.org")
        code, reply = client.mail(mail_from)
        assert code == 250, reply
        for address in to:
            code, reply = client.rcpt(address)
            if code != 250:
                return code, reply.decode()
        code, reply = client.data(raw)
        return code, reply.decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mail(
    text: str | None = "Where is my parcel?",
    *,
    message_id: str | None = None,
    sender: str = f"Jane Doe <{CUSTOMER}>",
    subject: str = "My order",
    **headers: str,
) -> bytes:
    msg = Mail()
    msg["From"] = sender
    msg["To"] = SUPPORT
    msg["Subject"] = subject
    if message_id != "":
        msg["Message-ID"] = message_id or f"<{uuid.uuid4().hex}@example.org>"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    if text is not None:
        msg.set_content(text)
    return wire(msg)


def wire(msg: Mail) -> bytes:
    """The mail with CRLF line ends, as on the wire (smtplib sends bytes as is)."""
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


async def start_rasa(agent: RecordingAgent) -> tuple[Any, str]:
    Sanic.test_mode = True
    app = Sanic(f"email_rasa_{uuid.uuid4().hex[:8]}")
    app.ctx.agent = agent
    register(
        [EmailInput(secret=SECRET, max_message_chars=MAX_CHARS)],
        app,
        route="/webhooks/",
    )
    port = free_port()
    server = await app.create_server(
        host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False
    )
    await server.startup()
    await server.before_start()
    await server.after_start()
    return server, f"http://127.0.0.1:{port}"


async def start_smtp(
    factory: sessionmaker,
    rasa_url: str,
    queued: list[int],
    *,
    limit: int = LIMIT,
    timeout: float = 10.0,
) -> tuple[Any, MailHandler, int]:
    handler = MailHandler(
        recipients=(SUPPORT.upper(), "sales@northwind.example"),
        session_factory=factory,
        rasa_url=rasa_url,
        token=TOKEN,
        max_message_chars=MAX_CHARS,
        on_queued=lambda: queued.append(1),
        timeout=timeout,
    )
    port = free_port()
    server = await build_server(
        handler, host="127.0.0.1", port=port, data_size_limit=limit
    )
    return server, handler, port


async def stop_smtp(server: Any, handler: MailHandler) -> None:
    server.close()
    await server.wait_closed()
    await handler.aclose()


@pytest.fixture()
async def rig(scratch: Any) -> AsyncIterator[Rig]:
    factory = make_session_factory(scratch.engine("sqlite"))
    agent = RecordingAgent()
    rasa, rasa_url = await start_rasa(agent)
    queued: list[int] = []
    smtp, handler, port = await start_smtp(factory, rasa_url, queued)
    try:
        yield Rig("127.0.0.1", port, agent, factory, queued, rasa_url)
    finally:
        await stop_smtp(smtp, handler)
        await rasa.before_stop()
        await rasa.close()
        await rasa.after_stop()


async def test_a_mail_becomes_a_turn_and_one_pending_reply(rig: Rig) -> None:
    code, reply = await rig.send(mail("Where is my parcel?", message_id="<a1@ex.org>"))
    assert (code, reply) == (250, "OK: received")
    thread = email_threads.new_thread_id("<a1@ex.org>")
    key = f"email:{CUSTOMER}#{thread}"
    assert rig.last.sender_id == key
    assert rig.last.text == "Where is my parcel?"
    assert rig.last.input_channel == "email"
    assert rig.last.message_id == "<a1@ex.org>"
    assert rig.last.metadata == {"subject": "My order", "attachments": []}
    [row] = rig.outbox()
    assert (row.status, row.channel, row.tracker_key) == ("pending", "email", key)
    assert (row.recipient, row.purpose) == (CUSTOMER, "bot_reply")
    assert row.body == "got: Where is my parcel?"
    assert row.payload["author"] == "bot"
    assert rig.queued == [1]
    [stored] = rig.email_rows()
    assert (stored.message_id, stored.direction, stored.thread_id) == (
        "<a1@ex.org>",
        "in",
        thread,
    )


async def test_the_bots_messages_make_one_reply_with_the_last_buttons(
    rig: Rig,
) -> None:
    code, _ = await rig.send(mail("show me the menu"))
    assert code == 250
    [row] = rig.outbox()
    assert row.body == "got: show me the menu\n\nWhat can I do?"
    assert row.payload["buttons"] == BUTTONS


async def test_a_reply_joins_the_thread_of_the_mail_it_answers(rig: Rig) -> None:
    await rig.send(mail("first", message_id="<t1@ex.org>"))
    code, _ = await rig.send(
        mail(
            "second",
            message_id="<t2@ex.org>",
            In_Reply_To="<t1@ex.org>",
            References="<t1@ex.org>",
        )
    )
    assert code == 250
    first, second = rig.agent.messages
    assert second.sender_id == first.sender_id
    assert {row.tracker_key for row in rig.outbox()} == {first.sender_id}
    code, _ = await rig.send(mail("new topic", message_id="<t3@ex.org>"))
    assert rig.last.sender_id != first.sender_id


async def test_a_stranger_citing_a_thread_gets_a_thread_of_their_own(
    rig: Rig,
) -> None:
    await rig.send(mail("mine", message_id="<own1@ex.org>"))
    await rig.send(
        mail(
            "theirs",
            sender="Mallory <mallory@evil.example>",
            message_id="<evil1@ex.org>",
            In_Reply_To="<own1@ex.org>",
        ),
        mail_from="mallory@evil.example",
    )
    jane, mallory = rig.agent.messages
    assert mallory.sender_id.startswith("email:mallory@evil.example#")
    assert mallory.sender_id != jane.sender_id


async def test_the_same_message_id_twice_runs_one_turn(rig: Rig) -> None:
    raw = mail("hello", message_id="<dup@ex.org>")
    assert (await rig.send(raw))[0] == 250
    code, reply = await rig.send(raw)
    assert (code, reply) == (250, "OK: already received")
    assert len(rig.agent.messages) == 1
    assert len(rig.outbox()) == 1


async def test_a_mail_without_message_id_is_deduplicated_by_content(
    rig: Rig,
) -> None:
    raw = mail("no id here", message_id="")
    assert b"Message-ID" not in raw
    assert (await rig.send(raw))[0] == 250
    assert (await rig.send(raw)) == (250, "OK: already received")
    assert rig.last.message_id.endswith("@northwind.invalid>")
    assert len(rig.agent.messages) == 1


async def test_unknown_recipients_get_550_and_ours_any_case(rig: Rig) -> None:
    code, reply = await rig.send(mail(), to=("sales@other.example",))
    assert code == 550
    assert reply == "5.1.1 <sales@other.example>: no such mailbox here"
    code, reply = await rig.send(mail(), to=("x" * 300 + "@example.org",))
    assert code == 550
    assert len(reply) < 120
    assert (await rig.send(mail(), to=("Support@NorthWind.Example",)))[0] == 250
    assert rig.agent.messages and len(rig.outbox()) == 1


async def test_more_than_twenty_recipients_get_452(rig: Rig) -> None:
    code, reply = await rig.send(mail(), to=(SUPPORT,) * 21)
    assert code == 452
    assert rig.agent.messages == []


async def test_mail_over_the_limit_gets_552_and_the_next_mail_is_served(
    rig: Rig,
) -> None:
    big = mail("x" * 100) + (b"z" * 998 + b"\r\n") * (LIMIT // 990)
    code, reply = await rig.send(big)
    assert (code, reply) == (552, "Error: Too much mail data")
    assert rig.agent.messages == [] and rig.email_rows() == []
    assert (await rig.send(mail("after the big one")))[0] == 250
    assert rig.last.text == "after the big one"


async def test_a_line_over_1000_bytes_gets_500_and_the_next_mail_is_served(
    rig: Rig,
) -> None:
    code, reply = await rig.send(mail("x") + b"y" * 5000 + b"\r\n")
    assert (code, reply) == (500, "Line too long (see RFC5321 4.5.3.1.6)")
    assert rig.agent.messages == [] and rig.email_rows() == []
    assert (await rig.send(mail("short lines")))[0] == 250


async def test_after_552_the_same_connection_takes_the_next_mail(rig: Rig) -> None:
    def session() -> tuple[int, int]:
        with smtplib.SMTP(rig.host, rig.port, timeout=30) as client:
            client.ehlo("client.example.org")
            client.mail(CUSTOMER)
            client.rcpt(SUPPORT)
            first, _ = client.data(
                mail("big") + (b"q" * 998 + b"\r\n") * (LIMIT // 990)
            )
            client.mail(CUSTOMER)
            client.rcpt(SUPPORT)
            second, _ = client.data(mail("small one"))
            return first, second

    assert await asyncio.to_thread(session) == (552, 250)
    assert [m.text for m in rig.agent.messages] == ["small one"]


async def test_twenty_megabytes_against_the_default_ten_get_552(
    scratch: Any, rig: Rig
) -> None:
    queued: list[int] = []
    server, handler, port = await start_smtp(
        rig.factory, rig.rasa_url, queued, limit=10 * 1024 * 1024
    )
    try:
        line = b"A" * 998 + b"\r\n"
        big = mail("huge") + line * (20 * 1024 * 1024 // len(line))
        started = time.monotonic()
        code, _ = await rig.send(big, port=port)
        assert code == 552
        assert time.monotonic() - started < 20
        assert (await rig.send(mail("still here"), port=port))[0] == 250
    finally:
        await stop_smtp(server, handler)
    assert [m.text for m in rig.agent.messages] == ["still here"]


@pytest.mark.parametrize(
    ("headers", "mail_from", "sender"),
    [
        ({"Auto_Submitted": "auto-replied"}, CUSTOMER, CUSTOMER),
        ({}, "", CUSTOMER),  # a bounce: MAIL FROM:<>
        ({}, "MAILER-DAEMON@mx.example.org", "MAILER-DAEMON@mx.example.org"),
        ({"Precedence": "bulk"}, CUSTOMER, CUSTOMER),
        ({"X_Northwind_Loop": "northwind.example"}, CUSTOMER, CUSTOMER),
        ({"Subject": "Out of office"}, CUSTOMER, CUSTOMER),
    ],
)
async def test_automatic_mail_is_accepted_and_never_answered(
    rig: Rig, headers: dict[str, str], mail_from: str, sender: str
) -> None:
    subject = headers.pop("Subject", "Re: your question")
    raw = mail("I am away until Monday.", sender=sender, subject=subject, **headers)
    code, reply = await rig.send(raw, mail_from=mail_from)
    assert (code, reply) == (250, "OK: received, no reply (automatic mail)")
    assert rig.agent.messages == []
    assert rig.outbox() == []
    assert rig.queued == []


async def test_an_auto_reply_loop_ends_at_the_first_automatic_mail(rig: Rig) -> None:
    assert (await rig.send(mail("question", message_id="<q@ex.org>")))[0] == 250
    for n in range(3):  # their robot answers our answer, again and again
        raw = mail(
            "Thank you, we received your mail.",
            message_id=f"<robot{n}@ex.org>",
            In_Reply_To="<q@ex.org>",
            Auto_Submitted="auto-replied",
        )
        assert (await rig.send(raw))[1].endswith("(automatic mail)")
    assert len(rig.agent.messages) == 1
    assert len(rig.outbox()) == 1


async def test_a_mail_without_a_usable_sender_gets_no_reply(rig: Rig) -> None:
    for sender in ("", "undisclosed-recipients:;", "x" * 250 + "@example.org"):
        code, reply = await rig.send(mail("hello", sender=sender))
        assert (code, reply) == (250, "OK: received, no reply (no sender address)")
    assert rig.agent.messages == [] and rig.outbox() == [] and rig.email_rows() == []


async def test_html_only_mail_reaches_the_bot_as_clean_text(rig: Rig) -> None:
    msg = Mail()
    msg["From"] = CUSTOMER
    msg["To"] = SUPPORT
    msg["Subject"] = "html"
    msg["Message-ID"] = "<html1@ex.org>"
    msg.set_content(
        "<html><head><style>p{color:red}</style><script>alert(1)</script></head>"
        "<body><p>Where is <b>order</b> 1001?</p></body></html>",
        subtype="html",
    )
    code, _ = await rig.send(wire(msg))
    assert code == 250
    assert rig.last.text == "Where is order 1001?"


async def test_an_empty_body_gets_the_polite_reply_without_a_turn(rig: Rig) -> None:
    for text in (None, "", "   \n\n  "):
        code, reply = await rig.send(mail(text))
        assert (code, reply) == (250, "OK: received")
    assert rig.agent.messages == []
    rows = rig.outbox()
    assert [row.body for row in rows] == [NO_TEXT_REPLY] * 3
    assert all(row.tracker_key.startswith(f"email:{CUSTOMER}#") for row in rows)
    assert rig.queued == [1, 1, 1]


async def test_attachments_are_listed_for_the_bot_not_stored(rig: Rig) -> None:
    msg = Mail()
    msg["From"] = CUSTOMER
    msg["To"] = SUPPORT
    msg["Subject"] = "photo"
    msg.set_content("The vase arrived broken, see the photo.")
    msg.add_attachment(
        b"\x89PNG" + b"\x00" * 2000, maintype="image", subtype="png", filename="v.png"
    )
    code, _ = await rig.send(wire(msg))
    assert code == 250
    assert rig.last.text == "The vase arrived broken, see the photo."
    assert rig.last.metadata["attachments"] == [
        {"filename": "v.png", "content_type": "image/png", "size": 2004}
    ]


async def test_an_invalid_charset_is_read_as_well_as_possible(rig: Rig) -> None:
    raw = (
        f"From: {CUSTOMER}\r\nTo: {SUPPORT}\r\nSubject: charset\r\n"
        "Message-ID: <cs1@ex.org>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="x-no-such-charset"\r\n'
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode() + "Waar blijft mijn bestelling? \u00e9\u00e9n\r\n".encode()
    code, _ = await rig.send(raw)
    assert code == 250
    assert rig.last.text.startswith("Waar blijft mijn bestelling?")
    assert len(rig.outbox()) == 1


async def test_fifty_levels_of_multipart_then_the_next_mail(rig: Rig) -> None:
    head = f"From: {CUSTOMER}\r\nTo: {SUPPORT}\r\nSubject: deep\r\n"
    head += "Message-ID: <deep@ex.org>\r\nMIME-Version: 1.0\r\n"
    body = "Content-Type: text/plain\r\n\r\nhidden at the bottom\r\n"
    for level in range(50):
        body = (
            f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n'
            f"--b{level}\r\n{body}--b{level}--\r\n"
        )
    code, reply = await rig.send((head + body).encode())
    # Nesting is followed 10 levels deep: no text found, so the polite reply.
    assert (code, reply) == (250, "OK: received")
    assert rig.agent.messages == []
    assert [row.body for row in rig.outbox()] == [NO_TEXT_REPLY]
    assert (await rig.send(mail("next one")))[0] == 250
    assert rig.last.text == "next one"


async def test_a_mime_bomb_of_5000_parts_then_the_next_mail(rig: Rig) -> None:
    head = f"From: {CUSTOMER}\r\nTo: {SUPPORT}\r\nSubject: bomb\r\n"
    head += 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="B"\r\n\r\n'
    parts = ["--B\r\nContent-Type: text/plain\r\n\r\nThe real question.\r\n"]
    parts += [
        f"--B\r\nContent-Type: application/octet-stream\r\n"
        f'Content-Disposition: attachment; filename="f{n}.bin"\r\n\r\nxx\r\n'
        for n in range(5000)
    ]
    raw = (head + "".join(parts) + "--B--\r\n").encode()
    started = time.monotonic()
    code, _ = await rig.send(raw)
    assert code == 250
    assert time.monotonic() - started < 10
    assert rig.last.text == "The real question."
    assert len(rig.last.metadata["attachments"]) == 20  # listed up to the limit
    assert (await rig.send(mail("next one")))[0] == 250
    assert rig.last.text == "next one"


async def test_rasa_down_gets_451_and_a_resend_works(rig: Rig) -> None:
    queued: list[int] = []
    down = f"http://127.0.0.1:{free_port()}"
    server, handler, port = await start_smtp(rig.factory, down, queued)
    raw = mail("are you there?", message_id="<down@ex.org>")
    try:
        code, reply = await rig.send(raw, port=port)
    finally:
        await stop_smtp(server, handler)
    assert (code, reply) == (451, "4.3.0 Temporary failure, please retry")
    assert rig.email_rows() == [] and rig.outbox() == [] and queued == []
    assert await rig.send(raw) == (250, "OK: received")  # the sender retries
    assert rig.last.text == "are you there?"
    assert len(rig.outbox()) == 1


async def test_a_failing_turn_gets_451_and_nothing_is_kept(rig: Rig) -> None:
    code, reply = await rig.send(mail("fail", message_id="<f@ex.org>"))
    assert (code, reply) == (451, "4.3.0 Temporary failure, please retry")
    assert rig.email_rows() == [] and rig.outbox() == []
    assert (await rig.send(mail("fine")))[0] == 250


async def test_a_turn_over_the_timeout_gets_451(rig: Rig) -> None:
    async def slow(message: UserMessage) -> None:
        await asyncio.sleep(3)

    queued: list[int] = []
    server, handler, port = await start_smtp(
        rig.factory, rig.rasa_url, queued, timeout=0.5
    )
    rig.agent.handle_message = slow  # type: ignore[method-assign]
    try:
        code, _ = await rig.send(mail("slow", message_id="<slow@ex.org>"), port=port)
    finally:
        await stop_smtp(server, handler)
    assert code == 451
    assert rig.email_rows() == [] and rig.outbox() == []


async def test_a_turn_without_answers_queues_no_reply(rig: Rig) -> None:
    assert await rig.send(mail("silence")) == (250, "OK: received")
    assert rig.outbox() == [] and rig.queued == []
    assert len(rig.email_rows()) == 1


async def test_long_text_is_cut_and_the_reply_says_so(rig: Rig) -> None:
    code, _ = await rig.send(mail("w" * (MAX_CHARS * 3)))
    assert code == 250
    assert rig.last.text == "w" * MAX_CHARS
    [row] = rig.outbox()
    assert row.body.startswith(
        f"Your message was very long, so I read only the first {MAX_CHARS} characters."
    )


async def test_a_number_answers_the_buttons_of_our_last_mail(rig: Rig) -> None:
    await rig.send(mail("hi", message_id="<b1@ex.org>"))
    thread = email_threads.new_thread_id("<b1@ex.org>")
    with rig.factory() as session:
        email_threads.record_outbound(
            session,
            message_id="<ours1@northwind.example>",
            address=CUSTOMER,
            thread_id=thread,
            subject="Re: My order",
            buttons=BUTTONS,
        )
        session.commit()
    answer = mail(
        "2\n\n> What can I do?\n> 1. Track my order\n> 2. Return an item",
        message_id="<b2@ex.org>",
        In_Reply_To="<ours1@northwind.example>",
    )
    assert (await rig.send(answer))[0] == 250
    assert rig.last.text == "/start_return"
    assert rig.last.sender_id == f"email:{CUSTOMER}#{thread}"
    # A number without buttons to answer is just text.
    await rig.send(mail("2", message_id="<b3@ex.org>"))
    assert rig.last.text == "2"


def hang_up_after_data(host: str, port: int, raw: bytes) -> None:
    """Send a mail and close the connection without waiting for the DATA reply."""
    with socket.create_connection((host, port), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()  # greeting
        for command in (
            b"HELO client.example.org",
            f"MAIL FROM:<{CUSTOMER}>".encode(),
            f"RCPT TO:<{SUPPORT}>".encode(),
            b"DATA",
        ):
            sock.sendall(command + b"\r\n")
            reader.readline()
        sock.sendall(raw + b".\r\n")


async def test_a_client_that_hangs_up_mid_turn_still_gets_one_reply(
    rig: Rig,
) -> None:
    rig.agent.delay = 0.5
    raw = mail("quick question", message_id="<hangup@ex.org>")
    await asyncio.to_thread(hang_up_after_data, rig.host, rig.port, raw)
    for _ in range(100):
        if rig.outbox():
            break
        await asyncio.sleep(0.05)
    assert [row.body for row in rig.outbox()] == ["got: quick question"]
    rig.agent.delay = 0
    assert await rig.send(raw) == (250, "OK: already received")  # the retry
    assert len(rig.outbox()) == 1


async def test_logs_carry_ids_only(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await rig.send(mail("My secret question", message_id="<log1@ex.org>"))
    await rig.send(mail("fail", message_id="<log2@ex.org>"))
    await rig.send(mail("auto", Auto_Submitted="auto-replied"))
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("channels.")]
    assert any("answered" in line for line in ours)
    assert any("deferred" in line for line in ours)
    assert any("automatic (auto-submitted)" in line for line in ours)
    logged = "\n".join(ours)
    assert "j***@example.org" in logged
    for secret in (CUSTOMER, "secret question", "<log1@ex.org>", "<log2@ex.org>"):
        assert secret not in logged


async def test_serve_runs_until_stopped(
    rig: Rig, scratch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    port = free_port()
    url = str(scratch.engine("sqlite").url)
    settings = Settings(
        database_url=url,
        smtp_interface="127.0.0.1",
        smtp_port=port,
        smtp_recipients=SUPPORT,
        console_secret=SECRET,
        rasa_internal_url=rig.rasa_url,
        smtp_relay_host=None,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop))
    try:
        for _ in range(100):
            if "email: listening" in caplog.text:
                break
            await asyncio.sleep(0.05)
        assert (
            f"email: listening on 127.0.0.1:{port}, accepting mail for 1 address(es)"
            in caplog.text
        )
        assert "email: no SMTP_RELAY_HOST: replies wait in the outbox" in caplog.text
        assert await rig.send(mail("via serve"), port=port) == (250, "OK: received")
        assert rig.last.text == "via serve"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    with pytest.raises(OSError):
        await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port), 1)


def run_listener(env: dict[str, str]) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "SMTP_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "channels.email"],
        cwd=PROJECT_ROOT,
        env={**clean, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({}, "CRM_CONSOLE_SECRET is required"),
        ({"CRM_CONSOLE_SECRET": SECRET, "SMTP_PORT": "abc"}, "SMTP_PORT="),
    ],
)
def test_main_refuses_to_start_without_its_settings(
    env: dict[str, str], says: str
) -> None:
    process = run_listener(env)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert says in err


async def test_main_serves_and_stops_on_sigterm(scratch: Any) -> None:
    port = free_port()
    url = str(scratch.engine("sqlite").url)
    process = run_listener(
        {
            "CRM_CONSOLE_SECRET": SECRET,
            "CRM_DATABASE_URL": url,
            "SMTP_PORT": str(port),
            "CRM_RASA_URL": f"http://127.0.0.1:{free_port()}",  # Rasa is down
        }
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                assert process.poll() is None, process.communicate()[1]
                time.sleep(0.1)
        raw = mail("private words", message_id="<sub@ex.org>")
        code, _ = await asyncio.to_thread(
            transact, "127.0.0.1", port, raw, CUSTOMER, (SUPPORT,)
        )
        assert code == 451
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert f"email: listening on 127.0.0.1:{port}" in err
    assert "deferred" in err and "email: stopped" in err
    for secret in (CUSTOMER, "private words", "<sub@ex.org>"):
        assert secret not in err


async def test_an_empty_data_section_is_unreadable(rig: Rig) -> None:
    assert await rig.send(b"\r\n \r\n") == (550, "5.6.0 Unreadable message")
    assert rig.agent.messages == [] and rig.email_rows() == []
    assert (await rig.send(mail("next one")))[0] == 250


async def test_a_broken_store_gets_451_with_ids_only_in_the_log(
    rig: Rig, scratch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    broken = make_session_factory(scratch.engine("sqlite", migrated=False))
    server, handler, port = await start_smtp(broken, rig.rasa_url, [])
    try:
        raw = mail("hello", message_id="<broken@ex.org>")
        code, reply = await rig.send(raw, port=port)
    finally:
        await stop_smtp(server, handler)
    assert (code, reply) == (451, "4.3.0 Temporary failure, please retry")
    [line] = [r.getMessage() for r in caplog.records if "not handled" in r.message]
    assert line.startswith("email: mail message ")
    assert "(OperationalError)" in line
    assert "broken@ex.org" not in line
    assert rig.agent.messages == []
    assert await rig.send(raw) == (250, "OK: received")  # the retry, store fixed


async def test_a_sender_over_the_hourly_limit_is_received_but_not_answered(
    scratch: Any,
) -> None:
    """A robot that strips our headers and answers every mail: the loop ends."""
    factory = make_session_factory(scratch.engine("sqlite"))
    agent = RecordingAgent()
    rasa, rasa_url = await start_rasa(agent)
    queued: list[int] = []
    handler = MailHandler(
        recipients=(SUPPORT,),
        session_factory=factory,
        rasa_url=rasa_url,
        token=TOKEN,
        max_message_chars=MAX_CHARS,
        on_queued=lambda: queued.append(1),
        replies_per_hour=3,
    )
    port = free_port()
    server = await build_server(
        handler, host="127.0.0.1", port=port, data_size_limit=LIMIT
    )
    robot = "robot@loop.example"
    try:
        answers = [
            await asyncio.to_thread(
                transact,
                "127.0.0.1",
                port,
                mail(f"Re: your answer {n}", sender=robot),
                robot,
                (SUPPORT,),
            )
            for n in range(5)
        ]
        other = await asyncio.to_thread(
            transact, "127.0.0.1", port, mail("hello"), CUSTOMER, (SUPPORT,)
        )
    finally:
        await stop_smtp(server, handler)
        await rasa.before_stop()
        await rasa.close()
        await rasa.after_stop()
    assert [code for code, _ in answers] == [250] * 5
    assert [reply for _, reply in answers[3:]] == [
        "OK: received, no reply (too many mails from this sender)"
    ] * 2
    assert len(queued) == 4  # three for the robot, one for the other customer
    assert other == (250, "OK: received")
    assert sum(m.sender_id.startswith(f"email:{robot}#") for m in agent.messages) == 3
