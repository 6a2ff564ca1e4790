"""The REST webhook with namespaced tracker keys and input limits at the edge.

``POST /webhooks/rest/webhook`` ``{"sender": str, "message": str, "metadata": {}}``
keeps Rasa's REST contract (``credentials.yml``:
``channels.rest.NamespacedRestInput:``), with these rules:

- **Tracker key.** Rasa sees the sender as ``rest:<sender>`` (``channels.keys``),
  so a REST client can never reach a Telegram, SMS, voice or e-mail
  conversation; the answers carry the client's own ``sender`` as
  ``recipient_id``. The sender must be a printable string of at most 128
  characters. The input channel is always ``rest`` (the body cannot choose).
- **Text.** Cleaned by ``channels.text.clean_text`` (no NUL or other control
  characters, lone surrogates -> U+FFFD). Text longer than
  ``CRM_MAX_MESSAGE_CHARS`` (default 4,000) is cut to that length: Rasa and the
  contact history get the cut text, and the answer starts with
  ``TOO_LONG_NOTICE``. The notice is not a bot event, so it is not recorded.
- **Metadata.** Only ``identity`` (the signed assertion) passes, and only if
  the metadata is at most ``CRM_MAX_METADATA_BYTES`` (default 2,048) of JSON
  nested at most 5 levels; otherwise it is dropped and the message still goes
  through. The channel adds ``client_ip`` (the TCP peer address; a
  ``X-Forwarded-For`` header is ignored), which the verification rate limits
  use per client.
- **Body.** At most ``CRM_MAX_REQUEST_BYTES`` (default 65,536; else 413); it must
  be a JSON object with a non-empty string ``message`` (else 400). Errors are
  JSON ``{"error": "..."}``; no customer text is logged.
- **Agent messages.** A REST client has no open connection, so what the agent
  console queued for ``rest:<sender>`` (agent replies, queue updates: the
  ``outbox``, ``crm_store.services.outbound``) rides along with the next
  answer: after the turn, the pending messages of the key are appended
  (``{"recipient_id", "text", "buttons"?, "author": "agent" | "system"}``,
  oldest first) and marked sent, each exactly once even for concurrent
  requests. One indexed query per request, in a worker thread; if the store
  fails the answer goes out without them and they stay pending. Rasa builds the
  channel with ``from_credentials``, which connects the store of the settings;
  a channel built without ``session_factory`` skips this step.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from asyncio import CancelledError, Queue
from collections.abc import Awaitable, Callable
from typing import Any

from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
from rasa.core.channels.rest import QueueOutputChannel, RestInput
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse, ResponseStream
from sqlalchemy.orm import sessionmaker

from channels.keys import InvalidSenderId, check_raw_id, tracker_key
from channels.text import clean_text, limited_metadata
from crm_settings import get_settings
from crm_store.db import retry_when_locked
from crm_store.db import session_factory as store_session_factory
from crm_store.services import outbound

try:  # what Sanic parses request.json with: handles 1,000-level nesting
    from ujson import loads as json_loads
except ImportError:  # pragma: no cover - ujson comes with Sanic
    from json import loads as json_loads

logger = logging.getLogger(__name__)

MAX_SENDER_CHARS = 128
CLIENT_IP_KEY = "client_ip"
TOO_LONG_NOTICE = (
    "Your message was very long, so I read only the first {limit:,} characters."
)
OnNewMessage = Callable[[UserMessage], Awaitable[Any]]


class BadRequest(ValueError):
    """A request the webhook refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        """Remember the message for the JSON error and the status."""
        super().__init__(message)
        self.status = status


