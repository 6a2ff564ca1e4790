"""Action server down: the customer still gets an answer, and it is logged."""

from __future__ import annotations

import time
import uuid

from dialogue_support import history_of

from bot.server import FALLBACK_MARK

FORBIDDEN = ("Traceback", "Exception", "Error", "RasaException", "5055")


def test_apology_and_human_offer_within_two_seconds(stack) -> None:
    sender = f"e2e-down-{uuid.uuid4().hex[:8]}"
    stack.stop_action_server()
    try:
        started = time.monotonic()
        replies = stack.send(sender, "hello")
        elapsed = time.monotonic() - started
    finally:
        stack.start_action_server()

    assert elapsed < 2.0, f"answered after {elapsed:.2f}s"
    assert len(replies) == 1, replies
    reply = replies[0]
    assert "sorry" in reply["text"].lower()
    assert "person" in reply["text"].lower() or "human" in reply["text"].lower()
    assert any("person" in b["title"].lower() for b in reply.get("buttons", []))
    for forbidden in FORBIDDEN:
        assert forbidden not in str(replies)

    def logged() -> list:
        rows = history_of(stack, sender)
        return rows if len(rows) >= 2 else []

    incoming, outgoing = stack.eventually(logged)
    assert (incoming.direction, incoming.text, incoming.intent) == (
        "in",
        "hello",
        "greet",
    )
    assert outgoing.direction == "out" and outgoing.text == reply["text"]
    assert outgoing.meta.get("fallback") == FALLBACK_MARK

    # Once the action server is back, the same bot answers normally again.
    again = stack.send(f"e2e-up-{uuid.uuid4().hex[:8]}", "hello")
    assert again and all(r.get("text") != reply["text"] for r in again)
