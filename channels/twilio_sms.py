"""The Twilio SMS channel: Messaging webhook in, TwiML ``MessagingResponse`` out.

``credentials.yml``: ``channels.twilio_sms.TwilioSmsInput:`` (no values: secrets
only from the environment). Routes: ``GET /webhooks/twilio_sms/`` (health) and
``POST /webhooks/twilio_sms/webhook`` (set it as the number's "A message comes
in" webhook, ``TWILIO_PUBLIC_URL`` + that path). Later messages (agent replies,
codes, notices) go out through the REST API (``channels.sms_worker``).

- **Off.** Without ``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN`` and
  ``TWILIO_PUBLIC_URL`` the webhook answers 503 JSON (one warning at start-up).
- **Signature.** ``X-Twilio-Signature`` is checked with the SDK's validator
  (``channels.twilio_signature``) over the *public* URL: ``TWILIO_PUBLIC_URL`` +
  the webhook path + the request's query string, so it works behind a proxy
  that rewrites host, scheme or a path prefix. No header -> 403 at once; a body
  over ``CRM_MAX_REQUEST_BYTES`` -> 413; a body that is not form-encoded UTF-8
  or a wrong signature -> 403. Nothing is written before this. The form is
  parsed with blank values kept (Twilio signs ``Body=`` too; Sanic's
  ``request.form`` would drop it).
- **Parameters.** ``MessageSid`` and ``From`` (E.164) are required, ``Body`` may
  be empty; else 400 JSON. Errors are JSON ``{"error": ...}``, never TwiML.
- **Once.** The ``MessageSid`` is claimed in ``channel_receipts`` (channel
  ``sms``) in the same transaction as the keyword's consent change, so a retry
  by Twilio gets an empty ``<Response/>`` and nothing else; store down -> 503
  with nothing kept (Twilio retries).
- **Keywords** (the whole trimmed body, any case), no Rasa turn: STOP,
  STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT record the opt-out
  (``set_sms_consent(granted=False, source="sms_stop")``) and confirm it;
  START, YES, UNSTOP record the opt-in and confirm; HELP, INFO get
  ``HELP_TEXT`` (answered even to an opted-out number, as carriers require).
- **Opted out.** Any other text from an opted-out number runs no turn and gets
  an empty ``<Response/>`` (carriers forbid texting it); logged (masked number).
- **Turn.** Tracker key ``sms:<E.164>``, input channel ``twilio_sms``, message
  id ``sms:<MessageSid>``; the text is cleaned and cut like REST
  (``TOO_LONG_NOTICE`` first when cut); a digit answering the numbered choices
  offered last becomes that button's payload. MMS without text gets
  ``UNSUPPORTED_TEXT`` (no turn); an MMS with text runs the text.
- **Answer.** The bot's messages (texts, image URLs, custom ``text``) joined by
  blank lines, then the buttons of the last message that has any as
  ``Reply with a number:`` + ``1. Yes`` ...; those choices are remembered
  (``remember_choices``; none: forgotten). Split into ``<Message>`` parts of at
  most 1,600 characters at paragraph/line/word boundaries, at most 5 parts
  (cut with ``...``). No answer -> empty ``<Response/>``. A failed turn is
  logged (no text) and answered with ``SORRY_TEXT``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from asyncio import CancelledError
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from rasa.core.channels.channel import (
    CollectingOutputChannel,
    InputChannel,
    UserMessage,
)
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from sqlalchemy.orm import Session, sessionmaker
from twilio.twiml.messaging_response import MessagingResponse

from channels.keys import tracker_key
from channels.rest import TOO_LONG_NOTICE, BadRequest, checked_text
from channels.text import clean_text
from channels.twilio_api import MAX_PARTS, MAX_SMS_CHARS, split_sms
from channels.twilio_signature import SIGNATURE_HEADER, public_url, signature_ok
from crm_settings import get_settings
from crm_store.db import run_unit
from crm_store.db import session_factory as store_session_factory
from crm_store.errors import InvalidInput
from crm_store.services.channel_history import record_exchange
from crm_store.services.choices import choice_payload, numbered, remember_choices
from crm_store.services.consents import set_sms_consent, sms_allowed
from crm_store.services.normalize import mask, normalize_identity
from crm_store.services.receipts import claim_receipt

logger = logging.getLogger(__name__)

CHANNEL = "twilio_sms"  # the Rasa input channel (history channel "sms")
KEY_CHANNEL = "sms"  # tracker keys and receipts
HISTORY_CHANNEL = "sms"  # contact-history channel of keyword exchanges
WEBHOOK_PATH = "/webhooks/twilio_sms/webhook"
DEFAULT_MAX_MESSAGE_CHARS = 4000
DEFAULT_MAX_REQUEST_BYTES = 65536
DEFAULT_SUPPORT_EMAIL = "support@northwind.example"
MAX_MESSAGE_SID = 64
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})
STOP_TEXT = (
    "You're unsubscribed from Northwind Goods texts and won't get more. "
    "Reply START to subscribe again."
)
START_TEXT = (
    "You're subscribed again. Text us any time about your orders, returns "
    "or support tickets. Reply STOP to unsubscribe."
)
HELP_TEXT = (
    "Northwind Goods assistant: text me about the status of your orders, "
    "returns and damaged items, support tickets, or ask for a person. "
    "Reply STOP to unsubscribe. Help: {email}"
)
UNSUPPORTED_TEXT = "Sorry, I can only read text. Please type your question."
SORRY_TEXT = "Sorry, something went wrong. Please try again."
CHOICES_INTRO = "Reply with a number:"
OnNewMessage = Callable[[UserMessage], Awaitable[Any]]


@dataclass(frozen=True)
class Inbound:
    """A verified webhook request: the message's SID, sender, body and media count."""

    message_sid: str
    phone: str
    body: str
    num_media: int


