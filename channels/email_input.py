"""The Rasa server's internal e-mail route: one inbound mail -> one dialogue turn.

``credentials.yml``: ``channels.email_input.EmailInput:``. The SMTP listener
(``python -m channels.email``, its own process) parses the mail, places it in
its thread and calls ``POST /webhooks/email/webhook`` here to run the turn; it
then queues one reply mail with the answers. Nothing here sends mail.

- **Auth.** ``Authorization: Bearer <email_ingress_token(CRM_CONSOLE_SECRET)>``
  (``channels.chat_tokens``), compared in constant time before the body is
  read: a missing or wrong token -> 403 ``{"error": "forbidden"}``; no console
  secret configured -> 503.
- **Body.** At most ``CRM_MAX_REQUEST_BYTES`` (else 413), a JSON object
  ``{"thread_key": "<address>#<thread>", "text": str, "message_id": str,
  "metadata": {"subject": str, "attachments": [{"filename", "content_type",
  "size"}]}}``; anything malformed -> 400 ``{"error": ...}``. ``thread_key``
  must make a valid ``tracker_key("email", thread_key)``; the text follows the
  channels' one rule (``channels.rest.checked_text``: cleaned, cut to
  ``CRM_MAX_MESSAGE_CHARS``). Only ``subject`` (<= 200 characters) and
  ``attachments`` (<= 20 entries; listed, never stored) of the metadata reach
  Rasa; other keys are dropped. The Message-ID (cut to 255) becomes the
  ``UserMessage``'s id.
- **Answer.** 200 ``{"messages": [{"text", "buttons"?}], "cut": bool}``: the
  bot's collected messages (an image or attachment becomes its URL as text,
  custom payloads are skipped; buttons keep ``title`` (cut to 80) and
  ``payload`` (<= 200), at most 10). When the text was cut, ``TOO_LONG_NOTICE``
  is the first message. A failing turn -> 500 ``{"error": "the turn failed"}``
  (logged with ids only), so the listener answers the sending server 451 and
  the mail comes again later.

The sender address is the channel identity: identified, not verified.
"""

from __future__ import annotations

import hmac
import inspect
import logging
from asyncio import CancelledError
from collections.abc import Awaitable, Callable
from typing import Any

from rasa.core.channels.channel import (
    CollectingOutputChannel,
    InputChannel,
    UserMessage,
)
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from channels.chat_tokens import email_ingress_token
from channels.keys import InvalidSenderId, tracker_key
from channels.rest import TOO_LONG_NOTICE, BadRequest, checked_text, json_object
from channels.text import clean_text
from crm_settings import get_settings
from crm_store.services.email_threads import split_thread_key
from crm_store.services.normalize import mask

logger = logging.getLogger(__name__)

CHANNEL = "email"
MAX_MESSAGE_ID = 255
MAX_SUBJECT = 200
MAX_ATTACHMENTS = 20
MAX_ATTACHMENT_FIELD = 255
MAX_BUTTONS = 10
MAX_BUTTON_TITLE = 80
MAX_BUTTON_PAYLOAD = 200
ATTACHMENT_FIELDS = ("filename", "content_type", "size")
OnNewMessage = Callable[[UserMessage], Awaitable[Any]]


def masked_thread(thread_key: str) -> str:
    """A thread key for logs: ``a***@example.com#<thread id>``."""
    address, thread = split_thread_key(thread_key)
    return f"{mask('email', address)}#{thread or '-'}"


def _attachment(index: int, item: object) -> dict[str, Any]:
    if not isinstance(item, dict) or set(item) - set(ATTACHMENT_FIELDS):
        raise BadRequest(
            f"metadata.attachments[{index}] must be an object with "
            "filename, content_type and size"
        )
    checked: dict[str, Any] = {}
    for name in ("filename", "content_type"):
        value = item.get(name)
        if value is not None and (
            not isinstance(value, str) or len(value) > MAX_ATTACHMENT_FIELD
        ):
            raise BadRequest(
                f"metadata.attachments[{index}].{name} must be a string of at most "
                f"{MAX_ATTACHMENT_FIELD} characters"
            )
        checked[name] = clean_text(value) if value is not None else None
    size = item.get("size")
    if size is not None and (
        isinstance(size, bool) or not isinstance(size, int) or size < 0
    ):
        raise BadRequest(
            f"metadata.attachments[{index}].size must be a non-negative integer"
        )
    checked["size"] = size
    return checked


