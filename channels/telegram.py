"""The Telegram channel: Bot API webhook in, Bot API messages out (python-telegram-bot).

``credentials.yml``: ``channels.telegram.TelegramInput:`` (no values: secrets only
from the environment). Routes: ``GET /webhooks/telegram/`` (health) and
``POST /webhooks/telegram/webhook`` (updates; register it with
``crm telegram set-webhook URL``). Rasa's own aiogram-based connector is not used.

- **Off.** Without ``TELEGRAM_BOT_TOKEN`` and ``TELEGRAM_WEBHOOK_SECRET`` the
  webhook answers 503 ``{"error": "the Telegram channel is not configured"}``
  (one warning at start-up).
- **Secret.** The ``X-Telegram-Bot-Api-Secret-Token`` header must equal the
  secret (``hmac.compare_digest``), else 403 ``{"error": "forbidden"}``, checked
  before the body is read or anything is written: a forged request leaves no
  trace. Then: body over ``CRM_MAX_REQUEST_BYTES`` -> 413; not a JSON object,
  no integer ``update_id`` or not a Telegram ``Update`` -> 400.
- **Once.** The ``update_id`` is claimed in the store (``channel_receipts``)
  before the update is acted on, so a re-delivery gets 200
  ``{"status": "duplicate"}`` and nothing else, across restarts and instances.
  Store unavailable -> 503 (Telegram delivers again later), nothing answered.
  Updates that are ignored anyway (other kinds, group chatter) are not claimed.
- **Kinds.** Text and edited messages (an edit is handled as a new message)
  in private chats run a Rasa turn with tracker key ``telegram:<user id>``,
  text cleaned and cut like the REST channel (``TOO_LONG_NOTICE`` first when
  cut). ``/start`` (with or without a deep-link payload) becomes ``/greet``;
  ``/help`` is answered here with ``HELP_TEXT`` (the domain has no help
  intent); any other typed text starting with ``/`` loses its leading slashes,
  so a customer cannot inject intents (``/cancel_order{...}`` -> Rasa reads
  ``cancel_order{...}``). ``/cmd@<bot>`` counts as ``/cmd``. Button presses
  (``callback_query``) are answered first (always, even stale ones) so the
  client stops spinning, then the button's data runs the turn as typed
  (payloads such as ``/affirm`` are allowed there). Stickers, photos, voice,
  files, locations, ... get ``UNSUPPORTED_TEXT`` and a log line; service
  messages and other update kinds (channel posts, chat members, ...) are
  ignored (200).
- **Groups.** Messages in groups are ignored unless they address the bot (an
  ``@<bot>`` mention, ``/cmd@<bot>``, or a reply to the bot); then the group gets
  ``PRIVACY_TEXT`` and no turn runs (personal data must not be shown in a
  group). The bot's username comes from ``getMe``, asked once. Buttons pressed
  in a group are answered and ignored.
- **Answers.** ``TelegramOutput`` sends through ``channels.telegram_sender``
  (split at 4,096 characters, MarkdownV2-escaped, buttons as an inline
  keyboard, retries on 429/5xx). An answer that cannot be delivered is logged
  (chat id only) and recorded with ``record_failed_delivery`` so agents see it;
  after one failure the rest of the turn's answers are recorded without
  trying. The webhook answers 200 after the turn; a failed turn is logged
  (no text) and still 200, or Telegram would deliver it again forever.
- **Sender.** One ``TelegramSender`` per event loop, made lazily in the
  server's loop and closed when the server stops.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
from asyncio import CancelledError
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rasa.core.channels.channel import InputChannel, OutputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from sqlalchemy.orm import Session, sessionmaker
from telegram import Message, MessageEntity, Update
from telegram.constants import MessageAttachmentType

from channels.keys import tracker_key
from channels.rest import TOO_LONG_NOTICE, BadRequest, checked_text, json_object
from channels.telegram_sender import DEFAULT_API_URL, DeliveryFailed, TelegramSender
from crm_settings import get_settings
from crm_store.db import run_unit
from crm_store.db import session_factory as store_session_factory
from crm_store.services.channel_history import record_exchange
from crm_store.services.outbound import record_failed_delivery
from crm_store.services.receipts import claim_receipt

logger = logging.getLogger(__name__)

CHANNEL = "telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
DEFAULT_MAX_MESSAGE_CHARS = 4000
DEFAULT_MAX_REQUEST_BYTES = 65536
GROUP_TYPES = frozenset({"group", "supergroup"})
START_TEXT = "/greet"
HELP_TEXT = (
    "I'm the Northwind Goods assistant. I can help you with:\n"
    "- the status of your orders\n"
    "- returns and damaged items\n"
    "- support tickets\n"
    "- talking to a person from our team\n"
    "Just type your question."
)
UNSUPPORTED_TEXT = "Sorry, I can only read text messages. Please type your question."
PRIVACY_TEXT = (
    "For your privacy I help one-to-one: please message me directly at @{username}."
)
OnNewMessage = Callable[[UserMessage], Awaitable[Any]]


@dataclass(frozen=True)
class Inbound:
    """What to do with one update.

    ``action``: ``turn`` (run Rasa on ``text``), ``help``, ``unsupported``,
    ``privacy`` (answer the group), ``answer_only`` (just answer the button
    press) or ``ignore``. ``kind`` names the update kind for logs.
    """

    action: str
    update_id: int
    kind: str
    chat_id: int | None = None
    user_id: int | None = None
    text: str = ""
    callback_id: str | None = None


def without_command_slashes(text: str) -> str:
    """``text`` without the leading slashes Rasa would read as an intent.

    Rasa strips a message and treats a leading ``/`` as ``/intent{entities}``;
    this removes every leading slash (and the whitespace around them).
    """
    while text.strip().startswith("/"):
        text = text.strip().lstrip("/")
    return text


def command_name(text: str) -> str | None:
    """The lower-case command of ``/cmd``, ``/cmd@bot`` or ``/cmd args``, else None."""
    stripped = text.strip()
    if not stripped.startswith("/"):
        return None
    words = stripped[1:].split(maxsplit=1)
    if not words:
        return ""
    return words[0].split("@", 1)[0].lower()


def attachment_kind(message: Message) -> str | None:
    """The kind of content of a message without text (``sticker``, ``photo``, ...).

    None for service messages (members joining, pinned messages, ...).
    """
    for kind in MessageAttachmentType:
        if getattr(message, str(kind), None):
            return str(kind)
    return None


class TelegramOutput(OutputChannel):
    """Sends a turn's answers to one Telegram chat (see the module docstring)."""

    def __init__(
        self,
        sender: TelegramSender,
        chat_id: int,
        key: str,
        session_factory: sessionmaker | None,
    ) -> None:
        """Answer ``chat_id``; record failed answers for ``key`` in the store."""
        self.sender = sender
        self.chat_id = chat_id
        self.key = key
        self.session_factory = session_factory
        self.failure: str | None = None

    @classmethod
    def name(cls) -> str:
        """``telegram``."""
        return CHANNEL

    async def send_text_message(
        self, recipient_id: str, text: str, **kwargs: Any
    ) -> None:
        """Send ``text`` to the chat (split and escaped by the sender)."""
        await self.deliver(text)

    async def send_text_with_buttons(
        self,
        recipient_id: str,
        text: str,
        buttons: list[dict[str, Any]],
        **kwargs: Any,
    ) -> None:
        """Send ``text`` with the buttons as an inline keyboard."""
        await self.deliver(text, buttons)

    async def send_image_url(
        self, recipient_id: str, image: str, **kwargs: Any
    ) -> None:
        """Send the image URL as text."""
        await self.deliver(image)

    async def send_custom_json(
        self, recipient_id: str, json_message: dict[str, Any], **kwargs: Any
    ) -> None:
        """Send the custom payload's ``text``, if it has one (else nothing)."""
        text = json_message.get("text") if isinstance(json_message, dict) else None
        if isinstance(text, str) and text.strip():
            await self.deliver(text)

    async def deliver(
        self, text: str, buttons: Sequence[dict[str, Any]] | None = None
    ) -> None:
        """Send one answer; record it as failed when it cannot be delivered.

        Never raises ``DeliveryFailed``: a failed answer must not lose the turn.
        """
        if self.failure is not None:
            await self._record(text, buttons, f"not sent after: {self.failure}")
            return
        try:
            await self.sender.send_text(self.chat_id, text, buttons)
        except DeliveryFailed as error:
            self.failure = error.reason
            logger.warning(
                "telegram: answer to chat %s not delivered: %s",
                self.chat_id,
                error.reason,
            )
            await self._record(text, buttons, error.reason)

    async def _record(
        self, text: str, buttons: Sequence[dict[str, Any]] | None, reason: str
    ) -> None:
        factory = self.session_factory
        if factory is None:
            return
        kept = [
            {"title": str(b.get("title", "")), "payload": str(b.get("payload", ""))}
            for b in buttons or ()
            if isinstance(b, dict)
        ]

        def work(session: Session) -> None:
            record_failed_delivery(
                session,
                tracker_key=self.key,
                channel=CHANNEL,
                text=text,
                error=reason,
                buttons=kept or None,
            )

        try:
            await asyncio.to_thread(run_unit, factory, work)
        except Exception:  # noqa: BLE001 - the turn goes on; the log has the id
            logger.exception(
                "telegram: failed answer to chat %s not recorded", self.chat_id
            )


