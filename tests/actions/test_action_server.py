"""The guarded action server: token check, no start without a token, token file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from actions.server import NO_TOKEN_EXIT, bearer_matches
from runtime.processes import process_env
from runtime.supervisor import stored_action_token

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "a" * 64


def test_the_right_bearer_token_matches() -> None:
    assert bearer_matches(f"Bearer {TOKEN}", TOKEN.encode())
    assert bearer_matches(f"bearer {TOKEN}", TOKEN.encode())


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}b",
        f"Bearer {'b' * 64}",
        f"Basic {TOKEN}",
        TOKEN,
        f"Bearer {TOKEN[:-1]}\u00fc",
        f"Bearer \ud800{TOKEN}",
    ],
)
def test_anything_else_does_not(header: str | None) -> None:
    assert not bearer_matches(header, TOKEN.encode())


def run_action_server(token: str | None) -> subprocess.CompletedProcess[str]:
    env = process_env(database_url="sqlite://")
    env.pop("CRM_ACTION_TOKEN", None)
    if token is not None:
        env["CRM_ACTION_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "actions.server", "--port", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_refuses_to_start_without_a_token() -> None:
    result = run_action_server(None)
    assert result.returncode == NO_TOKEN_EXIT
    assert "CRM_ACTION_TOKEN is not set" in result.stderr


def test_refuses_a_short_token_without_showing_it() -> None:
    result = run_action_server("short-secret-XYZ")
    assert result.returncode == 2
    assert "CRM_ACTION_TOKEN=(hidden)" in result.stderr
    assert "short-secret-XYZ" not in result.stderr + result.stdout


def test_token_file_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "var" / "action-token"
    first = stored_action_token(path)
    assert len(first) == 64 and int(first, 16) >= 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stored_action_token(path) == first


@pytest.mark.parametrize(
    ("content", "mode"), [("x" * 64, 0o644), ("short", 0o600), ("", 0o600)]
)
def test_a_readable_or_weak_token_file_is_replaced(
    tmp_path: Path, content: str, mode: int
) -> None:
    path = tmp_path / "action-token"
    path.write_text(content)
    os.chmod(path, mode)
    token = stored_action_token(path)
    assert token != content and len(token) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == token
