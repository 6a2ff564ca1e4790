"""The console's small parts: canned replies file, JSON values, CSP origins, texts."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from console.auth import safe_next
from console.canned import DEFAULT_PATH, load_canned_replies
from console.events import sse
from console.jsonout import plain
from console.render import duration
from console.security import socket_origins
from console.workflow import position_text
from crm_settings import Settings
from crm_store.errors import InvalidInput


def test_the_shipped_canned_replies_load() -> None:
    replies = load_canned_replies()
    assert DEFAULT_PATH.exists() and len(replies) >= 3
    assert len({r.id for r in replies}) == len(replies)
    assert all(r.title and r.text for r in replies)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("replies: [", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping with a 'replies' list"),
        ("replies:\n  - id: Bad Id\n    title: t\n    text: x\n", "id must match"),
        ("replies:\n  - id: a\n    title: ''\n    text: x\n", "title must be"),
        ("replies:\n  - id: a\n    title: t\n", "text must be"),
        (
            "replies:\n  - id: a\n    title: t\n    text: x\n    html: y\n",
            "unknown keys",
        ),
        (
            "replies:\n  - {id: a, title: t, text: x}\n"
            "  - {id: a, title: u, text: y}\n",
            "duplicate reply ids ['a']",
        ),
    ],
)
def test_bad_canned_replies_files_say_what_is_wrong(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "canned.yml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(
        InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")
    ):
        load_canned_replies(path)


def test_a_missing_explicit_canned_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not found"):
        load_canned_replies(tmp_path / "missing.yml")


def test_plain_json_values() -> None:
    @dataclass(frozen=True)
    class Row:
        when: dt.datetime
        money: Decimal
        wait: dt.timedelta
        items: list

    value = plain(
        Row(
            dt.datetime(2026, 11, 1, 12, 0),
            Decimal("10.50"),
            dt.timedelta(minutes=2),
            [1],
        )
    )
    assert value == {
        "when": "2026-11-01T12:00:00Z",
        "money": "10.50",
        "wait": 120.0,
        "items": [1],
    }


def test_socket_origins() -> None:
    settings = Settings(rasa_port=5005, chat_socket_url=None)
    assert socket_origins(settings, "http", "console.local:8000") == [
        "http://console.local:5005",
        "ws://console.local:5005",
    ]
    assert socket_origins(settings, "https", "[::1]:8000") == [
        "https://[::1]:5005",
        "wss://[::1]:5005",
    ]
    # A hostile Host header cannot inject into the policy.
    assert socket_origins(settings, "http", "x; script-src *") == [
        "http://127.0.0.1:5005",
        "ws://127.0.0.1:5005",
    ]
    chat = Settings(chat_socket_url="https://chat.example.com")
    assert socket_origins(chat, "http", "whatever") == [
        "https://chat.example.com",
        "wss://chat.example.com",
    ]


def test_server_sent_event_format() -> None:
    assert sse("queue", "<p>a</p>\n<p>b</p>") == (
        "event: queue\ndata: <p>a</p>\ndata: <p>b</p>\n\n"
    )
    assert sse("message", "{}", 7) == "id: 7\nevent: message\ndata: {}\n\n"


def test_texts_for_people() -> None:
    assert duration(42) == "42 s" and duration(600) == "10 min"
    assert duration(3 * 3600 + 300) == "3 h 5 min" and duration(3 * 86400) == "3 d"
    assert position_text(1, dt.timedelta(minutes=6)) == (
        "Good news: you're next in line for a member of our team "
        "(expected wait: about 6 minutes)."
    )
    assert position_text(3, dt.timedelta(seconds=20)) == (
        "Update: you're now number 3 in the queue (expected wait: about a minute)."
    )


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/customers?q=okafor", "/customers?q=okafor"),
        ("/handoffs/3#reply", "/handoffs/3#reply"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("/\t/evil.example", "/"),
        ("/ok\n", "/"),
        ("https://evil.example/", "/"),
        (None, "/"),
    ],
)
def test_only_local_paths_after_login(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected
