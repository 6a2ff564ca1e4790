"""Issue 11: hostile input at the REST webhook gets a defined answer, never a 500.

After each one the server keeps serving and the sender's next normal turn is in
the contact history (the broker and its writer survived too).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from dialogue_support import history_of

DEFAULT_MAX_CHARS = 4000


def new_sender() -> str:
    return f"edge-{uuid.uuid4().hex[:10]}"


def post_raw(stack, body: bytes) -> tuple[int, Any]:
    response = stack.http.post(
        f"{stack.rasa_url}/webhooks/rest/webhook",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text


def body(sender: str, message: str, metadata: str = "{}") -> bytes:
    """A request body; ``metadata`` is raw JSON (json.dumps fails at 1,000 levels)."""
    return (
        f'{{"sender": {json.dumps(sender)}, "message": {message}, '
        f'"metadata": {metadata}}}'
    ).encode()


def next_turn_is_recorded(stack, sender: str) -> list:
    """The sender says hello normally; return its conversation's transcript."""
    answers = stack.send(sender, "hello")
    assert answers and all(a["recipient_id"] == sender for a in answers)

    def recorded() -> list:
        rows = history_of(stack, sender)
        return rows if any(r.text == "hello" for r in rows) else []

    return stack.eventually(recorded)


def test_a_100_kb_message_is_refused_with_413(stack) -> None:
    sender = new_sender()
    status, _ = post_raw(stack, body(sender, json.dumps("x" * 100_000)))
    # Sanic refuses it before the channel (bot.server sets REQUEST_MAX_SIZE);
    # the channel checks CRM_MAX_REQUEST_BYTES again (tests/channels).
    assert status == 413
    rows = next_turn_is_recorded(stack, sender)
    assert [r.text for r in rows if r.direction == "in"] == ["hello"]


def test_a_long_message_is_cut_answered_politely_and_recorded_cut(stack) -> None:
    sender = new_sender()
    text = "where is my order please " * 800  # 20,000 characters, ~20 KB
    answers = stack.send(sender, text)
    assert answers[0] == {
        "recipient_id": sender,
        "text": "Your message was very long, so I read only the first "
        "4,000 characters.",
    }
    assert len(answers) > 1, "the bot itself answered nothing"
    rows = next_turn_is_recorded(stack, sender)
    incoming = [r.text for r in rows if r.direction == "in"]
    # Rasa strips the message, so the cut's trailing space goes too.
    assert incoming == [text[:DEFAULT_MAX_CHARS].strip(), "hello"]
    assert len(incoming[0]) == DEFAULT_MAX_CHARS - 1


def test_metadata_nested_1000_levels_is_dropped_and_the_turn_recorded(stack) -> None:
    sender = new_sender()
    deep = '{"a": ' * 1000 + "1" + "}" * 1000
    for metadata in (deep, '{"identity": ' + deep + "}"):
        status, answers = post_raw(stack, body(sender, '"hi there"', metadata))
        assert status == 200 and answers, answers
    rows = next_turn_is_recorded(stack, sender)
    incoming = [r.text for r in rows if r.direction == "in"]
    assert incoming == ["hi there", "hi there", "hello"]


@pytest.mark.parametrize(
    ("raw_message", "recorded"),
    [
        (r'"hello \ud800 there"', "hello \ufffd there"),
        (r'"hello \udfff"', "hello \ufffd"),
        (r'"hello\u0000 there"', "hello there"),
        (r'"hi\u0007\u001b there"', "hi there"),
    ],
    ids=["lone-high-surrogate", "lone-low-surrogate", "nul", "controls"],
)
def test_surrogates_and_control_characters_are_cleaned(
    stack, raw_message: str, recorded: str
) -> None:
    sender = new_sender()
    status, answers = post_raw(stack, body(sender, raw_message))
    assert status == 200 and answers, answers
    rows = next_turn_is_recorded(stack, sender)
    assert [r.text for r in rows if r.direction == "in"] == [recorded, "hello"]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"not json at all", 400),
        (b"[1, 2, 3]", 400),
        (b'{"sender": "s", "message": "\\u0000"}', 400),
        (b'{"sender": "s", "message": 42}', 400),
        (b'{"sender": "a\\u0000b", "message": "hi"}', 400),
        (b'{"sender": "' + b"x" * 129 + b'", "message": "hi"}', 400),
        (b'{"message": "hi"}', 400),
    ],
    ids=[
        "not-json",
        "array",
        "only-nul",
        "number",
        "nul-sender",
        "long-sender",
        "no-sender",
    ],
)
def test_bad_bodies_get_a_json_400(stack, raw: bytes, status: int) -> None:
    got, answer = post_raw(stack, raw)
    assert got == status and answer["error"]
    next_turn_is_recorded(stack, new_sender())
