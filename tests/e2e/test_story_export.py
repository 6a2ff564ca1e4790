"""A real conversation, exported as a test story, passes ``rasa test`` on its bot.

The conversation runs over the REST webhook against the real Rasa and action
servers (an order-status question with the verification form, a CSAT answer).
A manager exports it through the console API; ``rasa test core`` (the stock
command line, in a subprocess) then replays it against the same trained model
in the same run as a copy of the story with one action swapped: the real story
must be among Rasa's successful stories and the copy among its failed ones, so
the check can tell a wrong story from a right one (one run: loading the model
is most of the time).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from dialogue_support import Chat, conversation_of, pick_order

from bot.training import ensure_model
from crm_store.models import Order
from tests.e2e.conftest import PROJECT
from tests.e2e.webchat_support import ConsoleAgent

pytestmark = pytest.mark.slow
RASA_TEST_TIMEOUT = 600


def rasa_test(stories: Path, out: Path) -> subprocess.CompletedProcess:
    """Run the stock ``rasa test core`` on a story directory against the bot's model."""
    rasa = Path(sys.executable).with_name("rasa")
    return subprocess.run(
        [
            str(rasa),
            "test",
            "core",
            "--stories",
            str(stories),
            "--model",
            str(ensure_model(PROJECT)),
            "--out",
            str(out),
            "--successes",
            "--no-plot",
        ],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=RASA_TEST_TIMEOUT,
    )


def swapped_action(document: dict) -> dict:
    """The story with its last bot action replaced by another real action."""
    story = document["stories"][0]
    story["story"] = "tampered " + story["story"]
    steps = story["steps"]
    actions = [i for i, step in enumerate(steps) if "action" in step]
    assert actions, "the exported story has no action"
    last = actions[-1]
    replacement = (
        "utter_iamabot" if steps[last]["action"] != "utter_iamabot" else "utter_goodbye"
    )
    steps[last] = {"action": replacement}
    return document


def test_exported_story_of_a_real_conversation_passes_rasa_test(
    stack, tmp_path: Path
) -> None:
    order = pick_order(stack, Order.status == "delivered", offset=17)
    chat = Chat(stack)
    chat.say("hello")
    first = chat.say(f"where is my order {order.id}?")
    assert "postcode" in first
    chat.say(order.customer.postcode)
    assert "1 to 5" in chat.say("no, that's all")
    chat.say("4")
    chat.say("bye")
    chat.assert_history()
    conversation = conversation_of(stack, chat.sender)
    assert conversation is not None

    manager = ConsoleAgent(stack.console_url, "manager", stack.demo_password)
    answer = stack.eventually(
        lambda: (
            (
                r := manager.http.get(
                    f"{manager.url}/conversations/{conversation.id}/story", timeout=10
                )
            ).status_code
            == 200
            and "utter_goodbye" in r.text
            and r
        ),
        timeout=10,
    )
    assert "attachment" in answer.headers.get("content-disposition", "")
    document = yaml.safe_load(answer.text)
    steps = document["stories"][0]["steps"]
    intents = [s["intent"] for s in steps if "intent" in s]
    assert intents[0] == "greet" and intents[-1] == "goodbye"
    assert any("active_loop" in s for s in steps), "the form is part of the story"

    stories = tmp_path / "stories"
    stories.mkdir()
    (stories / "story.yml").write_text(answer.text, encoding="utf-8")
    tampered = swapped_action(yaml.safe_load(answer.text))
    (stories / "tampered.yml").write_text(yaml.safe_dump(tampered), encoding="utf-8")
    out = tmp_path / "out"
    run = rasa_test(stories, out)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    name = document["stories"][0]["story"]
    passed = names_in(out / "successful_test_stories.yml")
    failed = names_in(out / "failed_test_stories.yml")
    assert name in passed and name not in failed, (passed, failed)
    assert "tampered " + name in failed


def names_in(path: Path) -> set[str]:
    """Story names in a result file of ``rasa test`` (without its " (file)" suffix)."""
    if not path.exists():
        return set()
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {
        str(s.get("story", "")).rsplit(" (", 1)[0]
        for s in document.get("stories") or []
    }


def test_agents_cannot_export_stories(stack) -> None:
    chat = Chat(stack)
    chat.say("hello")
    chat.assert_history()
    conversation = conversation_of(stack, chat.sender)
    agent = ConsoleAgent(stack.console_url, "agent", stack.demo_password)
    answer = agent.http.get(
        f"{agent.url}/conversations/{conversation.id}/story", timeout=10
    )
    assert answer.status_code == 403
    anonymous = requests.get(
        f"{agent.url}/conversations/{conversation.id}/story", timeout=10
    )
    assert anonymous.status_code == 401
