"""Control routes of the Rasa server for the agent console (``/webhooks/control/``).

``credentials.yml``: ``channels.control.ControlInput:``. Every route requires
``Authorization: Bearer <control_token(CRM_CONSOLE_SECRET)>``
(``channels.chat_tokens``): no header -> 401, a wrong token -> 403, no secret
configured -> 503; nothing is done then. Bodies are JSON objects; a bad body
gets 400 ``{"error": ...}``. No message text is logged.

- ``POST push`` ``{"tracker_key", "messages": [{"text", "buttons"?, "author"?,
  "ref"?}]}`` -> ``{"delivered": bool}``: emits each message as ``bot_uttered``
  to the web chat room of a ``web:`` key (author ``agent`` (default),
  ``system`` or ``bot``). ``delivered`` says whether a socket of the session is
  connected here; other channels -> ``false`` (their outbox rows stay pending).
- ``POST pause`` ``{"tracker_key"}`` -> ``{"paused": true}``: appends Rasa's
  ``ConversationPaused`` under the lock store's lock (the bot stays silent;
  customer messages are still recorded).
- ``POST handback`` ``{"tracker_key"}`` -> ``{"resumed": true, "triggered":
  bool, "messages": [...]}``: appends ``ConversationResumed``, then triggers the
  intent ``handed_back`` as Rasa's ``trigger_intent`` does (when the domain has
  it). The answers of a ``web:`` key go to its room; those of other keys are
  collected and returned in ``messages``.
- ``GET stats`` -> ``{"lost_events": int | null}`` from the contact-history
  event broker (null when it has no such counter or no agent is loaded).
"""

from __future__ import annotations

import hmac
import inspect
import logging
from typing import Any

from rasa.core.channels.channel import (
    CollectingOutputChannel,
    InputChannel,
    OutputChannel,
)
from rasa.shared.core.events import ConversationPaused, ConversationResumed
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from channels.chat_tokens import control_token
from channels.keys import split_tracker_key
from channels.text import clean_text
from channels.webchat import AUTHORS, BOT_EVENT, TYPING_EVENT, chat_message
from crm_settings import get_settings

try:  # what Sanic parses request.json with
    from ujson import loads as json_loads
except ImportError:  # pragma: no cover - ujson comes with Sanic
    from json import loads as json_loads

logger = logging.getLogger(__name__)

HANDED_BACK_INTENT = "handed_back"
MAX_PUSH_MESSAGES = 50
MAX_TEXT_CHARS = 4000
MAX_REF_CHARS = 64


class ControlError(ValueError):
    """A control request refused with ``status`` and a JSON error."""

    def __init__(self, message: str, status: int = 400) -> None:
        """Remember the message and the HTTP status."""
        super().__init__(message)
        self.status = status


def error_response(error: ControlError) -> HTTPResponse:
    """The JSON error answer of ``error``."""
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return response.json({"error": str(error)}, status=error.status, headers=headers)


def check_bearer(header: str | None, expected: str | None) -> None:
    """Accept ``Bearer <expected>`` only.

    Raises:
        ControlError: 503 without a secret, 401 without a bearer token, 403 for a
            wrong one.
    """
    if expected is None:
        raise ControlError("the control API is off: CRM_CONSOLE_SECRET is not set", 503)
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ControlError("a bearer token is required", 401)
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise ControlError("the bearer token is not valid", 403)


def json_body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object.

    Raises:
        ControlError: not a JSON object.
    """
    try:
        payload = json_loads(request.body or b"")
    except (ValueError, RecursionError, UnicodeDecodeError) as error:
        raise ControlError("the request body must be a JSON object") from error
    if not isinstance(payload, dict):
        raise ControlError("the request body must be a JSON object")
    return payload


def checked_key(payload: dict[str, Any]) -> str:
    """The body's ``tracker_key``: a namespaced key such as ``web:<session>``.

    Raises:
        ControlError: missing or not namespaced.
    """
    key = payload.get("tracker_key")
    if (
        not isinstance(key, str)
        or len(key) > 255
        or not key.isprintable()
        or split_tracker_key(key) is None
    ):
        raise ControlError(
            "tracker_key must be a namespaced key such as web:<session> or rest:<id>"
        )
    return key


def checked_messages(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``messages`` of a push, as ``bot_uttered`` bodies.

    Raises:
        ControlError: not a list of 1..50 objects with text of 1..4000 characters
            and a known author.
    """
    messages = payload.get("messages")
    if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_PUSH_MESSAGES:
        raise ControlError(
            f"messages must be a list of 1 to {MAX_PUSH_MESSAGES} message objects"
        )
    checked = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ControlError(f"messages[{index}] must be an object")
        text = message.get("text")
        if not isinstance(text, str) or not clean_text(text).strip():
            raise ControlError(f"messages[{index}].text must be non-empty text")
        text = clean_text(text).strip()
        if len(text) > MAX_TEXT_CHARS:
            raise ControlError(
                f"messages[{index}].text is longer than {MAX_TEXT_CHARS} characters"
            )
        author = message.get("author", "agent")
        if author not in AUTHORS:
            raise ControlError(
                f"messages[{index}].author must be one of {', '.join(AUTHORS)}"
            )
        ref = message.get("ref")
        if ref is not None and (not isinstance(ref, str) or len(ref) > MAX_REF_CHARS):
            raise ControlError(f"messages[{index}].ref must be a short string")
        checked.append(
            chat_message(text, author=author, buttons=message.get("buttons"), ref=ref)
        )
    return checked


