"""The customer web chat: a socket.io input channel on the Rasa server.

``credentials.yml``: ``channels.webchat.WebChatInput:`` (no options; everything
comes from the settings). The console's ``GET /chat`` page connects with the
socket.io client to ``/socket.io/`` on the Rasa server's port.

- **Connect.** The client must send ``auth: {"token": <chat token>}``, a token
  the console signed (``channels.chat_tokens``, ``CRM_CONSOLE_SECRET``); a
  missing, forged or expired token is refused (``connect_error``
  ``unauthorized``). The session id comes from the token only, so a client can
  never choose its conversation: the socket joins the room ``web:<session>``,
  which is also the Rasa tracker key. Several tabs of one session share it.
- **Origins.** Only pages from ``CRM_CHAT_ORIGINS`` (comma-separated) may open
  a socket; unset: the console on ``http://localhost:CONSOLE_PORT`` and
  ``http://127.0.0.1:CONSOLE_PORT``. The socket server checks the ``Origin`` of
  every request (websocket and long polling) and answers CORS for its own
  route; Rasa's ``--cors`` (Sanic-CORS) is told to leave that route alone,
  since two ``Access-Control-Allow-Origin`` headers make browsers refuse the
  answer.
- **Customer messages.** Event ``user_uttered`` ``{"message": str}``: the REST
  text rules (``channels.rest.checked_text``: control characters removed, cut
  at ``CRM_MAX_MESSAGE_CHARS`` with a notice, never empty). Bad data gets the
  ack and a ``chat_error`` event ``{"error": ...}``; nothing reaches Rasa. The
  turn runs as ``UserMessage(text, output, "web:<session>", input_channel="web",
  metadata={"client_ip": ...})``; the token is checked again on every message.
- **Server events.** ``bot_typing`` ``{"typing": bool}`` around each turn;
  ``bot_uttered`` ``{"text", "buttons"?, "author"}`` with author ``bot`` (Rasa's
  answers), ``agent`` or ``system`` (pushed by the console through
  ``channels.control``); ``customer_uttered`` ``{"text"}`` to the session's
  other tabs.

One Rasa process keeps its sockets in memory: with several Rasa instances the
console's pushes must reach the instance holding the socket (sticky routing),
as with Rasa's own socket.io channel.
"""

from __future__ import annotations

import logging
from asyncio import CancelledError
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from rasa.core.channels.channel import InputChannel, OutputChannel, UserMessage
from sanic import Blueprint, Sanic, response
from sanic.request import Request
from sanic.response import HTTPResponse
from socketio import AsyncServer
from socketio.exceptions import ConnectionRefusedError as Refused

from channels.chat_tokens import InvalidChatToken, verify_chat_token
from channels.keys import tracker_key
from channels.rest import CLIENT_IP_KEY, TOO_LONG_NOTICE, BadRequest, checked_text
from crm_settings import Settings, get_settings

logger = logging.getLogger(__name__)

CHANNEL = "web"
USER_EVENT = "user_uttered"
BOT_EVENT = "bot_uttered"
TYPING_EVENT = "bot_typing"
ECHO_EVENT = "customer_uttered"
ERROR_EVENT = "chat_error"
UNAUTHORIZED = "unauthorized"
AUTHORS = ("bot", "agent", "system")
MAX_BUTTONS = 20
MAX_BUTTON_TITLE = 200
MAX_BUTTON_PAYLOAD = 1000
OnNewMessage = Callable[[UserMessage], Awaitable[Any]]
# Sanic-CORS skips requests whose context carries this attribute (what its
# own ``cross_origin`` decorator sets).
try:
    from sanic_cors.core import SANIC_CORS_EVALUATED as CORS_DONE
except ImportError:  # pragma: no cover - Sanic-CORS comes with Rasa
    CORS_DONE = "_sanic_cors_e"


class SocketBlueprint(Blueprint):
    """Routes ``/<path>/`` to the socket.io server, which answers its own CORS."""

    def __init__(self, sio: AsyncServer, path: str, *args: Any, **kwargs: Any) -> None:
        """Serve ``sio`` at ``path`` once registered on an app."""
        super().__init__(*args, **kwargs)
        self.ctx.sio = sio
        self.ctx.path = "/" + path.strip("/") + "/"

    def register(self, app: Sanic, options: dict[str, Any]) -> None:
        """Add the socket route (HTTP long polling and websocket) to ``app``."""
        sio: AsyncServer = self.ctx.sio

        async def socket_io(request: Request) -> Any:
            setattr(request.ctx, CORS_DONE, "1")
            return await sio.handle_request(request)

        app.add_route(
            socket_io,
            self.ctx.path,
            methods=["GET", "POST", "OPTIONS"],
            name=f"{self.name}_socket_io",
        )
        app.enable_websocket()
        super().register(app, options)