def json_object(body: bytes | None, max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object: the one body rule of our JSON webhooks.

    Raises:
        BadRequest: larger than ``max_bytes`` (413), not JSON or not an object (400).
    """
    body = body or b""
    if len(body) > max_bytes:
        raise BadRequest(f"the request body is larger than {max_bytes} bytes", 413)
    try:
        payload = json_loads(body)
    except (ValueError, RecursionError, UnicodeDecodeError) as error:
        raise BadRequest("the request body must be a JSON object") from error
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object")
    return payload


def checked_text(message: object, max_chars: int) -> tuple[str, bool]:
    """Return ``(text, was_cut)``: cleaned, cut to ``max_chars``, never empty.

    The one text rule of the customer channels (REST, web chat).

    Raises:
        BadRequest: not a string, or no text left after cleaning.
    """
    if not isinstance(message, str):
        raise BadRequest("the message must be a string")
    text = clean_text(message)
    if not text.strip():
        raise BadRequest("the message must contain text")
    was_cut = len(text) > max_chars
    return (text[:max_chars] if was_cut else text), was_cut


class ClientRecipient:
    """Mixin for output channels: answers name the client's id, not the tracker key."""

    tracker_key: str = ""
    client_id: str = ""

    async def _persist_message(self, message: dict[str, Any]) -> None:
        if message.get("recipient_id") == self.tracker_key:
            message = {**message, "recipient_id": self.client_id}
        await super()._persist_message(message)  # type: ignore[misc]


class ClientCollectingOutput(ClientRecipient, CollectingOutputChannel):
    """Collects the answers of one request (non-streaming)."""


class ClientQueueOutput(ClientRecipient, QueueOutputChannel):
    """Queues the answers of one request (``?stream=true``)."""


def addressed(output: ClientRecipient, key: str, client_id: str) -> Any:
    """Tell ``output`` which tracker key to show as ``client_id``."""
    output.tracker_key, output.client_id = key, client_id
    return output


class NamespacedRestInput(RestInput):
    """Rasa's REST channel with tracker keys ``rest:<sender>`` and input limits."""

    def __init__(
        self,
        *,
        max_message_chars: int | None = None,
        max_metadata_bytes: int | None = None,
        max_request_bytes: int | None = None,
        session_factory: sessionmaker | None = None,
    ) -> None:
        """Take the limits from the settings unless given.

        ``session_factory``: the store whose pending agent messages are
        appended to the answers (None: none are).
        """
        self.session_factory = session_factory
        settings = get_settings()
        self.max_message_chars = max_message_chars or settings.max_message_chars
        self.max_metadata_bytes = (
            settings.max_metadata_bytes
            if max_metadata_bytes is None
            else max_metadata_bytes
        )
        self.max_request_bytes = max_request_bytes or settings.max_request_bytes

    @classmethod
    def name(cls) -> str:
        """``rest``: the webhook stays at ``/webhooks/rest/webhook``."""
        return "rest"

    @classmethod
    def from_credentials(
        cls, credentials: dict[str, Any] | None
    ) -> NamespacedRestInput:
        """No credentials: the limits and the store come from the settings."""
        settings = get_settings()
        return cls(
            session_factory=store_session_factory(
                settings.database_url, echo=settings.echo_sql
            )
        )

    def parse(self, request: Request) -> tuple[str, str, bool, dict[str, Any]]:
        """Return ``(sender, text, was_cut, metadata)`` of a webhook request.

        Raises:
            BadRequest: the body is too large, not a JSON object, or its sender
                or message is missing or invalid.
        """
        payload = json_object(request.body, self.max_request_bytes)
        try:
            sender = check_raw_id(payload.get("sender"), max_length=MAX_SENDER_CHARS)
        except InvalidSenderId as error:
            raise BadRequest(
                f"{error} (at most {MAX_SENDER_CHARS} printable characters)"
            ) from error
        text, was_cut = checked_text(payload.get("message"), self.max_message_chars)
        metadata = limited_metadata(
            payload.get("metadata"), max_bytes=self.max_metadata_bytes
        )
        metadata[CLIENT_IP_KEY] = request.ip
        return sender, text, was_cut, metadata

    def notices(self, sender: str, was_cut: bool) -> list[dict[str, Any]]:
        """The channel's own messages to put before the bot's answer."""
        if not was_cut:
            return []
        notice = TOO_LONG_NOTICE.format(limit=self.max_message_chars)
        return [{"recipient_id": sender, "text": notice}]

    def blueprint(self, on_new_message: OnNewMessage) -> Blueprint:
        """The health route and the webhook (see the module docstring)."""
        module = inspect.getmodule(self)
        webhook = Blueprint(
            f"custom_webhook_{type(self).__name__}",
            module.__name__ if module else None,
        )

        @webhook.route("/", methods=["GET"])
        async def health(request: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @webhook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> ResponseStream | HTTPResponse:
            try:
                sender, text, was_cut, metadata = self.parse(request)
            except BadRequest as error:
                return response.json({"error": str(error)}, status=error.status)
            key = tracker_key(self.name(), sender)
            notices = self.notices(sender, was_cut)
            if request.args.get("stream", "").lower() == "true":
                stream = self._streamer(
                    on_new_message, text, key, sender, metadata, notices
                )
                return response.stream(stream, content_type="text/event-stream")
            collector = addressed(ClientCollectingOutput(), key, sender)
            await self._handle(on_new_message, text, collector, key, metadata)
            queued = await self.queued_messages(key, sender)
            return response.json(notices + collector.messages + queued)

        return webhook

    async def _handle(
        self,
        on_new_message: OnNewMessage,
        text: str,
        output: Any,
        key: str,
        metadata: dict[str, Any],
    ) -> None:
        """Run the turn; failures are logged without the customer's text."""
        message = UserMessage(
            text, output, key, input_channel=self.name(), metadata=metadata
        )
        try:
            await on_new_message(message)
        except CancelledError:
            logger.error("rest: the turn of %s timed out", key)
        except Exception:  # noqa: BLE001 - Rasa's REST channel does the same
            logger.exception("rest: the turn of %s failed", key)

    async def queued_messages(self, key: str, sender: str) -> list[dict[str, Any]]:
        """Take the key's pending outbox messages as answers (see module docstring).

        Never raises: a store failure is logged (ids only) and gives ``[]``.
        """
        if self.session_factory is None:
            return []
        try:
            messages = await asyncio.to_thread(self._take_pending, key)
        except Exception:  # noqa: BLE001 - the bot's answer must still go out
            logger.exception("rest: pending agent messages of %s not read", key)
            return []
        answers = []
        for message in messages:
            answer: dict[str, Any] = {"recipient_id": sender, "text": message.text}
            if message.buttons:
                answer["buttons"] = message.buttons
            answer["author"] = message.author
            answers.append(answer)
        return answers

    def _take_pending(self, key: str) -> list[outbound.ConversationMessage]:
        """Read the pending messages and mark each sent; keep those this call won."""
        factory = self.session_factory
        assert factory is not None

        def attempt() -> list[outbound.ConversationMessage]:
            with factory() as session:
                pending = outbound.pending_messages(session, key)
                if not pending:
                    return []
                # One update per message: a concurrent request for the same
                # sender that marked it first keeps it (rowcount 0 here).
                taken = [m for m in pending if outbound.mark_sent(session, [m.id])]
                session.commit()
                return taken

        return retry_when_locked(attempt)

    def _streamer(
        self,
        on_new_message: OnNewMessage,
        text: str,
        key: str,
        sender: str,
        metadata: dict[str, Any],
        notices: list[dict[str, Any]],
    ) -> Callable[[Any], Awaitable[None]]:
        async def stream(resp: Any) -> None:
            messages: Queue = Queue()
            output = addressed(ClientQueueOutput(messages), key, sender)

            async def turn() -> None:
                await self._handle(on_new_message, text, output, key, metadata)
                await messages.put("DONE")

            task = asyncio.ensure_future(turn())
            for notice in notices:
                await resp.write(json.dumps(notice) + "\n")
            while (item := await messages.get()) != "DONE":
                await resp.write(json.dumps(item) + "\n")
            await task
            for item in await self.queued_messages(key, sender):
                await resp.write(json.dumps(item) + "\n")

        return stream