@dataclass(frozen=True)
class Decision:
    """What the store says about an inbound message.

    ``action``: ``duplicate``, ``stop``, ``start``, ``help``, ``opted_out`` or
    ``turn``; ``payload``: the button payload a digit answer chose.
    """

    action: str
    payload: str | None = None


def keyword(body: str) -> str | None:
    """``stop``, ``start`` or ``help`` when the whole trimmed body is a keyword."""
    word = body.strip().upper()
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    if word in HELP_WORDS:
        return "help"
    return None


def twiml(parts: list[str]) -> str:
    """A ``MessagingResponse`` with one ``<Message>`` per part (none: empty)."""
    reply = MessagingResponse()
    for part in parts:
        reply.message(part)
    return str(reply)


def answer_text(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The bot's collected messages as one text, and the buttons to number.

    Texts, image URLs and custom payloads' ``text`` are joined by blank lines;
    the buttons are those of the last message that has any.
    """
    texts: list[str] = []
    buttons: list[dict[str, Any]] = []
    for message in messages:
        custom = message.get("custom")
        for value in (
            message.get("text"),
            message.get("image"),
            custom.get("text") if isinstance(custom, dict) else None,
        ):
            if isinstance(value, str) and value.strip():
                texts.append(clean_text(value).strip())
        if isinstance(message.get("buttons"), list) and message["buttons"]:
            buttons = message["buttons"]
    choices = numbered(buttons)
    if choices:
        texts.append(f"{CHOICES_INTRO}\n{choices}")
    return "\n\n".join(texts), buttons


class TwilioSmsInput(InputChannel):
    """The Twilio SMS webhook (see the module docstring)."""

    def __init__(
        self,
        *,
        account_sid: str | None,
        auth_token: str | None,
        public_base: str | None,
        session_factory: sessionmaker | None = None,
        max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        support_email: str = DEFAULT_SUPPORT_EMAIL,
    ) -> None:
        """Configure the channel; it is off without account, token or public URL.

        Raises:
            ValueError: the channel is on but has no store (``session_factory``).
        """
        self.account_sid = account_sid or None
        self.auth_token = auth_token or None
        self.public_base = public_base or None
        self.session_factory = session_factory
        self.max_message_chars = max_message_chars
        self.max_request_bytes = max_request_bytes
        self.help_text = HELP_TEXT.format(email=support_email)
        if not self.enabled:
            # Debug only: `crm run` prints one line per channel saying how to
            # turn it on; the health route shows "enabled": false too.
            logger.debug(
                "twilio_sms: channel off: %s unset",
                "TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN/TWILIO_PUBLIC_URL",
            )
        elif session_factory is None:
            raise ValueError("the Twilio SMS channel needs the store (session_factory)")

    @property
    def enabled(self) -> bool:
        """True with an account SID, an auth token and a public URL."""
        return bool(self.account_sid and self.auth_token and self.public_base)

    @classmethod
    def name(cls) -> str:
        """``twilio_sms``: routes under ``/webhooks/twilio_sms/``."""
        return CHANNEL

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> TwilioSmsInput:
        """Ignore ``credentials``: account, token, URL and store from settings."""
        settings = get_settings()
        token = settings.twilio_auth_token
        factory = (
            store_session_factory(settings.database_url, echo=settings.echo_sql)
            if settings.twilio_enabled
            else None
        )
        return cls(
            account_sid=settings.twilio_account_sid,
            auth_token=token.get_secret_value() if token else None,
            public_base=settings.twilio_public_url,
            session_factory=factory,
            max_message_chars=settings.max_message_chars,
            max_request_bytes=settings.max_request_bytes,
            support_email=settings.mail_from,
        )

    # --- the request ----------------------------------------------------------

    def verified_params(self, request: Request) -> dict[str, str]:
        """The form parameters of a request carrying Twilio's signature.

        Raises:
            BadRequest: no or a wrong signature, a body that is not form-encoded
                UTF-8 (403), a body over the size limit (413).
        """
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature:
            raise BadRequest("forbidden", 403)
        body = request.body or b""
        if len(body) > self.max_request_bytes:
            raise BadRequest(
                f"the request body is larger than {self.max_request_bytes} bytes", 413
            )
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError) as error:
            raise BadRequest("forbidden", 403) from error
        params: dict[str, str] = {}
        for name, value in pairs:
            params.setdefault(name, value)
        assert self.auth_token is not None and self.public_base is not None
        url = public_url(self.public_base, WEBHOOK_PATH, request.query_string)
        if not signature_ok(self.auth_token, url, params, signature):
            raise BadRequest("forbidden", 403)
        return params

    @staticmethod
    def inbound(params: dict[str, str]) -> Inbound:
        """The message of verified ``params``.

        Raises:
            BadRequest: no ``MessageSid``, no ``From`` in E.164 form, no ``Body``.
        """
        sid = params.get("MessageSid") or params.get("SmsSid") or ""
        if not sid or len(sid) > MAX_MESSAGE_SID or not sid.isprintable():
            raise BadRequest("MessageSid is required")
        try:
            phone = normalize_identity("phone", params.get("From") or "")
        except InvalidInput as error:
            raise BadRequest("From must be a phone number in E.164 form") from error
        if "Body" not in params:
            raise BadRequest("Body is required")
        try:
            num_media = max(int(params.get("NumMedia") or 0), 0)
        except ValueError:
            num_media = 0
        return Inbound(sid, phone, params["Body"], num_media)

    # --- the store --------------------------------------------------------------

    def _unit(self, work: Callable[[Session], Any]) -> Any:
        factory = self.session_factory
        assert factory is not None
        return run_unit(factory, work)

    def decide(self, inbound: Inbound) -> Decision:
        """Claim the message and apply its keyword, in one transaction (blocking).

        Raises:
            Exception: the store failed; nothing was kept.
        """
        key = tracker_key(KEY_CHANNEL, inbound.phone)

        def work(session: Session) -> Decision:
            if not claim_receipt(
                session, channel=KEY_CHANNEL, external_id=inbound.message_sid
            ):
                return Decision("duplicate")
            word = keyword(inbound.body)
            if word in ("stop", "start", "help"):
                owner = None
                if word != "help":
                    owner = set_sms_consent(
                        session,
                        phone=inbound.phone,
                        granted=word == "start",
                        source=f"sms_{word}",
                    )
                # Rasa never sees keywords: the timeline gets them from here.
                record_exchange(
                    session,
                    tracker_key=key,
                    channel=HISTORY_CHANNEL,
                    event_id=f"{KEY_CHANNEL}:{inbound.message_sid}",
                    inbound_text=inbound.body.strip(),
                    answer_text=self.keyword_answer(word),
                    intent=f"sms_{word}",
                    customer_id=owner,
                    identity=("phone", inbound.phone),
                )
                return Decision(word)
            if not sms_allowed(session, phone=inbound.phone):
                return Decision("opted_out")
            return Decision(
                "turn",
                choice_payload(session, tracker_key=key, text=inbound.body.strip()),
            )

        return self._unit(work)

    def keyword_answer(self, word: str) -> str:
        """The confirmation of STOP or START, or the HELP text."""
        return {"stop": STOP_TEXT, "start": START_TEXT}.get(word, self.help_text)

    def _remember(self, key: str, buttons: list[dict[str, Any]]) -> None:
        self._unit(
            lambda session: remember_choices(
                session, tracker_key=key, buttons=buttons or None
            )
        )

    # --- acting -------------------------------------------------------------------

    async def turn(
        self, inbound: Inbound, payload: str | None, on_new_message: OnNewMessage
    ) -> list[str]:
        """Run the Rasa turn; return the answer's message parts."""
        if payload is None and not inbound.body.strip() and inbound.num_media:
            logger.info("twilio_sms: message %s: media only", inbound.message_sid)
            return [UNSUPPORTED_TEXT]
        notices: list[str] = []
        if payload is not None:
            text = payload
        else:
            try:
                text, was_cut = checked_text(inbound.body, self.max_message_chars)
            except BadRequest:
                logger.info("twilio_sms: message %s: no text", inbound.message_sid)
                return [UNSUPPORTED_TEXT]
            if was_cut:
                notices.append(TOO_LONG_NOTICE.format(limit=self.max_message_chars))
        key = tracker_key(KEY_CHANNEL, inbound.phone)
        collector = CollectingOutputChannel()
        message = UserMessage(
            text,
            collector,
            key,
            input_channel=CHANNEL,
            message_id=f"{KEY_CHANNEL}:{inbound.message_sid}",
            metadata={},
        )
        try:
            await on_new_message(message)
        except CancelledError:
            logger.error("twilio_sms: the turn of %s timed out", inbound.message_sid)
            return [SORRY_TEXT]
        except Exception:  # noqa: BLE001 - Twilio must get an answer
            logger.exception("twilio_sms: the turn of %s failed", inbound.message_sid)
            return [SORRY_TEXT]
        answer, buttons = answer_text(collector.messages)
        try:
            await asyncio.to_thread(self._remember, key, buttons)
        except Exception:  # noqa: BLE001 - the answer still goes out
            logger.exception(
                "twilio_sms: choices of message %s not stored", inbound.message_sid
            )
        return split_sms("\n\n".join([*notices, answer]), MAX_SMS_CHARS, MAX_PARTS)

    async def receive(
        self, request: Request, on_new_message: OnNewMessage
    ) -> HTTPResponse:
        """Handle one webhook request (see the module docstring)."""
        if not self.enabled:
            return response.json(
                {"error": "the Twilio SMS channel is not configured"}, status=503
            )
        try:
            inbound = self.inbound(self.verified_params(request))
        except BadRequest as error:
            return response.json({"error": str(error)}, status=error.status)
        try:
            decision = await asyncio.to_thread(self.decide, inbound)
        except Exception:  # noqa: BLE001 - Twilio retries the webhook
            logger.exception(
                "twilio_sms: message %s: store unavailable", inbound.message_sid
            )
            return response.json({"error": "the store is unavailable"}, status=503)
        action = decision.action
        if action != "turn":
            logger.info(
                "twilio_sms: message %s from %s: %s",
                inbound.message_sid,
                mask("phone", inbound.phone),
                action,
            )
        if action in ("stop", "start", "help"):
            parts = [self.keyword_answer(action)]
        elif action == "turn":
            parts = await self.turn(inbound, decision.payload, on_new_message)
        else:  # duplicate, opted_out
            parts = []
        return response.text(twiml(parts), content_type="text/xml; charset=utf-8")

    def blueprint(self, on_new_message: OnNewMessage) -> Blueprint:
        """The health route and the webhook."""
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

        return webhook