class ControlInput(InputChannel):
    """The console's control routes (see the module docstring)."""

    def __init__(self, *, secret: str | None = None) -> None:
        """The bearer token is derived from ``secret`` (default: the settings)."""
        if secret is None:
            configured = get_settings().console_secret
            secret = configured.get_secret_value() if configured else None
        self.token = control_token(secret) if secret else None
        if self.token is None:
            logger.warning("control: CRM_CONSOLE_SECRET is not set; routes answer 503")

    @classmethod
    def name(cls) -> str:
        """``control``: routes under ``/webhooks/control/``."""
        return "control"

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> ControlInput:
        """No credentials: the secret comes from the settings."""
        return cls()

    def blueprint(self, on_new_message: Any) -> Blueprint:
        """The control routes; ``on_new_message`` is not used."""
        module = inspect.getmodule(self)
        control = Blueprint(
            f"custom_webhook_{type(self).__name__}",
            module.__name__ if module else None,
        )

        @control.route("/push", methods=["POST"])
        async def push(request: Request) -> HTTPResponse:
            return await self._guarded(request, self._push)

        @control.route("/pause", methods=["POST"])
        async def pause(request: Request) -> HTTPResponse:
            return await self._guarded(request, self._pause)

        @control.route("/resume", methods=["POST"])
        async def resume(request: Request) -> HTTPResponse:
            return await self._guarded(request, self._resume)

        @control.route("/handback", methods=["POST"])
        async def handback(request: Request) -> HTTPResponse:
            return await self._guarded(request, self._handback)

        @control.route("/stats", methods=["GET"])
        async def stats(request: Request) -> HTTPResponse:
            return await self._guarded(request, self._stats)

        return control

    async def _guarded(self, request: Request, handler: Any) -> HTTPResponse:
        try:
            check_bearer(request.headers.get("Authorization"), self.token)
            return response.json(await handler(request))
        except ControlError as error:
            return error_response(error)

    async def _push(self, request: Request) -> dict[str, Any]:
        payload = json_body(request)
        key = checked_key(payload)
        messages = checked_messages(payload)
        sio = web_socket_server(request)
        if sio is None or split_tracker_key(key)[0] != "web":
            return {"delivered": False}
        for message in messages:
            await sio.emit(BOT_EVENT, message, room=key)
        delivered = any(True for _ in sio.manager.get_participants("/", key))
        return {"delivered": delivered}

    async def _pause(self, request: Request) -> dict[str, Any]:
        key = checked_key(json_body(request))
        agent = loaded_agent(request)
        async with agent.lock_store.lock(key):
            tracker = await agent.processor.fetch_tracker_with_initial_session(key)
            if not tracker.is_paused():
                tracker.update(ConversationPaused())
                await agent.tracker_store.save(tracker)
        return {"paused": True}

    async def _resume(self, request: Request) -> dict[str, Any]:
        """Un-pause without a bot turn (the agent resolved the conversation)."""
        key = checked_key(json_body(request))
        agent = loaded_agent(request)
        async with agent.lock_store.lock(key):
            tracker = await agent.processor.fetch_tracker_with_initial_session(key)
            if tracker.is_paused():
                tracker.update(ConversationResumed())
                await agent.tracker_store.save(tracker)
        return {"resumed": True}

    async def _handback(self, request: Request) -> dict[str, Any]:
        key = checked_key(json_body(request))
        agent = loaded_agent(request)
        output = output_for(request, key)
        sio = web_socket_server(request)
        typing = sio is not None and not isinstance(output, CollectingOutputChannel)
        triggered = HANDED_BACK_INTENT in agent.domain.intents
        async with agent.lock_store.lock(key):
            tracker = await agent.processor.fetch_tracker_and_update_session(key)
            tracker.update(ConversationResumed())
            if not triggered:
                logger.error("control: the domain has no intent %s", HANDED_BACK_INTENT)
                await agent.tracker_store.save(tracker)
            else:
                if typing:
                    await sio.emit(TYPING_EVENT, {"typing": True}, room=key)
                try:
                    await agent.trigger_intent(
                        intent_name=HANDED_BACK_INTENT,
                        entities=[],
                        output_channel=output,
                        tracker=tracker,
                    )
                except Exception as error:
                    logger.exception("control: the hand-back turn of %s failed", key)
                    await agent.tracker_store.save(tracker)  # stay resumed
                    raise ControlError("the hand-back turn failed", 500) from error
                finally:
                    if typing:
                        await sio.emit(TYPING_EVENT, {"typing": False}, room=key)
        collected = isinstance(output, CollectingOutputChannel)
        messages = output.messages if collected else []
        return {"resumed": True, "triggered": triggered, "messages": messages}

    async def _stats(self, request: Request) -> dict[str, Any]:
        agent = getattr(request.app.ctx, "agent", None)
        store = getattr(agent, "tracker_store", None)
        broker = getattr(store, "event_broker", None)
        lost = getattr(broker, "lost_events", None)
        return {"lost_events": lost if isinstance(lost, int) else None}


def loaded_agent(request: Request) -> Any:
    """Rasa's agent with a loaded model.

    Raises:
        ControlError: 503 while no model is loaded.
    """
    agent = getattr(request.app.ctx, "agent", None)
    if agent is None or not agent.is_ready():
        raise ControlError("the bot has no model loaded yet", 503)
    return agent


def _channel(request: Request, name: str) -> InputChannel | None:
    for channel in getattr(request.app.ctx, "input_channels", None) or []:
        if channel.name() == name:
            return channel
    return None


def web_socket_server(request: Request) -> Any:
    """The web chat's socket.io server, None when the channel is not registered."""
    return getattr(_channel(request, "web"), "sio", None)


def output_for(request: Request, key: str) -> OutputChannel:
    """The web room for ``web:`` keys, else a collecting output."""
    parts = split_tracker_key(key)
    channel = _channel(request, parts[0]) if parts and parts[0] == "web" else None
    output = channel.get_output_channel() if channel is not None else None
    return output or CollectingOutputChannel()
