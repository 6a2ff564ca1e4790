"""`crm chat` talks to the running bot over the REST webhook."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from dialogue_support import history_of

ROOT = Path(__file__).resolve().parents[2]


def test_crm_chat_prints_the_bots_replies(stack) -> None:
    sender = f"e2e-chat-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "chat", "--url", stack.rasa_url]
        + ["--sender", sender],
        input="hello\n/quit\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "bot>" in result.stdout

    def rows() -> list:
        return history_of(stack, sender)

    history = stack.eventually(rows)
    assert history[0].text == "hello"
    first_reply = next(r for r in history if r.direction == "out")
    assert first_reply.text.splitlines()[0] in result.stdout


def test_crm_chat_reports_an_unreachable_bot(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "chat", "--url", "http://127.0.0.1:9"],
        input="hello\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot reach the bot" in result.stdout
