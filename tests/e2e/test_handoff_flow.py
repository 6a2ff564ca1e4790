"""Handoff end to end: web chat customer -> queue -> agent -> hand back -> CSAT.

Real processes: the Rasa server (web chat socket, control routes), the action
server and the console, on one SQLite store (``stack`` fixture).
"""

from __future__ import annotations

import time

from crm_store.models import Conversation, Order
from tests.e2e.dialogue_support import pick_order
from tests.e2e.webchat_support import ConsoleAgent, WebChatCustomer, texts


async def test_web_chat_customer_agent_round_trip_with_hand_back(stack) -> None:
    order = pick_order(stack, Order.status == "shipped", offset=7)
    customer = await WebChatCustomer(
        stack.rasa_url, stack.console_url, stack.console_secret
    ).connect()
    agent = ConsoleAgent(stack.console_url, "agent", stack.demo_password)
    try:
        await customer.say(f"where is my order {order.id}?")
        assert "postcode" in texts(await customer.replies())
        await customer.say(order.customer.postcode)
        assert order.tracking_number in texts(await customer.replies())
        await customer.say("I want to talk to a human please")
        told = texts(await customer.replies())
        assert "in line" in told and "minute" in told, told

        # The handoff is in the queue with the packet an agent needs.
        entry = stack.eventually(lambda: agent.waiting_for(customer.tracker_key))
        handoff = agent.get(f"/handoffs/{entry['handoff_id']}")
        packet = handoff["packet"]
        assert handoff["reason"] == packet["reason"] == "customer_request"
        assert packet["version"] == 2
        assert packet["customer_id"] == order.customer_id and packet["verified"]
        assert packet["tracker_key"] == customer.tracker_key
        assert any("human" in m for m in packet["last_messages"])
        assert order.id in [o["order_id"] for o in packet["open_orders"]]
        assert packet["summary"] and order.id in packet["summary"]

        # Claim: the bot goes quiet; the agent's reply reaches the page.
        claimed = agent.post(f"/handoffs/{entry['handoff_id']}/claim")
        assert claimed.status_code == 200, claimed.text
        again = agent.post(f"/handoffs/{entry['handoff_id']}/claim")
        assert again.status_code == 409
        sent = agent.post(
            f"/handoffs/{entry['handoff_id']}/messages",
            {"text": "Hi, this is Sam from Northwind. I see your parcel."},
        )
        assert sent.status_code == 201, sent.text
        pushed = await customer.replies(settle=0.5, timeout=10)
        assert [m.get("author") for m in pushed] == ["agent"]
        assert "this is Sam" in pushed[0]["text"]

        await customer.say("thanks Sam, can it come on Saturday instead?")
        assert await customer.silence(3.0) == [], "the bot spoke while paused"
        conversation_id = handoff["conversation_id"]

        def customer_line_reached_agent() -> bool:
            view = agent.get(f"/conversations/{conversation_id}")
            return any(
                m["author"] == "customer" and "Saturday" in (m["text"] or "")
                for m in view["messages"]
            )

        stack.eventually(customer_line_reached_agent)

        # Hand back: the bot resumes and asks for a rating, which is recorded.
        resolved = agent.post(
            f"/handoffs/{entry['handoff_id']}/resolve",
            {"handback": True, "note": "Saturday delivery arranged"},
        )
        assert resolved.status_code == 200, resolved.text
        back = texts(await customer.replies())
        assert "rate" in back.lower(), back
        await customer.say("5")
        await customer.replies()

        def rated() -> int | None:
            with stack.factory() as session:
                return session.get(Conversation, conversation_id).csat

        assert stack.eventually(rated) == 5
        # One timeline holds every message with its author.
        view = agent.get(f"/conversations/{conversation_id}")
        authors = {m["author"] for m in view["messages"]}
        assert {"customer", "bot", "agent"} <= authors
        assert not [m for m in view["messages"] if "EXTERNAL" in (m["text"] or "")]
        timeline = agent.get(f"/customers/{order.customer_id}/timeline", limit=200)
        mine = [m for m in timeline["items"] if m["conversation_id"] == conversation_id]
        assert {"customer", "bot", "agent"} <= {m["author"] for m in mine}
    finally:
        await customer.close()


def test_rest_conversation_gets_the_agent_reply_with_its_next_answer(stack) -> None:
    agent = ConsoleAgent(stack.console_url, "agent", stack.demo_password)
    sender = f"e2e-handoff-rest-{time.time_ns()}"
    first = stack.texts(sender, "I want to talk to a human")
    assert any("in line" in t for t in first), first
    entry = stack.eventually(lambda: agent.waiting_for(f"rest:{sender}"))
    assert agent.post(f"/handoffs/{entry['handoff_id']}/claim").status_code == 200
    reply = "Hello from the team, how can I help?"
    assert (
        agent.post(f"/handoffs/{entry['handoff_id']}/messages", {"text": reply})
    ).status_code == 201
    # The REST client gets the agent's reply with the answer to its next message,
    # once; the paused bot itself says nothing.
    answers = stack.send(sender, "hello? anyone there?")
    assert [a["text"] for a in answers] == [reply]
    assert stack.send(sender, "ok") == []
