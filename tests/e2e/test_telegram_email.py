"""Telegram and e-mail end to end: same bot, same store, one timeline per customer.

Real processes (Rasa server with the Telegram and e-mail routes, action server,
console, SMTP listener and mail worker) on one SQLite store; a local fake Bot
API and a real aiosmtpd relay stand in for Telegram and the outbound relay.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from crm_store.models import (
    ChannelIdentity,
    ChannelReceipt,
    Conversation,
    Interaction,
    Order,
)
from tests.e2e.channel_support import MailCustomer, TelegramUser, new_telegram_id
from tests.e2e.dialogue_support import pick_order
from tests.e2e.webchat_support import ConsoleAgent, WebChatCustomer, texts

pytestmark = pytest.mark.slow


def rows_of(stack, key: str) -> list[Interaction]:
    with stack.factory() as session:
        conversation_ids = select(Conversation.id).where(
            Conversation.tracker_key == key
        )
        return list(
            session.execute(
                select(Interaction)
                .where(Interaction.conversation_id.in_(conversation_ids))
                .order_by(Interaction.id)
            ).scalars()
        )


def telegram_customer_order(stack) -> tuple[Order, str]:
    """A shipped order of a customer with a registered Telegram id, and the id."""
    registered = select(ChannelIdentity.customer_id).where(
        ChannelIdentity.kind == "telegram"
    )
    order = pick_order(
        stack, Order.status == "shipped", Order.customer_id.in_(registered)
    )
    with stack.factory() as session:
        telegram_id = session.execute(
            select(ChannelIdentity.value).where(
                ChannelIdentity.kind == "telegram",
                ChannelIdentity.customer_id == order.customer_id,
            )
        ).scalar_one()
    return order, telegram_id


# --- Telegram ---------------------------------------------------------------------


def test_a_registered_telegram_user_gets_the_order_status_at_once(stack) -> None:
    order, telegram_id = telegram_customer_order(stack)
    user = TelegramUser(stack, int(telegram_id))
    answer = user.say(f"where is my order {order.id}?")
    assert order.tracking_number in answer, answer
    assert "postcode" not in answer.lower()

    def recorded() -> list[Interaction]:
        rows = rows_of(stack, user.tracker_key)
        return rows if len(rows) >= 2 else []

    rows = stack.eventually(recorded)
    assert {r.channel for r in rows} == {"telegram"}
    assert {r.customer_id for r in rows} == {order.customer_id}
    assert [r.author for r in rows][:2] == ["customer", "bot"]


def test_an_unknown_telegram_user_verifies_with_order_and_postcode(stack) -> None:
    order = pick_order(stack, Order.status == "shipped", offset=3)
    user = TelegramUser(stack, new_telegram_id())
    first = user.say(f"where is my order {order.id}?")
    assert "postcode" in first.lower() and order.tracking_number not in first
    second = user.say(order.customer.postcode)
    assert order.tracking_number in second, second
    assert order.carrier in second


def test_forged_secrets_and_redelivered_updates(stack) -> None:
    user = TelegramUser(stack, new_telegram_id())
    forged = user.update("hello, tell me everything")
    for secret in ("wrong-secret-value-123456", ""):
        answer = user.post(forged, secret=secret)
        assert answer.status_code == 403
    with stack.factory() as session:
        seen = session.get(ChannelReceipt, ("telegram", str(forged["update_id"])))
    assert seen is None
    assert rows_of(stack, user.tracker_key) == []
    assert user.answers() == []

    bad = user.post({"update_id": "x"})
    assert bad.status_code == 400
    raw = stack.http.post(
        user.url,
        data=b"{not json",
        headers={"X-Telegram-Bot-Api-Secret-Token": stack.telegram_secret},
        timeout=10,
    )
    assert raw.status_code == 400

    update = user.update("hello")
    assert user.post(update).status_code == 200
    once = len(user.answers())
    assert once >= 1
    again = user.post(update)
    assert again.status_code == 200
    time.sleep(0.5)
    assert len(user.answers()) == once


def test_an_agent_reply_reaches_the_telegram_user(stack) -> None:
    user = TelegramUser(stack, new_telegram_id())
    told = user.say("I want to talk to a human please")
    assert "in line" in told, told
    agent = ConsoleAgent(stack.console_url, "agent", stack.demo_password)
    entry = stack.eventually(lambda: agent.waiting_for(user.tracker_key))
    assert entry["channel"] == "telegram"
    assert agent.post(f"/handoffs/{entry['handoff_id']}/claim").status_code == 200
    before = len(user.answers())
    sent = agent.post(
        f"/handoffs/{entry['handoff_id']}/messages",
        {"text": "Hi, this is Sam from Northwind (agent). How can I help?"},
    )
    assert sent.status_code == 201, sent.text
    stack.eventually(lambda: len(user.answers()) > before)
    assert "this is Sam" in user.answers()[-1]
    resolved = agent.post(
        f"/handoffs/{entry['handoff_id']}/resolve", {"handback": True, "note": "ok"}
    )
    assert resolved.status_code == 200
    stack.eventually(lambda: "rate" in " ".join(user.answers()).lower())


# --- e-mail -----------------------------------------------------------------------


def test_order_status_by_mail_with_verification_in_one_thread(stack) -> None:
    order = pick_order(stack, Order.status == "shipped", offset=5)
    customer = MailCustomer(stack, order.customer.email)
    first = customer.ask(f"Hello,\n\nwhere is my order {order.id}?\n\nRegards")
    asked = first.message
    question = customer.sent[-1]
    assert asked["In-Reply-To"] == question["Message-ID"]
    assert question["Message-ID"] in asked["References"]
    assert asked["Subject"] == "Re: Question about my order"
    assert asked["Auto-Submitted"] == "auto-replied"
    assert "postcode" in first.text.lower()
    assert order.tracking_number not in first.text
    assert first.html  # a simple HTML part too

    second = customer.ask(order.customer.postcode, reply_to=first)
    assert order.tracking_number in second.text, second.text
    assert second.message["In-Reply-To"] == customer.sent[-1]["Message-ID"]
    assert second.message["Subject"] == "Re: Question about my order"

    # One conversation for the thread, on the customer's timeline, channel email.
    with stack.factory() as session:
        conversations = list(
            session.execute(
                select(Conversation).where(
                    Conversation.tracker_key.startswith(
                        f"email:{order.customer.email.lower()}#"
                    )
                )
            ).scalars()
        )
    assert len(conversations) == 1
    [conversation] = conversations
    assert conversation.channel == "email"
    assert conversation.customer_id == order.customer_id
    rows = stack.eventually(lambda: rows_of(stack, conversation.tracker_key))
    customer_lines = [r.text for r in rows if r.author == "customer"]
    # The quoted reply was stripped: the customer's line is just the postcode.
    assert order.customer.postcode in customer_lines
    assert all("wrote:" not in (line or "") for line in customer_lines)


def test_automatic_mail_and_duplicates_are_not_answered(stack) -> None:
    customer = MailCustomer(stack, "auto.replier@example.org")
    out_of_office = customer.mail("I am out of the office until Monday.")
    out_of_office["Auto-Submitted"] = "auto-replied"
    customer.send(out_of_office)
    normal = customer.mail("Hello, what are your opening hours?")
    customer.send(normal)
    customer.send(normal)  # the same Message-ID again
    stack.relay.wait_for(customer.address, 1, timeout=30)
    time.sleep(2.0)
    assert len(customer.replies()) == 1


def test_an_agent_reply_reaches_the_customer_by_mail(stack) -> None:
    customer = MailCustomer(stack, f"mail.handoff.{new_telegram_id()}@example.org")
    told = customer.ask("I want to speak to a human please")
    assert "in line" in told.text, told.text
    agent = ConsoleAgent(stack.console_url, "agent", stack.demo_password)
    entry = stack.eventually(lambda: _waiting_mail(agent, customer.address))
    assert agent.post(f"/handoffs/{entry['handoff_id']}/claim").status_code == 200
    before = len(customer.replies())
    sent = agent.post(
        f"/handoffs/{entry['handoff_id']}/messages",
        {"text": "Hello, this is Sam from Northwind. I will look into it."},
    )
    assert sent.status_code == 201, sent.text
    [reply] = stack.relay.wait_for(customer.address, before + 1, timeout=30)[before:]
    assert "this is Sam" in reply.text
    assert reply.message["In-Reply-To"] == customer.sent[-1]["Message-ID"]
    assert reply.message["Auto-Submitted"] is None  # a person wrote it


def _waiting_mail(agent: ConsoleAgent, address: str) -> dict | None:
    for item in agent.get("/handoffs", status="waiting")["items"]:
        if (item["tracker_key"] or "").startswith(f"email:{address.lower()}#"):
            return item
    return None


# --- one customer, one timeline -------------------------------------------------


async def test_mail_then_web_chat_is_one_customer_with_one_timeline(stack) -> None:
    order = pick_order(stack, Order.status == "shipped", offset=9)
    mail = MailCustomer(stack, order.customer.email)
    mail.ask(f"Can you tell me where order {order.id} is?")
    chat = await WebChatCustomer(
        stack.rasa_url, stack.console_url, stack.console_secret
    ).connect()
    try:
        await chat.say(f"where is my order {order.id}?")
        await chat.replies()
        await chat.say(order.customer.postcode)
        assert order.tracking_number in texts(await chat.replies())
    finally:
        await chat.close()
    agent = ConsoleAgent(stack.console_url, "agent", stack.demo_password)

    def both_channels() -> set[str]:
        timeline = agent.get(f"/customers/{order.customer_id}/timeline")
        channels = {item["channel"] for item in timeline["items"]}
        return channels if {"email", "chat"} <= channels else set()

    assert {"email", "chat"} <= stack.eventually(both_channels, timeout=15)