def chat_origins(settings: Settings) -> list[str] | str:
    """Origins allowed to open a socket: ``CRM_CHAT_ORIGINS`` or the console's.

    ``*`` (alone) allows every origin.
    """
    raw = (settings.chat_origins or "").strip()
    if raw == "*":
        return "*"
    origins = [o.strip().rstrip("/") for o in raw.split(",") if o.strip()]
    if origins:
        return origins
    port = settings.console_port
    return [f"http://localhost:{port}", f"http://127.0.0.1:{port}"]


def clean_buttons(buttons: object) -> list[dict[str, str]]:
    """Buttons as ``{"title", "payload"}`` strings only; malformed ones dropped."""
    if not isinstance(buttons, list):
        return []
    kept = []
    for button in buttons[:MAX_BUTTONS]:
        if not isinstance(button, dict):
            continue
        title, payload = button.get("title"), button.get("payload")
        if not isinstance(title, str) or not title.strip():
            continue
        if not isinstance(payload, str) or not payload:
            payload = title
        kept.append(
            {"title": title[:MAX_BUTTON_TITLE], "payload": payload[:MAX_BUTTON_PAYLOAD]}
        )
    return kept


def chat_message(
    text: str | None, *, author: str = "bot", buttons: object = None, **extra: Any
) -> dict[str, Any]:
    """One ``bot_uttered`` event body."""
    message: dict[str, Any] = {"text": text or "", "author": author}
    cleaned = clean_buttons(buttons)
    if cleaned:
        message["buttons"] = cleaned
    message.update({k: v for k, v in extra.items() if v is not None})
    return message


class WebChatOutput(OutputChannel):
    """Sends the bot's answers to a session's room (the room is the tracker key)."""

    @classmethod
    def name(cls) -> str:
        """``web``."""
        return CHANNEL

    def __init__(self, sio: AsyncServer) -> None:
        """Emit through ``sio``."""
        self.sio = sio

    async def emit(self, recipient_id: str, message: dict[str, Any]) -> None:
        """Emit one ``bot_uttered`` event to the room ``recipient_id``."""
        await self.sio.emit(BOT_EVENT, message, room=recipient_id)

    async def send_text_message(
        self, recipient_id: str, text: str, **kwargs: Any
    ) -> None:
        """A text answer."""
        await self.emit(recipient_id, chat_message(text))

    async def send_text_with_buttons(
        self,
        recipient_id: str,
        text: str,
        buttons: list[dict[str, Any]],
        **kwargs: Any,
    ) -> None:
        """A text answer with buttons (``title`` shown, ``payload`` sent back)."""
        await self.emit(recipient_id, chat_message(text, buttons=buttons))

    async def send_image_url(
        self, recipient_id: str, image: str, **kwargs: Any
    ) -> None:
        """An image, sent as its URL."""
        await self.emit(recipient_id, chat_message(None, image=image))

    async def send_attachment(  # type: ignore[override]
        self, recipient_id: str, attachment: Any, **kwargs: Any
    ) -> None:
        """An attachment, passed as is under ``attachment``."""
        await self.emit(recipient_id, chat_message(None, attachment=attachment))

    async def send_custom_json(
        self, recipient_id: str, json_message: dict[str, Any], **kwargs: Any
    ) -> None:
        """Custom JSON, passed as is under ``custom``."""
        await self.emit(recipient_id, chat_message(None, custom=json_message))