def checked_metadata(raw: object) -> dict[str, Any]:
    """The metadata that reaches Rasa: ``subject`` and ``attachments`` only.

    Raises:
        BadRequest: not an object, a subject that is not a string of at most 200
            characters, or attachments that are not a list of at most 20 objects
            with only filename, content_type (strings) and size (int >= 0).
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRequest("metadata must be an object")
    metadata: dict[str, Any] = {}
    subject = raw.get("subject")
    if subject is not None:
        if not isinstance(subject, str) or len(subject) > MAX_SUBJECT:
            raise BadRequest(
                f"metadata.subject must be a string of at most {MAX_SUBJECT} characters"
            )
        metadata["subject"] = clean_text(subject)
    attachments = raw.get("attachments")
    if attachments is not None:
        if not isinstance(attachments, list) or len(attachments) > MAX_ATTACHMENTS:
            raise BadRequest(
                f"metadata.attachments must be a list of at most {MAX_ATTACHMENTS}"
            )
        metadata["attachments"] = [
            _attachment(i, item) for i, item in enumerate(attachments)
        ]
    return metadata


def checked_thread_key(raw: object) -> str:
    """The body's ``thread_key`` (``<address>#<thread>``), valid as a tracker id.

    Raises:
        BadRequest: not a printable string of at most 248 characters with an
            address and a thread id.
    """
    if not isinstance(raw, str):
        raise BadRequest("thread_key must be a string <address>#<thread>")
    address, thread = split_thread_key(raw)
    if thread is None or "@" not in address:
        raise BadRequest("thread_key must be <address>#<thread>")
    try:
        tracker_key(CHANNEL, raw)
    except InvalidSenderId as error:
        raise BadRequest(f"thread_key: {error}") from error
    return raw


def checked_message_id(raw: object) -> str:
    """The body's ``message_id``, cleaned and cut to 255 characters.

    Raises:
        BadRequest: not a non-empty string.
    """
    if not isinstance(raw, str) or not clean_text(raw).strip():
        raise BadRequest("message_id must be a non-empty string")
    return clean_text(raw).strip()[:MAX_MESSAGE_ID]


def answer_buttons(buttons: object) -> list[dict[str, str]]:
    """Rasa buttons as ``{"title", "payload"}`` the outbox accepts (see module)."""
    if not isinstance(buttons, list):
        return []
    kept = []
    for button in buttons:
        if not isinstance(button, dict):
            continue
        title, payload = button.get("title"), button.get("payload")
        if not isinstance(title, str) or not isinstance(payload, str):
            continue
        title, payload = title.strip()[:MAX_BUTTON_TITLE], payload.strip()
        if title and payload and len(payload) <= MAX_BUTTON_PAYLOAD:
            kept.append({"title": title, "payload": payload})
    return kept[:MAX_BUTTONS]


def answer_messages(collected: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The collected bot messages as ``{"text", "buttons"?}`` (see module)."""
    answers = []
    for message in collected:
        text = message.get("text")
        if not isinstance(text, str) or not text.strip():
            text = message.get("image") or message.get("attachment")
        text = text.strip() if isinstance(text, str) else ""
        buttons = answer_buttons(message.get("buttons"))
        if not text and not buttons:
            continue
        answer: dict[str, Any] = {"text": text}
        if buttons:
            answer["buttons"] = buttons
        answers.append(answer)
    return answers


class EmailInput(InputChannel):
    """The internal e-mail turn route (see the module docstring)."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        max_message_chars: int | None = None,
        max_request_bytes: int | None = None,
    ) -> None:
        """Take the secret and the limits from the settings unless given.

        ``secret=""`` means no secret: the route answers 503.
        """
        settings = get_settings()
        if secret is None:
            configured = settings.console_secret
            secret = configured.get_secret_value() if configured else None
        self.token = email_ingress_token(secret) if secret else None
        if self.token is None:
            logger.warning("email: CRM_CONSOLE_SECRET is not set; route answers 503")
        self.max_message_chars = max_message_chars or settings.max_message_chars
        self.max_request_bytes = max_request_bytes or settings.max_request_bytes

    @classmethod
    def name(cls) -> str:
        """``email``: the route is ``/webhooks/email/webhook``."""
        return CHANNEL

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> EmailInput:
        """No credentials: the secret and the limits come from the settings."""
        return cls()

    def authorised(self, header: str | None) -> bool:
        """True for ``Bearer <the e-mail ingress token>`` (constant-time compare)."""
        if self.token is None:
            return False
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(
            token.strip().encode("utf-8", "replace"), self.token.encode()
        )

    def parse(self, request: Request) -> tuple[str, str, bool, str, dict[str, Any]]:
        """Return ``(thread_key, text, was_cut, message_id, metadata)``.

        Raises:
            BadRequest: the body is too large (413) or malformed (400).
        """
        payload = json_object(request.body, self.max_request_bytes)
        thread = checked_thread_key(payload.get("thread_key"))
        text, was_cut = checked_text(payload.get("text"), self.max_message_chars)
        message_id = checked_message_id(payload.get("message_id"))
        metadata = checked_metadata(payload.get("metadata"))
        return thread, text, was_cut, message_id, metadata

    def blueprint(self, on_new_message: OnNewMessage) -> Blueprint:
        """The webhook (see the module docstring)."""
        module = inspect.getmodule(self)
        webhook = Blueprint(
            f"custom_webhook_{type(self).__name__}",
            module.__name__ if module else None,
        )

        @webhook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            if self.token is None:
                return response.json(
                    {"error": "the e-mail route is off: CRM_CONSOLE_SECRET is not set"},
                    status=503,
                )
            if not self.authorised(request.headers.get("Authorization")):
                return response.json({"error": "forbidden"}, status=403)
            try:
                thread, text, was_cut, message_id, metadata = self.parse(request)
            except BadRequest as error:
                return response.json({"error": str(error)}, status=error.status)
            collector = CollectingOutputChannel()
            message = UserMessage(
                text,
                collector,
                tracker_key(CHANNEL, thread),
                input_channel=CHANNEL,
                message_id=message_id,
                metadata=metadata,
            )
            try:
                await on_new_message(message)
            except CancelledError:
                logger.error("email: the turn of %s timed out", masked_thread(thread))
                return response.json({"error": "the turn failed"}, status=500)
            except Exception:  # noqa: BLE001 - the listener retries the mail
                logger.exception("email: the turn of %s failed", masked_thread(thread))
                return response.json({"error": "the turn failed"}, status=500)
            messages = answer_messages(collector.messages)
            if was_cut:
                notice = TOO_LONG_NOTICE.format(limit=self.max_message_chars)
                messages.insert(0, {"text": notice})
            return response.json({"messages": messages, "cut": was_cut})

        return webhook