class TelegramInput(InputChannel):
    """The Telegram webhook (see the module docstring)."""

    def __init__(
        self,
        *,
        token: str | None,
        secret: str | None,
        api_url: str = DEFAULT_API_URL,
        session_factory: sessionmaker | None = None,
        max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_attempts: int = 5,
        base_delay: float = 0.5,
    ) -> None:
        """Configure the channel; it is off without a token or a secret.

        ``max_attempts``/``base_delay``: the sender's retries (tests shorten them).

        Raises:
            ValueError: the channel is on but has no store (``session_factory``):
                updates could not be de-duplicated.
        """
        self.token = token or None
        self.secret = secret or None
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self.session_factory = session_factory
        self.max_message_chars = max_message_chars
        self.max_request_bytes = max_request_bytes
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self._sender: TelegramSender | None = None
        self._sender_loop: asyncio.AbstractEventLoop | None = None
        if not self.enabled:
            # Debug only: `crm run` prints one line per channel saying how to
            # turn it on; the health route shows "enabled": false too.
            logger.debug(
                "telegram: channel off: %s unset",
                "TELEGRAM_BOT_TOKEN/TELEGRAM_WEBHOOK_SECRET",
            )
        elif session_factory is None:
            raise ValueError("the Telegram channel needs the store (session_factory)")

    @property
    def enabled(self) -> bool:
        """True when the channel has its token and webhook secret."""
        return bool(self.token and self.secret)

    @classmethod
    def name(cls) -> str:
        """``telegram``: routes under ``/webhooks/telegram/``."""
        return CHANNEL

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> TelegramInput:
        """Ignore ``credentials``: token, secret, API URL and store from settings."""
        settings = get_settings()
        token = settings.telegram_bot_token
        secret = settings.telegram_webhook_secret
        factory = (
            store_session_factory(settings.database_url, echo=settings.echo_sql)
            if settings.telegram_enabled
            else None
        )
        return cls(
            token=token.get_secret_value() if token else None,
            secret=secret.get_secret_value() if secret else None,
            api_url=settings.telegram_api_url,
            session_factory=factory,
            max_message_chars=settings.max_message_chars,
            max_request_bytes=settings.max_request_bytes,
        )

    def sender(self) -> TelegramSender:
        """The sender of the running event loop (made on first use in it).

        Raises:
            RuntimeError: the channel is off.
        """
        if not self.token:
            raise RuntimeError("the Telegram channel is off")
        loop = asyncio.get_running_loop()
        if self._sender is None or self._sender_loop is not loop:
            self._sender = TelegramSender(
                self.token,
                self.api_url,
                max_attempts=self.max_attempts,
                base_delay=self.base_delay,
            )
            self._sender_loop = loop
        return self._sender

    async def close(self) -> None:
        """Close the sender's connections (call in the server's loop)."""
        sender, self._sender, self._sender_loop = self._sender, None, None
        if sender is not None:
            await sender.aclose()

    # --- the request ----------------------------------------------------------

    def secret_matches(self, given: str | None) -> bool:
        """Whether the header value equals the webhook secret (constant time)."""
        if not given or not self.secret:
            return False
        return hmac.compare_digest(
            given.encode("utf-8", "surrogateescape"),
            self.secret.encode("utf-8", "surrogateescape"),
        )

    def parse(self, request: Request) -> Update:
        """The ``Update`` of an authenticated webhook request.

        Raises:
            BadRequest: body too large (413), not a JSON object, no integer
                ``update_id`` or not a Telegram update (400).
        """
        data = json_object(request.body, self.max_request_bytes)
        update_id = data.get("update_id")
        if not isinstance(update_id, int) or isinstance(update_id, bool):
            raise BadRequest("update_id must be an integer")
        if update_id < 0:
            raise BadRequest("update_id must not be negative")
        try:
            update = Update.de_json(data, self.sender().bot)
        except Exception as error:  # noqa: BLE001 - any malformed field
            raise BadRequest("the body is not a Telegram update") from error
        if update is None:
            raise BadRequest("the body is not a Telegram update")
        return update

    async def classify(self, update: Update) -> Inbound:
        """Decide what to do with ``update`` (see the module docstring).

        Raises:
            DeliveryFailed: ``getMe`` failed while checking a group message.
        """
        update_id = update.update_id
        query = update.callback_query
        if query is not None:
            chat = query.message.chat if query.message is not None else None
            chat_id = chat.id if chat is not None else query.from_user.id
            private = chat is None or chat.type == "private"
            return Inbound(
                "turn" if private and query.data else "answer_only",
                update_id,
                "callback",
                chat_id=chat_id,
                user_id=query.from_user.id,
                text=query.data or "",
                callback_id=query.id,
            )
        message = update.message or update.edited_message
        if message is None:
            return Inbound("ignore", update_id, "other")
        chat, user = message.chat, message.from_user
        if chat.type in GROUP_TYPES:
            if await self.addressed(message):
                return Inbound("privacy", update_id, "group", chat_id=chat.id)
            return Inbound("ignore", update_id, "group")
        if chat.type != "private" or user is None:
            return Inbound("ignore", update_id, "other")
        if message.text is None:
            kind = attachment_kind(message)
            action = "ignore" if kind is None else "unsupported"
            return Inbound(action, update_id, kind or "service", chat.id, user.id)
        command = command_name(message.text)
        if command == "start":
            return Inbound("turn", update_id, "start", chat.id, user.id, START_TEXT)
        if command == "help":
            return Inbound("help", update_id, "help", chat.id, user.id)
        text = without_command_slashes(message.text)
        return Inbound("turn", update_id, "text", chat.id, user.id, text)

    async def addressed(self, message: Message) -> bool:
        """Whether a group message mentions the bot, commands it or replies to it.

        Raises:
            DeliveryFailed: ``getMe`` failed.
        """
        me = await self.sender().me()
        handle = f"@{me.username or ''}".lower()
        reply = message.reply_to_message
        if reply is not None and reply.from_user and reply.from_user.id == me.id:
            return True
        kinds = [
            MessageEntity.MENTION,
            MessageEntity.BOT_COMMAND,
            MessageEntity.TEXT_MENTION,
        ]
        if message.text is not None:
            found = message.parse_entities(kinds)
        else:
            found = message.parse_caption_entities(kinds)
        for entity, value in found.items():
            text = value.lower()
            if (
                (entity.type == MessageEntity.MENTION and text == handle)
                or (entity.type == MessageEntity.BOT_COMMAND and text.endswith(handle))
                or (
                    entity.type == MessageEntity.TEXT_MENTION
                    and entity.user is not None
                    and entity.user.id == me.id
                )
            ):
                return True
        return False

    def _claim(self, update_id: int) -> bool:
        factory = self.session_factory
        assert factory is not None

        return run_unit(
            factory,
            lambda session: claim_receipt(
                session, channel=CHANNEL, external_id=str(update_id)
            ),
        )

    # --- acting -----------------------------------------------------------------

    async def record(
        self, inbound: Inbound, key: str, text: str, answer: str, intent: str
    ) -> None:
        """Put an exchange Rasa never saw on the timeline (``/help``, a sticker)."""
        factory = self.session_factory
        if factory is None:
            return

        def work(session: Session) -> None:
            record_exchange(
                session,
                tracker_key=key,
                channel=CHANNEL,
                event_id=f"{CHANNEL}:{inbound.update_id}",
                inbound_text=text,
                answer_text=answer,
                intent=intent,
                identity=("telegram", str(inbound.user_id)),
            )

        try:
            await asyncio.to_thread(run_unit, factory, work)
        except Exception:  # noqa: BLE001 - the answer went out; log the gap
            logger.exception(
                "telegram: update %s: not recorded in the history", inbound.update_id
            )

    async def act(self, inbound: Inbound, on_new_message: OnNewMessage) -> None:
        """Answer a claimed update: button answer, notices, or a Rasa turn."""
        sender = self.sender()
        if inbound.callback_id is not None:
            try:
                await sender.answer_callback(inbound.callback_id)
            except DeliveryFailed as error:
                logger.warning(
                    "telegram: update %s: button press not answered: %s",
                    inbound.update_id,
                    error.reason,
                )
        if inbound.action == "answer_only":
            return
        assert inbound.chat_id is not None
        if inbound.action == "privacy":
            try:
                username = await sender.username()
                await sender.send_text(
                    inbound.chat_id, PRIVACY_TEXT.format(username=username)
                )
            except DeliveryFailed as error:
                logger.warning(
                    "telegram: update %s: group %s not answered: %s",
                    inbound.update_id,
                    inbound.chat_id,
                    error.reason,
                )
            return
        assert inbound.user_id is not None
        key = tracker_key(CHANNEL, str(inbound.user_id))
        output = TelegramOutput(sender, inbound.chat_id, key, self.session_factory)
        if inbound.action == "help":
            await output.deliver(HELP_TEXT)
            await self.record(inbound, key, "/help", HELP_TEXT, "telegram_help")
            return
        if inbound.action == "unsupported":
            logger.info(
                "telegram: update %s: unsupported %s", inbound.update_id, inbound.kind
            )
            await output.deliver(UNSUPPORTED_TEXT)
            await self.record(
                inbound, key, f"[{inbound.kind}]", UNSUPPORTED_TEXT, "unsupported"
            )
            return
        try:
            text, was_cut = checked_text(inbound.text, self.max_message_chars)
        except BadRequest:
            logger.info("telegram: update %s: no text left", inbound.update_id)
            await output.deliver(UNSUPPORTED_TEXT)
            return
        if was_cut:
            await output.deliver(TOO_LONG_NOTICE.format(limit=self.max_message_chars))
        message = UserMessage(
            text,
            output,
            key,
            input_channel=CHANNEL,
            message_id=f"{CHANNEL}:{inbound.update_id}",
            metadata={},
        )
        try:
            await on_new_message(message)
        except CancelledError:
            logger.error("telegram: the turn of update %s timed out", inbound.update_id)
        except Exception:  # noqa: BLE001 - Telegram would re-deliver forever
            logger.exception(
                "telegram: the turn of update %s failed", inbound.update_id
            )

    async def receive(
        self, request: Request, on_new_message: OnNewMessage
    ) -> HTTPResponse:
        """Handle one webhook request (see the module docstring)."""
        if not self.enabled:
            return response.json(
                {"error": "the Telegram channel is not configured"}, status=503
            )
        if not self.secret_matches(request.headers.get(SECRET_HEADER)):
            return response.json({"error": "forbidden"}, status=403)
        try:
            update = self.parse(request)
        except BadRequest as error:
            return response.json({"error": str(error)}, status=error.status)
        try:
            inbound = await self.classify(update)
        except DeliveryFailed as error:
            logger.warning(
                "telegram: update %s: bot identity unknown: %s",
                update.update_id,
                error.reason,
            )
            return response.json(
                {"error": "the Telegram API is unavailable"}, status=503
            )
        if inbound.action == "ignore":
            logger.debug(
                "telegram: update %s: %s ignored", update.update_id, inbound.kind
            )
            return response.json({"status": "ignored"})
        try:
            fresh = await asyncio.to_thread(self._claim, update.update_id)
        except Exception:  # noqa: BLE001 - Telegram delivers it again later
            logger.exception("telegram: update %s: store unavailable", update.update_id)
            return response.json({"error": "the store is unavailable"}, status=503)
        if not fresh:
            logger.info("telegram: update %s: duplicate", update.update_id)
            return response.json({"status": "duplicate"})
        await self.act(inbound, on_new_message)
        return response.json({"status": "ok"})

    def blueprint(self, on_new_message: OnNewMessage) -> Blueprint:
        """The health route and the webhook; the sender closes with the server."""
        module = inspect.getmodule(self)
        webhook = Blueprint(
            f"custom_webhook_{type(self).__name__}",
            module.__name__ if module else None,
        )

        @webhook.route("/", methods=["GET"])
        async def health(request: Request) -> HTTPResponse:
            return response.json({"status": "ok", "enabled": self.enabled})

        @webhook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            return await self.receive(request, on_new_message)

        @webhook.listener("after_server_stop")
        async def close_sender(*_: Any) -> None:
            await self.close()

        return webhook