class WebChatInput(InputChannel):
    """The web chat socket (see the module docstring)."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        origins: Iterable[str] | str | None = None,
        max_message_chars: int | None = None,
        max_request_bytes: int | None = None,
        socketio_path: str = "/socket.io",
    ) -> None:
        """Take the secret, origins and limits from the settings unless given."""
        settings = get_settings()
        if secret is None and settings.console_secret is not None:
            secret = settings.console_secret.get_secret_value()
        self.secret = secret
        if origins is None:
            origins = chat_origins(settings)
        self.origins = origins if isinstance(origins, str) else list(origins)
        self.max_message_chars = max_message_chars or settings.max_message_chars
        self.max_request_bytes = max_request_bytes or settings.max_request_bytes
        self.socketio_path = socketio_path
        self.sio: AsyncServer | None = None
        if self.secret is None:
            logger.warning(
                "web chat: CRM_CONSOLE_SECRET is not set; every socket is refused"
            )

    @classmethod
    def name(cls) -> str:
        """``web``: tracker keys ``web:<session>``, health at ``/webhooks/web/``."""
        return CHANNEL

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> WebChatInput:
        """No credentials: everything comes from the settings."""
        return cls()

    def get_output_channel(self) -> OutputChannel | None:
        """The socket output (for hand-back turns), once the blueprint exists."""
        return WebChatOutput(self.sio) if self.sio is not None else None

    def session_of(self, auth: object) -> str:
        """The session id of a connect ``auth`` object.

        Raises:
            InvalidChatToken: no secret configured, no token, or a bad token.
        """
        if self.secret is None:
            raise InvalidChatToken("the web chat is not configured")
        token = auth.get("token") if isinstance(auth, dict) else None
        return verify_chat_token(self.secret, token)

    def parse(self, data: object) -> tuple[str, bool]:
        """Return ``(text, was_cut)`` of a ``user_uttered`` event.

        Raises:
            BadRequest: not an object with a string ``message`` holding text.
        """
        if not isinstance(data, dict):
            raise BadRequest('the event data must be an object {"message": text}')
        return checked_text(data.get("message"), self.max_message_chars)

    def blueprint(self, on_new_message: OnNewMessage) -> Blueprint:
        """The socket.io server (attached at ``/socket.io/``) and a health route."""
        sio = AsyncServer(
            async_mode="sanic",
            cors_allowed_origins=self.origins,
            max_http_buffer_size=self.max_request_bytes,
            logger=False,
            engineio_logger=False,
        )
        self.sio = sio
        webhook = SocketBlueprint(sio, self.socketio_path, "web_chat_webhook", __name__)

        @webhook.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @sio.on("connect")
        async def connect(sid: str, environ: dict[str, Any], auth: Any) -> bool:
            try:
                session_id = self.session_of(auth)
            except InvalidChatToken as error:
                logger.info("web chat: refused a socket (%s)", error)
                raise Refused(UNAUTHORIZED) from None
            request = environ.get("sanic.request")
            key = tracker_key(CHANNEL, session_id)
            await sio.save_session(
                sid,
                {
                    "key": key,
                    "token": auth["token"],
                    "ip": getattr(request, "ip", None),
                },
            )
            await sio.enter_room(sid, key)
            return True

        @sio.on(USER_EVENT)
        async def user_uttered(sid: str, data: Any = None) -> dict[str, Any]:
            return await self._receive(sio, on_new_message, sid, data)

        return webhook

    async def _receive(
        self, sio: AsyncServer, on_new_message: OnNewMessage, sid: str, data: Any
    ) -> dict[str, Any]:
        """Handle one customer message; the return value is the client's ack."""
        session = await sio.get_session(sid)
        try:
            self.session_of({"token": session.get("token")})
        except InvalidChatToken:
            await sio.emit(ERROR_EVENT, {"error": UNAUTHORIZED}, to=sid)
            await sio.disconnect(sid)
            return {"error": UNAUTHORIZED}
        try:
            text, was_cut = self.parse(data)
        except BadRequest as error:
            await sio.emit(ERROR_EVENT, {"error": str(error)}, to=sid)
            return {"error": str(error)}
        key = session["key"]
        await sio.emit(ECHO_EVENT, {"text": text}, room=key, skip_sid=sid)
        if was_cut:
            notice = TOO_LONG_NOTICE.format(limit=self.max_message_chars)
            await sio.emit(BOT_EVENT, chat_message(notice, author="system"), to=sid)
        message = UserMessage(
            text,
            WebChatOutput(sio),
            key,
            input_channel=CHANNEL,
            metadata={CLIENT_IP_KEY: session.get("ip")},
        )
        await sio.emit(TYPING_EVENT, {"typing": True}, room=key)
        try:
            await on_new_message(message)
        except CancelledError:
            logger.error("web chat: the turn of %s timed out", key)
        except Exception:  # noqa: BLE001 - as the REST channel
            logger.exception("web chat: the turn of %s failed", key)
        finally:
            await sio.emit(TYPING_EVENT, {"typing": False}, room=key)
        return {"ok": True, "cut": was_cut}
