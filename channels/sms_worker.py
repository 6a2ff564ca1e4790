"""Delivery of pending outbox texts through the Twilio REST API.

Texts that are not an immediate webhook answer start as ``outbox`` rows:
agent replies and queue updates written by the console (channel ``sms``,
tracker key ``sms:<E.164>``; on a phone call's conversation channel ``voice``,
key ``voice:<E.164>``) and one-time codes and notices of the notifier (channel
``sms``, ``recipient`` the number, no tracker key). The worker polls for due
rows (``poll_seconds``, or at once after ``wake()``), takes each with a lease
(``outbound.claim_for_delivery``, so several workers never send one row twice)
and sends it with ``TwilioSender.send_sms``:

- the number is the raw id of an ``sms:``/``voice:`` key, else ``recipient``;
- a number whose customer sent STOP (``sms_allowed`` false) gets nothing: the
  row is marked ``failed`` at once ("recipient opted out (STOP)"), so agents
  see it and the customer must be told another way;
- ``sms:`` messages carry their buttons as numbered choices ("Reply with a
  number:" ...), remembered for the key (``remember_choices``) so a digit reply
  is understood (no buttons: the old choices are forgotten); ``voice:``
  messages and codes are sent as plain text (a digit texted back reaches the
  SMS conversation, not the call's);
- a text over 1,600 characters goes out in up to 5 parts (``split_sms``).

A Twilio failure counts an attempt and schedules the next one with exponential
back-off (``base_delay`` doubling up to ``max_delay``); a final refusal (a 4xx
such as 21610 or 21211) or the ``max_attempts``-th failure marks the row
``failed`` (``outbound.failed_deliveries`` shows conversation messages to
agents). If a later part of a split text fails, the retry sends all parts
again. Without ``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN`` and
``TWILIO_FROM_NUMBER`` nothing is sent: rows stay ``pending``.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import sessionmaker

from channels.keys import split_tracker_key
from channels.outbox_worker import BATCH, OutboxWorker
from channels.twilio_api import SmsFailed, TwilioSender, split_sms
from crm_store.db import session_factory as store_session_factory
from crm_store.errors import InvalidInput
from crm_store.services import outbound
from crm_store.services.choices import numbered, remember_choices
from crm_store.services.consents import sms_allowed
from crm_store.services.normalize import mask, normalize_identity

logger = logging.getLogger(__name__)


CHANNELS = ("sms", "voice")  # outbox channels whose rows go out as SMS
PHONE_KEYS = ("sms", "voice")
OPTED_OUT = "recipient opted out (STOP)"
CHOICES_INTRO = "Reply with a number:"


def sender_from_settings(settings: Any) -> TwilioSender | None:
    """A sender for the ``TWILIO_*`` settings, None without account, token or number."""
    token = getattr(settings, "twilio_auth_token", None)
    if hasattr(token, "get_secret_value"):
        token = token.get_secret_value()
    sid = getattr(settings, "twilio_account_sid", None)
    number = getattr(settings, "twilio_from_number", None)
    if not (sid and token and number):
        return None
    # One quick retry inside a send; the worker's own back-off does the rest
    # (and survives restarts), so the two do not multiply into long waits.
    return TwilioSender(
        sid,
        token,
        number,
        getattr(settings, "twilio_api_url", None) or "https://api.twilio.com",
        max_attempts=2,
    )


class SmsWorker(OutboxWorker):
    """Polls the outbox and sends due texts through Twilio (see module)."""

    label = "sms"

    def __init__(
        self,
        settings: Any,
        *,
        session_factory: sessionmaker | None = None,
        sender: TwilioSender | None = None,
        poll_seconds: float = 1.0,
        max_attempts: int = 8,
        base_delay: float = 2.0,
        max_delay: float = 600.0,
    ) -> None:
        """Configure the worker.

        Args:
            settings: ``database_url`` and the ``TWILIO_*`` settings.
            session_factory: the store (default: the one of ``database_url``).
            sender: the Twilio sender (default: from the settings; None when
                they lack account, token or number: send nothing).
            poll_seconds: how often due texts are looked for.
            max_attempts: failed sends before a message is marked failed.
            base_delay: first retry delay in seconds (doubles per attempt).
            max_delay: longest retry delay in seconds.
        """
        super().__init__(
            session_factory=session_factory
            or store_session_factory(settings.database_url),
            poll_seconds=poll_seconds,
            max_attempts=max_attempts,
            base_delay=base_delay,
            max_delay=max_delay,
        )
        self.sender = sender if sender is not None else sender_from_settings(settings)

    def deliver_due_now(self) -> int:
        """Send every due text once (blocking); return how many were sent."""
        if self.sender is None:
            return 0
        sent = 0
        for channel in CHANNELS:
            while True:
                due = self._due(channel)
                for message in due:
                    sent += self._deliver_one(message)
                if len(due) < BATCH:
                    break
        return sent

    @staticmethod
    def address(message: outbound.ConversationMessage) -> tuple[str, str | None]:
        """The E.164 number of a row, and its ``sms:`` key for choices (else None).

        Raises:
            InvalidInput: no phone number in E.164 form.
        """
        parts = split_tracker_key(message.tracker_key or "")
        if parts is not None and parts[0] in PHONE_KEYS:
            phone = normalize_identity("phone", parts[1])
            return phone, message.tracker_key if parts[0] == "sms" else None
        return normalize_identity("phone", message.recipient or ""), None

    def _deliver_one(self, message: outbound.ConversationMessage) -> int:
        if not self._claim(message):
            return 0  # another worker has it
        try:
            phone, choices_key = self.address(message)
        except InvalidInput:
            self._failed(message, "not sendable (no valid phone number)", final=True)
            return 0
        if not self._unit(lambda s: sms_allowed(s, phone=phone)):
            logger.info(
                "sms: outbox %s to %s not sent: opted out",
                message.id,
                mask("phone", phone),
            )
            self._failed(message, OPTED_OUT, final=True)
            return 0
        body = message.text
        buttons = message.buttons if choices_key else []
        if buttons and numbered(buttons):
            body = f"{body}\n\n{CHOICES_INTRO}\n{numbered(buttons)}"
        parts = split_sms(body)
        if not parts:
            self._failed(message, "not sendable (empty text)", final=True)
            return 0
        assert self.sender is not None
        try:
            for part in parts:
                self.sender.send_sms(phone, part)
        except SmsFailed as error:
            self._failed(message, error.reason, final=error.final)
            return 0

        def done(session: Any) -> None:
            if choices_key is not None:
                remember_choices(session, tracker_key=choices_key, buttons=buttons)
            outbound.mark_sent(session, [message.id])

        self._unit(done)
        self.sent += 1
        return 1
