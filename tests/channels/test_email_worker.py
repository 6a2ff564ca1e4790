"""The e-mail worker: outbox rows -> mail through a real SMTP relay (aiosmtpd).

The relay is ``tests.fakes.smtp_sink`` (a real SMTP server that keeps what it
gets); the store is a real migrated database of each backend.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from channels.email_relay import RelayConfig
from channels.email_worker import EmailWorker
from crm_store.db import make_session_factory
from crm_store.models import EmailMessage, OutboxMessage, utcnow
from crm_store.services import email_threads, outbound
from crm_store.services.notifier import Notifier
from runtime.processes import free_port
from tests.fakes.smtp_sink import SmtpSink

OURS = "support@northwind.example"
BUTTONS = [{"title": "Yes", "payload": "/affirm"}, {"title": "No", "payload": "/deny"}]


@pytest.fixture()
def sink() -> Iterator[SmtpSink]:
    relay = SmtpSink().start()
    yield relay
    relay.stop()


@pytest.fixture()
def store(empty_engine: Engine) -> sessionmaker:
    return make_session_factory(empty_engine)


def worker_for(store: sessionmaker, port: int, **options: object) -> EmailWorker:
    settings = SimpleNamespace(mail_from=OURS, database_url="unused")
    relay = RelayConfig(host="127.0.0.1", port=port, timeout=5)
    options = {"base_delay": 0.01, "max_delay": 0.02, **options}
    return EmailWorker(settings, session_factory=store, relay=relay, **options)


def inbound_id(address: str) -> str:
    return f"<in-{address.replace('@', '.at.')}@customer.example>"


def thread_with_mail(session: Session, address: str) -> str:
    placed = email_threads.place_inbound(
        session,
        message_id=inbound_id(address),
        address=address,
        subject="Where is my parcel?",
    )
    return placed.thread_id


def queue(session: Session, address: str, thread: str, **extra: object) -> int:
    return outbound.queue_address_message(
        session,
        tracker_key=f"email:{address}#{thread}",
        channel="email",
        recipient=address,
        text=str(extra.pop("text", "Your order A10001 has shipped.")),
        **extra,  # type: ignore[arg-type]
    ).id


def row(store: sessionmaker, message_id: int) -> OutboxMessage:
    with store() as session:
        found = session.get(OutboxMessage, message_id)
        assert found is not None
        return found


def test_a_bot_reply_goes_out_in_its_thread_and_is_recorded(
    store: sessionmaker, sink: SmtpSink
) -> None:
    address = "ann.thread@example.com"
    with store.begin() as session:
        thread = thread_with_mail(session, address)
        message_id = queue(session, address, thread, buttons=BUTTONS)
    worker = worker_for(store, sink.port)
    assert worker.deliver_due_now() == 1
    [mail] = sink.wait_for(address)
    headers = mail.message
    assert headers["In-Reply-To"] == inbound_id(address)
    assert inbound_id(address) in headers["References"]
    assert headers["Subject"] == "Re: Where is my parcel?"
    assert headers["Auto-Submitted"] == "auto-replied"
    assert mail.mail_from == OURS and mail.rcpt_tos == [address]
    assert "Your order A10001 has shipped." in mail.text
    assert "1. Yes" in mail.text and "2. No" in mail.text
    assert "<ol>" in mail.html
    assert row(store, message_id).status == "sent"
    # Our Message-ID joins the thread, with the numbered choices to answer.
    state = None
    with store() as session:
        state = email_threads.thread_state(session, address=address, thread_id=thread)
        ours = session.get(EmailMessage, str(headers["Message-ID"]))
    assert ours is not None and ours.direction == "out"
    assert state.last_buttons == BUTTONS
    # Nothing is sent twice.
    assert worker.deliver_due_now() == 0
    assert len(sink.to(address)) == 1


def test_an_agent_reply_is_not_marked_automatic(
    store: sessionmaker, sink: SmtpSink
) -> None:
    address = "agent.reply@example.com"
    with store.begin() as session:
        thread = thread_with_mail(session, address)
        queue(session, address, thread, author="agent", purpose="agent_reply")
    worker_for(store, sink.port).deliver_due_now()
    [mail] = sink.wait_for(address)
    assert mail.message["Auto-Submitted"] is None


def test_a_one_time_code_of_the_notifier_is_delivered(
    store: sessionmaker, sink: SmtpSink
) -> None:
    address = "code.owner@example.com"
    with store.begin() as session:
        entry = Notifier().notify(
            session,
            customer_id=None,
            channel="email",
            recipient=address,
            purpose="login_code",
            subject="Your Northwind Goods code",
            body="Your code is 482913. It expires in 10 minutes.",
        )
    worker_for(store, sink.port).deliver_due_now()
    [mail] = sink.wait_for(address)
    assert mail.message["Subject"] == "Your Northwind Goods code"
    assert mail.message["Auto-Submitted"] == "auto-generated"
    assert "482913" in mail.text
    assert row(store, entry.id).status == "sent"


def test_a_relay_that_is_down_gets_retries_with_back_off_then_failed(
    store: sessionmaker,
) -> None:
    address = "down.relay@example.com"
    with store.begin() as session:
        thread = thread_with_mail(session, address)
        message_id = queue(session, address, thread)
    worker = worker_for(store, free_port(), max_attempts=3, base_delay=30, max_delay=60)
    assert worker.deliver_due_now() == 0
    first = row(store, message_id)
    assert first.status == "pending" and first.attempts == 1
    assert first.last_error.startswith("relay unreachable")
    # Not due again before the back-off has passed.
    assert first.next_attempt_at > utcnow() + dt.timedelta(seconds=20)
    assert worker.deliver_due_now() == 0
    assert row(store, message_id).attempts == 1
    for _ in range(2):  # the back-off passes
        with store.begin() as session:
            session.get(OutboxMessage, message_id).next_attempt_at = None
        worker.deliver_due_now()
    final = row(store, message_id)
    assert final.status == "failed" and final.attempts == 3
    with store() as session:
        [failed] = outbound.failed_deliveries(
            session, tracker_key=f"email:{address}#{thread}"
        )
    assert failed.id == message_id


def test_a_temporary_refusal_is_retried_and_a_permanent_one_is_final(
    store: sessionmaker, sink: SmtpSink
) -> None:
    address = "refused@example.com"
    with store.begin() as session:
        thread = thread_with_mail(session, address)
        retried = queue(session, address, thread, text="first")
    worker = worker_for(store, sink.port)
    sink.refuse_next(451)
    worker.deliver_due_now()
    assert row(store, retried).status == "pending"
    with store.begin() as session:
        session.get(OutboxMessage, retried).next_attempt_at = None
    worker.deliver_due_now()
    assert row(store, retried).status == "sent"
    with store.begin() as session:
        refused = queue(session, address, thread, text="second")
    sink.refuse_next(550)
    worker.deliver_due_now()
    final = row(store, refused)
    assert final.status == "failed" and final.attempts == 1
    assert "550" in final.last_error


def test_without_a_relay_mail_waits_in_the_outbox(store: sessionmaker) -> None:
    address = "no.relay@example.com"
    with store.begin() as session:
        thread = thread_with_mail(session, address)
        message_id = queue(session, address, thread)
    settings = SimpleNamespace(
        mail_from=OURS, database_url="unused", smtp_relay_host=None
    )
    worker = EmailWorker(settings, session_factory=store)
    assert worker.relay is None
    assert worker.deliver_due_now() == 0
    message = row(store, message_id)
    assert message.status == "pending" and message.attempts == 0


def test_two_workers_send_each_message_once(
    store: sessionmaker, sink: SmtpSink
) -> None:
    address = "two.workers@example.com"
    with store.begin() as session:
        thread = thread_with_mail(session, address)
        ids = [queue(session, address, thread, text=f"message {i}") for i in range(12)]
    workers = [worker_for(store, sink.port) for _ in range(2)]
    barrier = threading.Barrier(2)

    def run(worker: EmailWorker) -> None:
        barrier.wait()
        worker.deliver_due_now()

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(w.sent for w in workers) == 12
    received = sink.wait_for(address, 12)
    assert sorted(r.text.strip() for r in received) == sorted(
        f"message {i}" for i in range(12)
    )
    assert all(row(store, i).status == "sent" for i in ids)


def test_wake_delivers_without_waiting_for_the_poll(
    store: sessionmaker, sink: SmtpSink
) -> None:
    address = "woken@example.com"
    worker = worker_for(store, sink.port, poll_seconds=30)

    async def scenario() -> None:
        await worker.start()
        await asyncio.sleep(0.2)  # the first round found nothing
        with store.begin() as session:
            thread = thread_with_mail(session, address)
            queue(session, address, thread)
        worker.wake()
        for _ in range(100):
            if sink.to(address):
                break
            await asyncio.sleep(0.05)
        await worker.stop()

    asyncio.run(scenario())
    assert len(sink.to(address)) == 1
