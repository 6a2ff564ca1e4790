"""The SMTP listener: inbound mail -> one dialogue turn -> one queued reply.

``python -m channels.email`` (started by ``crm run``) listens on
``SMTP_INTERFACE:SMTP_PORT`` (default 127.0.0.1:2525) with aiosmtpd and runs
the outbox e-mail worker (``channels.email_worker``) next to it, which sends
the replies through the relay. This process never talks SMTP outwards and
never runs the dialogue itself: a mail's turn runs on the Rasa server through
its internal route (``channels.email_input``, bearer token derived from
``CRM_CONSOLE_SECRET``).

Per SMTP transaction:

- ``RCPT TO`` an address not in ``SMTP_RECIPIENTS`` -> ``550 5.1.1``; more
  than 20 recipients -> ``452``.
- Mail over ``SMTP_MAX_BYTES`` (default 10 MB) is refused by aiosmtpd with
  ``552`` once the data is in, a line over 1,000 bytes (RFC 5321) with
  ``500``; the connection stays usable for the next mail.
- ``DATA`` (``MailHandler.handle_DATA``; it never raises):

  1. parse (``channels.email_parse``) in a worker thread; unreadable -> 550;
  2. automatic mail (auto-replies, bounces, mailing lists, loops) -> 250 and
     nothing else, so two robots never answer each other;
  3. no usable From address -> 250, no reply;
  4. no Message-ID -> one is made from the content, so an identical re-send
     is a duplicate;
  5. the mail is placed in its thread (``email_threads.place_inbound``); a
     Message-ID seen before -> ``250 OK: already received``;
  6. no text -> a polite reply asking for the question in the message itself,
     no turn; an answer that is the number of one of the buttons of our last
     mail in the thread sends that button's payload;
  7. the turn runs on the Rasa server; unreachable, timeout or an error ->
     the mail's row is removed again and ``451`` (the sending server retries;
     nothing is lost);
  8. the answers become ONE outbox row (``email:<address>#<thread>``, blank
     lines between the bot's messages, the last buttons), the worker is woken.

  Any other failure -> ``451 4.3.0``. Once the data is in, the work finishes
  even if the client disconnects (a re-send is then a duplicate).

The sender address is the channel identity: identified, not verified. Logs
carry ids only: a hash of the Message-ID, the thread id, the masked address.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

import httpx
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.orm import sessionmaker

from channels.chat_tokens import email_ingress_token
from channels.email_compose import button_choice
from channels.email_parse import InboundMail, UnreadableMail, parse_inbound
from channels.keys import InvalidSenderId, check_raw_id
from channels.text import clean_text
from crm_settings import SettingsError, load_settings
from crm_store.db import run_unit
from crm_store.db import session_factory as store_session_factory
from crm_store.services import email_threads, outbound
from crm_store.services.normalize import mask

logger = logging.getLogger(__name__)

IDENT = "Northwind support"
ROUTE = "/webhooks/email/webhook"
MAX_RECIPIENTS = 20
MAX_ADDRESS = 200
MAX_MESSAGE_ID = 255
MAX_SUBJECT = 200
MAX_ATTACHMENTS = 20
MAX_ATTACHMENT_FIELD = 100
MAX_BUTTONS = 10
MAX_BUTTON_TITLE = 80
MAX_BUTTON_PAYLOAD = 200
MAX_PARALLEL_PARSES = 4
SHOWN_ADDRESS_CHARS = 64
NO_TEXT_REPLY = (
    "Thank you for your e-mail. I could not find any text in it (attachments are "
    "not read). Please write your question in the message itself."
)
OK = "250 OK: received"
OK_AUTOMATIC = "250 OK: received, no reply (automatic mail)"
OK_NO_SENDER = "250 OK: received, no reply (no sender address)"
OK_DUPLICATE = "250 OK: already received"
OK_LIMITED = "250 OK: received, no reply (too many mails from this sender)"
UNREADABLE = "550 5.6.0 Unreadable message"
TEMPORARY = "451 4.3.0 Temporary failure, please retry"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"


class TurnFailed(Exception):
    """The Rasa server did not run the turn (unreachable, timeout, not 200)."""


def digest(value: str | bytes) -> str:
    """A short SHA-256 of a Message-ID or a mail, for logs."""
    data = value if isinstance(value, bytes) else value.encode("utf-8", "replace")
    return hashlib.sha256(data).hexdigest()[:12]


def content_message_id(raw: bytes) -> str:
    """A Message-ID made from the content: ``<sha256[:32]@northwind.invalid>``."""
    return f"<{hashlib.sha256(raw).hexdigest()[:32]}@northwind.invalid>"


def shown_address(address: str) -> str:
    """An address safe to echo in an SMTP reply: printable ASCII, cut."""
    cut = address[:SHOWN_ADDRESS_CHARS]
    shown = "".join(c if c.isprintable() and c.isascii() else "?" for c in cut)
    return shown + ("..." if len(address) > SHOWN_ADDRESS_CHARS else "")


def usable_address(address: str | None) -> str | None:
    """The lower-cased sender address, or None if it cannot be an identity."""
    if not address or "@" not in address or len(address) > MAX_ADDRESS:
        return None
    try:
        return check_raw_id(address.strip().lower(), max_length=MAX_ADDRESS)
    except InvalidSenderId:
        return None


def reply_buttons(buttons: object) -> list[dict[str, str]]:
    """Buttons the outbox accepts: ``{"title", "payload"}``, at most 10."""
    kept = []
    for button in buttons if isinstance(buttons, list) else []:
        if not isinstance(button, dict):
            continue
        title, payload = button.get("title"), button.get("payload")
        if isinstance(title, str) and isinstance(payload, str):
            title, payload = title.strip()[:MAX_BUTTON_TITLE], payload.strip()
            if title and payload and len(payload) <= MAX_BUTTON_PAYLOAD:
                kept.append({"title": title, "payload": payload})
    return kept[:MAX_BUTTONS]


def turn_metadata(mail: InboundMail) -> dict[str, Any]:
    """Subject and the attachment list (names, types, sizes) for the turn."""
    attachments = [
        {
            "filename": clean_text(a.filename)[:MAX_ATTACHMENT_FIELD]
            if a.filename
            else None,
            "content_type": clean_text(a.content_type)[:MAX_ATTACHMENT_FIELD]
            if a.content_type
            else None,
            "size": a.size if isinstance(a.size, int) and a.size >= 0 else None,
        }
        for a in mail.attachments[:MAX_ATTACHMENTS]
    ]
    return {
        "subject": clean_text(mail.subject or "")[:MAX_SUBJECT],
        "attachments": attachments,
    }


class MailHandler:
    """The aiosmtpd handler of the listener (see the module docstring)."""

    def __init__(
        self,
        *,
        recipients: tuple[str, ...],
        session_factory: sessionmaker,
        rasa_url: str,
        token: str,
        max_message_chars: int,
        on_queued: Callable[[], None] | None = None,
        timeout: float = 30.0,
        replies_per_hour: int = 20,
    ) -> None:
        """Configure the handler.

        Args:
            recipients: the addresses mail is accepted for (any case).
            session_factory: the customer store.
            rasa_url: base URL of the Rasa server (its e-mail route is called).
            token: the bearer token of that route (``email_ingress_token``).
            max_message_chars: the text limit of a turn (longer text is sent
                one character over it, so the route cuts it and says so).
            on_queued: called after a reply was queued (the worker's ``wake``).
            timeout: seconds a turn may take before the mail is deferred (451).
            replies_per_hour: mails from one address answered per hour; more
                are accepted but not answered, which ends a loop with another
                robot that strips our headers and stops a flood of forged
                senders from turning us into a spam source (backscatter).
        """
        self.recipients = frozenset(r.strip().lower() for r in recipients)
        self.factory = session_factory
        self.url = rasa_url.rstrip("/") + ROUTE
        self.token = token
        self.max_message_chars = max_message_chars
        self.on_queued = on_queued
        self.timeout = timeout
        self.replies_per_hour = replies_per_hour
        self._http: httpx.AsyncClient | None = None
        self._parses: asyncio.Semaphore | None = None
        self._work: set[asyncio.Task] = set()

    # -- SMTP hooks ------------------------------------------------------------

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept our own addresses only (550), at most 20 recipients (452)."""
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return TOO_MANY_RECIPIENTS
        if address.strip().lower() not in self.recipients:
            return f"550 5.1.1 <{shown_address(address)}>: no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """Handle one mail; return the SMTP reply (see the module docstring).

        The work runs in its own task, so a client that disconnects does not
        cut it off halfway.
        """
        raw = envelope.original_content
        if raw is None:
            content = envelope.content
            raw = (
                content.encode("utf-8", "surrogateescape")
                if isinstance(content, str)
                else (content or b"")
            )
        task = asyncio.get_running_loop().create_task(
            self.handle_mail(bytes(raw), envelope.mail_from)
        )
        self._work.add(task)
        task.add_done_callback(self._work.discard)
        return await asyncio.shield(task)

    # -- the work --------------------------------------------------------------

    async def handle_mail(self, raw: bytes, envelope_sender: str | None) -> str:
        """Handle the raw mail; return the SMTP reply. Never raises."""
        trace = {"ref": f"content {digest(raw)}"}
        try:
            return await self._handle(raw, envelope_sender, trace)
        except Exception as error:  # noqa: BLE001 - answer 451, serve the next mail
            logger.error(
                "email: mail %s not handled (%s); asked to retry",
                trace["ref"],
                type(error).__name__,
            )
            return TEMPORARY

    async def _handle(
        self, raw: bytes, envelope_sender: str | None, trace: dict[str, str]
    ) -> str:
        ref = trace["ref"]
        if self._parses is None:
            self._parses = asyncio.Semaphore(MAX_PARALLEL_PARSES)
        try:
            async with self._parses:
                mail = await asyncio.to_thread(
                    parse_inbound, raw, envelope_sender=envelope_sender
                )
        except UnreadableMail as error:
            logger.info("email: mail %s refused: unreadable (%s)", ref, error)
            return UNREADABLE
        message_id = mail.message_id or content_message_id(raw)
        if len(message_id) > MAX_MESSAGE_ID:
            message_id = content_message_id(message_id.encode("utf-8", "replace"))
        ref = trace["ref"] = f"message {digest(message_id)}"
        if mail.auto_reason:
            logger.info(
                "email: mail %s is automatic (%s): not answered", ref, mail.auto_reason
            )
            return OK_AUTOMATIC
        address = usable_address(mail.from_address)
        if address is None:
            logger.info("email: mail %s has no usable sender address", ref)
            return OK_NO_SENDER
        placed, last_buttons = await self._store(
            lambda session: self._place(session, mail, message_id, address)
        )
        who = f"{mask('email', address)} thread {placed.thread_id}"
        if placed.duplicate:
            logger.info("email: mail %s from %s already received", ref, who)
            return OK_DUPLICATE
        if await self._over_limit(address):
            logger.warning(
                "email: mail %s from %s not answered: over %d mails an hour",
                ref,
                who,
                self.replies_per_hour,
            )
            return OK_LIMITED
        try:
            reply = await self._answer(mail, placed, message_id, last_buttons)
            if reply is not None:
                text, buttons = reply
                await self._store(
                    lambda session: outbound.queue_address_message(
                        session,
                        tracker_key=f"email:{placed.tracker_raw_id}",
                        channel="email",
                        recipient=address,
                        text=text,
                        buttons=buttons or None,
                        author="bot",
                        purpose="bot_reply",
                    )
                )
        except (Exception, asyncio.CancelledError) as error:
            # Not handled: forget the mail, so the sender's retry is not a
            # duplicate (also when the process stops in the middle).
            await self._store(
                lambda session: email_threads.forget_inbound(
                    session, message_id=message_id
                )
            )
            logger.warning(
                "email: mail %s from %s deferred (%s)", ref, who, _reason(error)
            )
            if isinstance(error, asyncio.CancelledError):
                raise
            return TEMPORARY
        if reply is None:
            logger.info("email: mail %s from %s handled, no answer", ref, who)
            return OK
        logger.info(
            "email: mail %s from %s answered (reply queued)%s",
            ref,
            who,
            f"; notes: {','.join(mail.notes)}" if mail.notes else "",
        )
        self._notify()
        return OK

    async def _over_limit(self, address: str) -> bool:
        since = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(
            hours=1
        )
        count = await self._store(
            lambda session: email_threads.inbound_count(
                session, address=address, since=since
            )
        )
        return count > self.replies_per_hour

    def _place(
        self, session: Any, mail: InboundMail, message_id: str, address: str
    ) -> tuple[email_threads.InboundThread, list[dict]]:
        placed = email_threads.place_inbound(
            session,
            message_id=message_id,
            address=address,
            subject=mail.subject,
            in_reply_to=mail.in_reply_to,
            references=list(mail.references or []),
        )
        buttons: list[dict] = []
        if not placed.duplicate and not placed.is_new:
            buttons = email_threads.thread_state(
                session, address=address, thread_id=placed.thread_id
            ).last_buttons
        return placed, buttons

    async def _answer(
        self,
        mail: InboundMail,
        placed: email_threads.InboundThread,
        message_id: str,
        last_buttons: list[dict],
    ) -> tuple[str, list[dict[str, str]]] | None:
        """The reply's text and buttons (None: no reply).

        Raises:
            TurnFailed: the Rasa server did not run the turn.
        """
        text = clean_text(mail.text or "").strip()
        if not text:
            return NO_TEXT_REPLY, []
        if last_buttons:
            text = button_choice(text, last_buttons) or text
        messages = await self.run_turn(
            {
                "thread_key": placed.tracker_raw_id,
                "text": text[: self.max_message_chars + 1],
                "message_id": message_id,
                "metadata": turn_metadata(mail),
            }
        )
        texts = [m["text"].strip() for m in messages if m["text"].strip()]
        buttons: list[dict[str, str]] = []
        for message in messages:
            buttons = reply_buttons(message.get("buttons")) or buttons
        if not texts and not buttons:
            return None
        body = "\n\n".join(texts)[: outbound.MAX_TEXT].strip() or "Please choose:"
        return body, buttons

    async def run_turn(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """POST the turn to the Rasa server; return its messages.

        Raises:
            TurnFailed: unreachable, timeout, not 200 or a malformed answer.
        """
        if self._http is None:
            self._http = httpx.AsyncClient(trust_env=False)
        try:
            response = await self._http.post(
                self.url,
                content=json.dumps(body, ensure_ascii=False).encode("utf-8"),
                headers={
                    "Authorization": f"Bearer {self.token}",
                    "Content-Type": "application/json",
                },
                timeout=self.timeout,
            )
        except httpx.HTTPError as error:
            raise TurnFailed(f"Rasa server: {type(error).__name__}") from error
        if response.status_code != 200:
            raise TurnFailed(f"Rasa server answered {response.status_code}")
        try:
            messages = response.json()["messages"]
        except (ValueError, KeyError, TypeError) as error:
            raise TurnFailed("Rasa server: malformed answer") from error
        if not isinstance(messages, list):
            raise TurnFailed("Rasa server: malformed answer")
        return [
            {"text": m.get("text") or "", "buttons": m.get("buttons")}
            for m in messages
            if isinstance(m, dict) and isinstance(m.get("text") or "", str)
        ]

    async def _store(self, work: Callable[[Any], Any]) -> Any:
        """Run ``work(session)`` and commit, in a worker thread (retried on locks)."""
        return await asyncio.to_thread(run_unit, self.factory, work)

    def _notify(self) -> None:
        if self.on_queued is None:
            return
        try:
            self.on_queued()
        except Exception:  # noqa: BLE001 - the reply is queued; the worker polls
            logger.exception("email: waking the outbox worker failed")

    async def aclose(self, *, grace: float = 10.0) -> None:
        """Let mail being handled finish (up to ``grace`` s), then close the client."""
        if self._work:
            await asyncio.wait(set(self._work), timeout=grace)
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def _reason(error: BaseException) -> str:
    """A failure reason for logs: our own messages, else the exception type."""
    if isinstance(error, TurnFailed):
        return str(error)
    return type(error).__name__


async def build_server(
    handler: MailHandler,
    *,
    host: str,
    port: int,
    data_size_limit: int,
    hostname: str = "localhost",
) -> asyncio.AbstractServer:
    """Listen on ``host:port`` with aiosmtpd's ``SMTP`` protocol in the running loop.

    Mail over ``data_size_limit`` bytes is refused with 552 (by aiosmtpd, after
    the data is in, so the connection stays usable). ``hostname`` is the name
    in the greeting (given, so no DNS look-up happens per connection).

    Raises:
        OSError: the address cannot be bound.
    """
    loop = asyncio.get_running_loop()

    def protocol() -> SMTP:
        return SMTP(
            handler,
            data_size_limit=data_size_limit,
            enable_SMTPUTF8=True,
            hostname=hostname,
            ident=IDENT,
            loop=loop,
        )

    return await loop.create_server(protocol, host=host, port=port)


async def serve(settings: Any, *, stop: asyncio.Event) -> None:
    """Run the listener and the outbox workers (mail, SMS) until ``stop`` is set.

    This process is the one outbound sender of the stack: it also runs the SMS
    worker (``channels.sms_worker``), which texts the pending ``sms`` outbox rows
    through Twilio when Twilio is configured.

    Raises:
        ValueError: no ``CRM_CONSOLE_SECRET``; OSError: the port cannot be bound.
    """
    from channels.email_worker import EmailWorker
    from channels.sms_worker import SmsWorker

    if settings.console_secret is None:
        raise ValueError("CRM_CONSOLE_SECRET is required")
    factory = store_session_factory(settings.database_url, echo=settings.echo_sql)
    retries = {
        "max_attempts": settings.delivery_attempts,
        "base_delay": settings.delivery_retry_seconds,
    }
    worker = EmailWorker(settings, session_factory=factory, **retries)
    sms_worker = SmsWorker(settings, session_factory=factory, **retries)
    handler = MailHandler(
        recipients=settings.recipient_addresses,
        session_factory=factory,
        rasa_url=settings.rasa_control_url,
        token=email_ingress_token(settings.console_secret.get_secret_value()),
        max_message_chars=settings.max_message_chars,
        on_queued=worker.wake,
        replies_per_hour=settings.smtp_replies_per_hour,
    )
    domain = settings.recipient_addresses[0].partition("@")[2] or "localhost"
    server = await build_server(
        handler,
        host=settings.smtp_interface,
        port=settings.smtp_port,
        data_size_limit=settings.smtp_max_bytes,
        hostname=domain,
    )
    try:
        await worker.start()
        await sms_worker.start()
        count = len(settings.recipient_addresses)
        logger.info(
            "email: listening on %s:%s, accepting mail for %d address(es)",
            settings.smtp_interface,
            settings.smtp_port,
            count,
        )
        if not settings.smtp_relay_host:
            logger.info(
                "email: no SMTP_RELAY_HOST: replies wait in the outbox "
                "(crm outbox list)"
            )
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
        await handler.aclose()
        await worker.stop()
        await sms_worker.stop()
        logger.info("email: stopped")


async def _run(settings: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(settings, stop=stop)


def main() -> int:
    """Start the listener; return the exit code (2: bad settings, 1: no port)."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)-8s %(name)s - %(message)s",
    )
    # aiosmtpd logs envelope addresses at INFO: keep them out of the logs.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"email: {error}", file=sys.stderr)
        return 2
    if settings.console_secret is None:
        print("CRM_CONSOLE_SECRET is required", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run(settings))
    except OSError as error:  # e.g. the port is taken
        print(f"email: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
