"""Cheaper action calls: same validation verdicts, one pooled connection."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from aiohttp import web
from jsonschema import ValidationError, validate
from rasa.core.actions.action import RemoteAction
from rasa.utils.endpoints import ClientResponseError, EndpointConfig

from bot.patches.action_calls import _validate_action_result, install_cached_validation
from bot.server import FALLBACK_MARK, FallbackActionEndpoint

VALID: list[dict[str, Any]] = [
    {"events": [], "responses": []},
    {
        "events": [
            {"event": "slot", "name": "customer_id", "value": 7, "timestamp": None},
            {"event": "active_loop", "name": None},
            {"event": "followup", "name": "action_listen"},
        ],
        "responses": [{"response": "utter_greet_known", "name": "Ada"}],
    },
    {"responses": [{"text": "hi", "buttons": [{"title": "a", "payload": "b"}]}]},
]
INVALID: list[dict[str, Any]] = [
    {"events": "not a list"},
    {"events": [{"event": "slot"}]},  # slot event without a name
    {"events": [{"event": "no_such_event"}]},
    {"responses": "hello"},
    {"events": [{"name": "customer_id"}]},  # no event type
]


@pytest.mark.parametrize("result", VALID)
def test_cached_validation_accepts_what_rasa_accepts(result: dict[str, Any]) -> None:
    validate(result, RemoteAction.action_response_format_spec())
    assert _validate_action_result(None, copy.deepcopy(result)) is True


@pytest.mark.parametrize("result", INVALID)
def test_cached_validation_rejects_what_rasa_rejects(result: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as stock:
        validate(result, RemoteAction.action_response_format_spec())
    with pytest.raises(ValidationError) as ours:
        _validate_action_result(None, copy.deepcopy(result))
    assert ours.value.message.startswith(stock.value.message)
    assert "Failed to validate Action server response" in ours.value.message


def test_install_replaces_the_remote_action_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # monkeypatch puts Rasa's own method back after the test
    monkeypatch.setattr(
        RemoteAction, "_validate_action_result", RemoteAction._validate_action_result
    )
    install_cached_validation()
    install_cached_validation()  # idempotent
    assert RemoteAction._validate_action_result is _validate_action_result
    action = RemoteAction("action_greet", EndpointConfig("http://127.0.0.1:1"))
    assert action._validate_action_result({"events": [], "responses": []})
    with pytest.raises(ValidationError):
        action._validate_action_result({"events": "nope"})


async def _serve(handler: Any) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_post("/webhook", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


def test_action_calls_reuse_one_connection() -> None:
    async def scenario() -> tuple[set[Any], list[Any]]:
        peers: set[Any] = set()

        async def handler(request: web.Request) -> web.Response:
            peers.add(request.transport.get_extra_info("peername"))
            body = await request.json()
            return web.json_response({"events": [], "responses": [body["n"]]})

        runner, port = await _serve(handler)
        endpoint = FallbackActionEndpoint.wrap(
            EndpointConfig(f"http://127.0.0.1:{port}/webhook"), action_timeout=5.0
        )
        try:
            answers = [
                (await endpoint.request(json={"n": {"text": str(i)}}))["responses"]
                for i in range(6)
            ]
        finally:
            await endpoint.pool.close()
            await runner.cleanup()
        return peers, answers

    peers, answers = asyncio.run(scenario())
    assert answers == [[{"text": str(i)}] for i in range(6)]
    assert len(peers) == 1, f"expected one keep-alive connection, saw {peers}"


def test_pooled_endpoint_still_answers_with_fallback_when_server_is_gone() -> None:
    async def scenario() -> dict[str, Any]:
        async def handler(request: web.Request) -> web.Response:
            return web.json_response({"events": [], "responses": []})

        runner, port = await _serve(handler)
        endpoint = FallbackActionEndpoint.wrap(
            EndpointConfig(f"http://127.0.0.1:{port}/webhook"), action_timeout=2.0
        )
        body = {"next_action": "action_greet", "sender_id": "s1"}
        try:
            await endpoint.request(json=body)  # opens the pooled connection
            await runner.cleanup()  # the action server goes away
            return await endpoint.request(json=body)
        finally:
            await endpoint.pool.close()

    result = asyncio.run(scenario())
    assert result["responses"][0]["fallback"] == FALLBACK_MARK


TOKEN = "t0ken-" + "9" * 40


def _call_with_status(status: int, token: str | None = TOKEN) -> tuple[Any, list[Any]]:
    """One action call against a server answering ``status``; (result, headers)."""

    async def scenario() -> tuple[Any, list[Any]]:
        seen: list[Any] = []

        async def handler(request: web.Request) -> web.Response:
            seen.append(request.headers.get("Authorization"))
            if status == 200:
                return web.json_response({"events": [], "responses": []})
            return web.json_response({"error": "unauthorized"}, status=status)

        runner, port = await _serve(handler)
        endpoint = FallbackActionEndpoint.wrap(
            EndpointConfig(f"http://127.0.0.1:{port}/webhook"),
            action_timeout=2.0,
            auth_token=token,
        )
        body = {"next_action": "action_list_orders", "sender_id": "s-auth"}
        try:
            return await endpoint.request(json=body), seen
        finally:
            await endpoint.pool.close()
            await runner.cleanup()

    return asyncio.run(scenario())


def test_every_action_call_carries_the_token() -> None:
    result, seen = _call_with_status(200)
    assert result == {"events": [], "responses": []}
    assert seen == [f"Bearer {TOKEN}"]


def test_no_token_configured_sends_no_authorization_header() -> None:
    _result, seen = _call_with_status(200, token=None)
    assert seen == [None]


@pytest.mark.parametrize("status", [401, 403])
def test_refused_token_is_an_outage_and_the_token_is_not_logged(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("ERROR", logger="bot.server"):
        result, _seen = _call_with_status(status)
    assert result["responses"][0]["fallback"] == FALLBACK_MARK
    assert result["events"] == [
        {"event": "active_loop", "name": None},
        {"event": "slot", "name": "human_offered", "value": True},
        {"event": "slot", "name": "handoff_reason", "value": "action_failure"},
    ]
    # What Rasa accepts from an action server, so the offer slots are applied.
    validate(result, RemoteAction.action_response_format_spec())
    assert f"HTTP {status}" in caplog.text and "action_list_orders" in caplog.text
    assert TOKEN not in caplog.text


def test_other_client_errors_keep_rasas_handling() -> None:
    with pytest.raises(ClientResponseError) as error:
        _call_with_status(404)
    assert error.value.status == 404
