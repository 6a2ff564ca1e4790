"""`crm run` supervises all processes (e-mail included); Ctrl-C stops them all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from crm_store.db import make_engine, make_session_factory
from crm_store.services.history import latest_conversation
from crm_store.services.interactions import transcript
from runtime.processes import free_port, smtp_ok, wait_until_ready

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_crm_run_serves_the_bot_and_stops_everything_on_ctrl_c(
    tmp_path: Path,
) -> None:
    rasa_port, action_port, console_port = free_port(), free_port(), free_port()
    smtp_port = free_port()
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    unset = (
        "CRM_DEMO_PASSWORD",
        "TELEGRAM_BOT_TOKEN",
        "SMTP_RELAY_HOST",
        "TWILIO_ACCOUNT_SID",
    )
    env = {
        **{k: v for k, v in os.environ.items() if k not in unset},
        "CONSOLE_PORT": str(console_port),
        "SMTP_PORT": str(smtp_port),
        "CRM_DATABASE_URL": url,
        "RASA_PORT": str(rasa_port),
        "ACTION_PORT": str(action_port),
        "RASA_INTERFACE": "127.0.0.1",
    }
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "run"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    sender = f"e2e-run-{uuid.uuid4().hex[:8]}"
    try:
        ready = wait_until_ready(
            f"http://127.0.0.1:{rasa_port}/",
            timeout=300,
            alive=lambda: proc.poll() is None,
        )
        assert ready, (tmp_path / "run.log").read_text()[-3000:]
        assert wait_until_ready(f"http://127.0.0.1:{action_port}/health", timeout=60)
        replies = requests.post(
            f"http://127.0.0.1:{rasa_port}/webhooks/rest/webhook",
            json={"sender": sender, "message": "hello"},
            timeout=30,
        ).json()
        assert replies
        console = f"http://127.0.0.1:{console_port}"
        assert wait_until_ready(f"{console}/healthz", timeout=60)
        # The generated demo password is printed once, with the console's URL.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            output = (tmp_path / "run.log").read_text()
            found = re.search(r"demo accounts: .*password (\S+)", output)
            if found:
                break
            time.sleep(0.5)
        assert found, output[-3000:]
        assert f"console ready: {console}/" in output
        # One line per optional channel: Telegram off, the SMTP listener on.
        assert "telegram: off (set TELEGRAM_BOT_TOKEN" in output
        assert f"email: SMTP listener on 127.0.0.1:{smtp_port}" in output
        assert "replies wait in the outbox" in output
        assert "twilio: off (set TWILIO_ACCOUNT_SID" in output
        assert smtp_ok(f"smtp://127.0.0.1:{smtp_port}")
        token = requests.post(
            f"{console}/api/auth/token",
            json={"username": "manager", "password": found.group(1)},
            timeout=10,
        )
        assert token.status_code == 200, token.text
        assert token.json()["access_token"]
    finally:
        # Ctrl-C in a terminal signals the whole foreground process group.
        os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            log.close()
    output = (tmp_path / "run.log").read_text()
    assert code == 0, output[-3000:]
    assert "stopped" in output
    # Nothing of the supervised servers is left listening.
    time.sleep(0.5)
    for port in (rasa_port, action_port, console_port):
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/", timeout=2)
    assert not smtp_ok(f"smtp://127.0.0.1:{smtp_port}")
    # The turn was flushed to the contact history before the broker closed.
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        latest = latest_conversation(session, tracker_key=f"rest:{sender}")
        rows = [] if latest is None else transcript(session, conversation_id=latest.id)
    engine.dispose()
    assert [r.direction for r in rows][:1] == ["in"]
    assert len(rows) == 1 + len(replies)
