"""Live views over server-sent events (a real uvicorn server), and /metrics."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import httpx
import pytest
from console_support import SCORED_CUSTOMER, Harness, LiveServer, read_events

METRIC_LINE = re.compile(
    r"^(# (HELP|TYPE) [a-z_]+ .+"
    r'|[a-z_]+(\{[a-z_]+="[^"]*"\})? (-?[0-9]+(\.[0-9]+)?|NaN))$'
)


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


@pytest.fixture(scope="module")
def server(harness: Harness) -> Iterator[LiveServer]:
    with LiveServer(harness.app) as live:
        yield live


@pytest.fixture(scope="module")
def http(harness: Harness, server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=8.0) as client:
        token = client.post(
            "/api/auth/token",
            json={"username": "agent", "password": "console-test-password"},
        ).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def test_queue_stream_pushes_a_new_handoff(
    harness: Harness, http: httpx.Client
) -> None:
    with http.stream("GET", "/events/queue") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "content-security-policy" in response.headers
        lines = response.iter_lines()
        first = read_events(lines, 1, event="queue")[0]
        assert 'id="waiting-title"' in first
        ref = harness.new_handoff(
            customer_id=SCORED_CUSTOMER, text="<b>late</b>", reason="complaint"
        )
        update = read_events(lines, 1, event="queue")[0]
    assert f'action="/handoffs/{ref.id}/claim"' in update
    assert "Test handoff: complaint" in update


def test_handoff_stream_pushes_messages_and_state(
    harness: Harness, http: httpx.Client
) -> None:
    ref = harness.new_handoff(customer_id=SCORED_CUSTOMER)
    detail = http.get(f"/api/handoffs/{ref.id}").json()
    assert detail["status"] == "waiting"
    transcript = http.get(f"/api/conversations/{ref.conversation_id}").json()
    last = transcript["messages"][-1]["id"]
    with http.stream("GET", f"/events/handoffs/{ref.id}?after={last}") as response:
        lines = response.iter_lines()
        state = json.loads(read_events(lines, 1, event="state")[0])
        assert state == {"status": "waiting", "claimed_by": None}
        harness.customer_says(ref, "<img src=x onerror=alert(1)> still there?")
        message = json.loads(read_events(lines, 1, event="message")[0])
        assert message["text"] == "<img src=x onerror=alert(1)> still there?"
        assert message["author"] == "customer" and message["id"] > last
        assert http.post(f"/api/handoffs/{ref.id}/claim").status_code == 200
        changed = json.loads(read_events(lines, 1, event="state")[0])
        assert changed["status"] == "claimed" and changed["claimed_by"] is not None
        http.post(f"/api/handoffs/{ref.id}/messages", json={"text": "On it."})
        agent = json.loads(read_events(lines, 1, event="message")[0])
        assert agent["author"] == "agent" and agent["text"] == "On it."
    # Reconnecting with Last-Event-ID resumes after what the browser saw.
    with http.stream(
        "GET",
        f"/events/handoffs/{ref.id}",
        headers={"Last-Event-ID": str(message["id"])},
    ) as response:
        lines = response.iter_lines()
        again = json.loads(read_events(lines, 1, event="message")[0])
        assert again["text"] == "On it."


def test_streams_end_when_the_server_stops() -> None:
    harness = Harness(seeded=False)
    try:
        with (
            LiveServer(harness.app) as live,
            httpx.Client(base_url=live.url, timeout=8.0) as client,
        ):
            token = harness.token(client, "agent")
            headers = {"Authorization": f"Bearer {token}"}
            with client.stream("GET", "/events/queue", headers=headers) as response:
                lines = response.iter_lines()
                read_events(lines, 1, event="queue")
                stopped = time.monotonic()
                live.server.should_exit = True
                for _ in lines:  # the server ends the stream
                    pass
                assert time.monotonic() - stopped < 3
    finally:
        harness.close()


def test_streams_need_a_session(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=5.0) as anonymous:
        assert anonymous.get("/events/queue").status_code == 401
        assert anonymous.get("/events/handoffs/1").status_code == 401


def test_unknown_handoff_stream_is_404(http: httpx.Client) -> None:
    assert http.get("/events/handoffs/987654").status_code == 404


def test_metrics(harness: Harness, http: httpx.Client) -> None:
    harness.new_handoff()
    answer = http.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = answer.text.strip().splitlines()
    bad = [line for line in lines if not METRIC_LINE.match(line)]
    assert bad == []
    values = {
        line.split(" ")[0]: line.split(" ")[1]
        for line in lines
        if not line.startswith("#")
    }
    assert int(values["crm_handoffs_waiting"]) >= 1
    assert float(values["crm_handoff_oldest_wait_seconds"]) >= 0
    assert values["crm_events_not_recorded"] == "-1"  # Rasa unreachable
    assert any(name.startswith('crm_messages_total{channel="chat"}') for name in values)
    for name in (
        "crm_handoffs_waiting",
        "crm_handoffs_claimed",
        "crm_handoff_oldest_wait_seconds",
        "crm_handoff_wait_seconds",
        "crm_messages_total",
        "crm_events_not_recorded",
    ):
        assert f"# TYPE {name} gauge" in lines
