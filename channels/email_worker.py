"""Delivery of pending outbox mail through the SMTP relay (runs in the e-mail process).

Every mail we send starts as an ``outbox`` row: bot replies queued by the SMTP
listener, agent replies and queue updates written by the console (tracker key
``email:<address>#<thread>``), and one-time codes and notices written by the
notifier (an address and a subject, no tracker key). The worker polls for due
rows (``poll_seconds``, or at once after ``wake()``), takes each with a lease
(``outbound.claim_for_delivery``, so several workers never send one row twice),
composes it and hands it to the relay:

- conversation mail is a reply in its thread (``In-Reply-To`` the customer's
  last mail, ``References`` the thread's chain, ``Re:`` subject); bot answers
  carry ``Auto-Submitted: auto-replied``, agent messages do not; the sent
  Message-ID is recorded in the thread, with any numbered choices;
- codes and notices are single mails (``Auto-Submitted: auto-generated``).

A relay failure counts an attempt and schedules the next one with exponential
back-off (``base_delay`` doubling up to ``max_delay``); a final refusal (5xx) or
the ``max_attempts``-th failure marks the row ``failed``, which the console
shows with the conversation. Without ``SMTP_RELAY_HOST`` nothing is sent: rows
stay ``pending`` (``crm outbox list``) until a relay is configured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import sessionmaker

from channels.email_compose import compose_notice, compose_reply
from channels.email_relay import RelayConfig, RelayError, send_via_relay
from channels.keys import split_tracker_key
from channels.outbox_worker import BATCH, OutboxWorker
from crm_store.db import session_factory as store_session_factory
from crm_store.services import email_threads, outbound

logger = logging.getLogger(__name__)


SEND = Callable[..., None]


class EmailWorker(OutboxWorker):
    """Polls the outbox and sends due mail through the relay (see module)."""

    label = "email"

    def __init__(
        self,
        settings: Any,
        *,
        session_factory: sessionmaker | None = None,
        relay: RelayConfig | None = None,
        poll_seconds: float = 1.0,
        max_attempts: int = 8,
        base_delay: float = 2.0,
        max_delay: float = 600.0,
        send: SEND = send_via_relay,
    ) -> None:
        """Configure the worker.

        Args:
            settings: ``mail_from``, ``database_url`` and the ``SMTP_RELAY_*``.
            session_factory: the store (default: the one of ``database_url``).
            relay: the relay (default: from the settings; None: send nothing).
            poll_seconds: how often due mail is looked for.
            max_attempts: failed sends before a message is marked failed.
            base_delay: first retry delay in seconds (doubles per attempt).
            max_delay: longest retry delay in seconds.
            send: the function that hands a mail to the relay.
        """
        super().__init__(
            session_factory=session_factory
            or store_session_factory(settings.database_url),
            poll_seconds=poll_seconds,
            max_attempts=max_attempts,
            base_delay=base_delay,
            max_delay=max_delay,
        )
        self.mail_from = settings.mail_from
        self.relay = relay if relay is not None else RelayConfig.from_settings(settings)
        self._send = send

    # -- one round -----------------------------------------------------------

    def deliver_due_now(self) -> int:
        """Send every due mail once (blocking); return how many were sent."""
        if self.relay is None:
            return 0
        sent = 0
        while True:
            due = self._due("email")
            if not due:
                return sent
            for message in due:
                sent += self._deliver_one(message)
            if len(due) < BATCH:
                return sent

    def _deliver_one(self, message: outbound.ConversationMessage) -> int:
        if not self._claim(message):
            return 0  # another worker has it
        try:
            mail, address, thread = self._compose(message)
            assert self.relay is not None
            self._send(
                mail, config=self.relay, sender=self.mail_from, recipients=[address]
            )
        except RelayError as error:
            self._failed(message, str(error), final=error.final)
            return 0
        except (ValueError, LookupError) as error:  # cannot be composed: final
            self._failed(message, f"not sendable ({type(error).__name__})", final=True)
            return 0

        def done(session: Any) -> None:
            if thread is not None:
                email_threads.record_outbound(
                    session,
                    message_id=str(mail["Message-ID"]),
                    address=address,
                    thread_id=thread,
                    subject=str(mail["Subject"] or ""),
                    buttons=message.buttons,
                )
            outbound.mark_sent(session, [message.id])

        self._unit(done)
        self.sent += 1
        return 1

    def _compose(
        self, message: outbound.ConversationMessage
    ) -> tuple[Any, str, str | None]:
        """The mail of an outbox row, its address and its thread (None: no thread)."""
        parts = split_tracker_key(message.tracker_key or "")
        if parts is None or parts[0] != "email":
            address = message.recipient or ""
            mail = compose_notice(
                from_address=self.mail_from,
                to_address=address,
                subject=message.subject or "A message from Northwind Goods",
                body=message.text,
            )
            return mail, address, None
        address, thread = email_threads.split_thread_key(parts[1])
        state = None
        if thread is not None:
            state = self._unit(
                lambda s: email_threads.thread_state(
                    s, address=address, thread_id=thread
                )
            )
        mail = compose_reply(
            from_address=self.mail_from,
            to_address=address,
            subject=state.subject if state else None,
            texts=[message.text],
            buttons=message.buttons,
            in_reply_to=state.last_inbound_id if state else None,
            references=state.references if state else [],
            auto_submitted=message.author == "bot",
        )
        return mail, address, thread
