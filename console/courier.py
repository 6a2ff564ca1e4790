"""The console's outbound path to the customer's channel, through the Rasa server.

The console writes agent replies and queue updates to the outbox
(``crm_store.services.outbound``: pending row + contact-history entry); the
courier then gets them to the customer by the tracker key's channel:

- ``web:`` — pushed to the web chat room over the Rasa server's control route
  (``POST /webhooks/control/push``, ``channels.control``) and marked sent once
  the Rasa server accepted them. A customer without an open tab still sees
  them: the chat page re-reads its history (which already holds them) when it
  connects. When the push fails (Rasa down, timeout, 5xx) each message's
  ``attempts`` grows and a retry is scheduled with exponential back-off
  (``base_delay`` doubling up to ``max_delay``); after ``max_attempts`` it is
  marked ``failed`` (it stays in the history). A 400 answer is final at once.
- ``telegram:`` — sent with the Bot API (``channels.telegram_sender``, which
  itself retries 429/5xx a few times), one message after the other; a failure
  takes the same back-off and ``failed`` path as a web push.
- ``rest:`` — left pending: the REST channel appends them to the client's next
  answer (``channels.rest``).
- ``email:`` — left pending: the e-mail process's worker sends them through the
  relay as replies in the mail thread (``channels.email_worker``).
- ``sms:`` and ``voice:`` — left pending: the SMS worker in the e-mail process
  texts them through Twilio (``channels.sms_worker``; a caller gets the agent's
  reply as a text).

``pause`` and ``hand_back`` call the control routes that pause the bot on a
conversation and hand it back (``handed_back`` intent); ``stats`` reads the
Rasa server's counters. Nothing here raises to the caller: failures are logged
with the tracker key and the error kind (never message text), and the result
says what happened. Every call carries the bearer token derived from
``CRM_CONSOLE_SECRET`` (``channels.chat_tokens.control_token``).

One courier per console process: it serialises deliveries per tracker key, so
a message is pushed once even when two agent actions deliver at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any

import httpx
from sqlalchemy.orm import sessionmaker

from channels.backoff import backoff_delay
from channels.chat_tokens import control_token
from channels.keys import split_tracker_key
from channels.telegram_sender import DeliveryFailed, TelegramSender
from crm_settings import Settings
from crm_store.db import run_unit
from crm_store.db import session_factory as store_session_factory
from crm_store.services import outbound

logger = logging.getLogger(__name__)

CONTROL_PATH = "/webhooks/control"
BATCH = 50
# Channels whose messages the courier delivers itself.
PUSHED_CHANNELS = ("web", "telegram")


class DeliveryError(Exception):
    """A control call that did not succeed; ``final`` means retrying is useless."""

    def __init__(self, message: str, *, final: bool = False) -> None:
        """Remember whether a retry could help."""
        super().__init__(message)
        self.final = final


class Courier:
    """Delivers pending conversation messages and controls the bot (see module)."""

    def __init__(
        self,
        settings: Settings,
        *,
        session_factory: sessionmaker | None = None,
        timeout: float = 5.0,
        max_attempts: int = 8,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
    ) -> None:
        """Configure the courier.

        Args:
            settings: ``rasa_control_url``, ``console_secret``, ``database_url``.
            session_factory: the store (default: the one of ``database_url``).
            timeout: seconds per call to the Rasa server.
            max_attempts: failed pushes before a message is marked failed.
            base_delay: first retry delay in seconds (doubles per attempt).
            max_delay: longest retry delay in seconds.
        """
        self.base_url = settings.rasa_control_url + CONTROL_PATH
        secret = settings.console_secret
        self.token = control_token(secret.get_secret_value()) if secret else None
        self._factory = session_factory
        self._database_url = settings.database_url
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._retries: dict[str, asyncio.Task] = {}
        token = settings.telegram_bot_token
        self._telegram_token = token.get_secret_value() if token else None
        self._telegram_api_url = settings.telegram_api_url
        self._telegram_sender: TelegramSender | None = None
        self._telegram_loop: asyncio.AbstractEventLoop | None = None

    # -- the store -----------------------------------------------------------

    @property
    def session_factory(self) -> sessionmaker:
        """The store the outbox lives in."""
        if self._factory is None:
            self._factory = store_session_factory(self._database_url)
        return self._factory

    def _unit(self, work: Any) -> Any:
        return run_unit(self.session_factory, work)

    async def _in_store(self, work: Any) -> Any:
        return await asyncio.to_thread(self._unit, work)

    # -- the Rasa server -----------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(timeout=self.timeout)
            self._loop = loop
        return self._client

    async def _call(
        self, method: str, route: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Call a control route; return its JSON object.

        Raises:
            DeliveryError: no secret, unreachable, timeout or a non-200 answer.
        """
        if self.token is None:
            raise DeliveryError("CRM_CONSOLE_SECRET is not set")
        try:
            answer = await self._http().request(
                method,
                f"{self.base_url}/{route}",
                json=body,
                headers={"Authorization": f"Bearer {self.token}"},
            )
        except httpx.HTTPError as error:
            kind = type(error).__name__
            raise DeliveryError(f"Rasa server unreachable ({kind})") from None
        if answer.status_code != 200:
            try:
                reason = str(answer.json().get("error", ""))[:200]
            except ValueError:
                reason = ""
            raise DeliveryError(
                f"HTTP {answer.status_code} {reason}".strip(),
                final=answer.status_code == 400,
            )
        try:
            data = answer.json()
        except ValueError as error:
            raise DeliveryError("the Rasa server answered no JSON") from error
        return data if isinstance(data, dict) else {}

    # -- public API ----------------------------------------------------------

    async def deliver(self, tracker_key: str) -> int:
        """Deliver the key's pending messages; return how many were sent now.

        ``web:`` and ``telegram:`` keys are delivered here; others stay pending
        for their channel (``rest:`` the next answer, ``email:`` the e-mail
        worker). Never raises.
        """
        parts = split_tracker_key(tracker_key or "")
        if parts is None or parts[0] not in PUSHED_CHANNELS:
            return 0
        lock = self._locks.get(tracker_key)
        if lock is None:
            lock = self._locks[tracker_key] = asyncio.Lock()
        try:
            async with lock:
                return await self._deliver_key(tracker_key, *parts)
        except Exception:  # noqa: BLE001 - the caller's step must still succeed
            logger.exception("courier: delivery to %s failed", tracker_key)
            return 0

    async def deliver_pending(self) -> int:
        """Deliver every pushed key's pending messages (e.g. at start-up).

        Messages left pending by a stopped console are otherwise only retried
        at the key's next delivery. Never raises; returns how many were sent.
        """
        keys: list[str] = []
        for channel in PUSHED_CHANNELS:
            try:
                keys += await self._in_store(
                    lambda s, c=channel: outbound.pending_tracker_keys(s, f"{c}:")
                )
            except Exception:  # noqa: BLE001
                logger.exception("courier: pending %s messages not read", channel)
        sent = 0
        for key in keys:
            sent += await self.deliver(key)
        return sent

    async def _deliver_key(self, key: str, channel: str, raw_id: str) -> int:
        sent = 0
        while True:
            pending = await self._in_store(
                lambda s: outbound.pending_messages(s, key, limit=BATCH)
            )
            if not pending:
                return sent
            if channel == "web":
                delivered, error = await self._push_web(key, pending)
            else:
                delivered, error = await self._push_telegram(raw_id, pending)
            if delivered:
                sent += await self._in_store(
                    lambda s, ids=delivered: outbound.mark_sent(s, ids)
                )
            if error is not None:
                rest = [m for m in pending if m.id not in set(delivered)]
                await self._failed(key, rest, error)
                return sent
            if len(pending) < BATCH:
                return sent

    async def _push_web(
        self, key: str, pending: list[outbound.ConversationMessage]
    ) -> tuple[list[int], DeliveryError | None]:
        """Push a batch to the web chat room through the Rasa server."""
        body = {
            "tracker_key": key,
            "messages": [
                {
                    "text": m.text,
                    "buttons": m.buttons,
                    "author": m.author,
                    "ref": f"outbox:{m.id}",
                }
                for m in pending
            ],
        }
        try:
            await self._call("POST", "push", body)
        except DeliveryError as error:
            return [], error
        return [m.id for m in pending], None

    def _telegram(self) -> TelegramSender | None:
        if self._telegram_token is None:
            return None
        loop = asyncio.get_running_loop()
        if self._telegram_sender is None or self._telegram_loop is not loop:
            self._telegram_sender = TelegramSender(
                self._telegram_token,
                self._telegram_api_url,
                max_attempts=3,
                timeout=self.timeout,
            )
            self._telegram_loop = loop
        return self._telegram_sender

    async def _push_telegram(
        self, raw_id: str, pending: list[outbound.ConversationMessage]
    ) -> tuple[list[int], DeliveryError | None]:
        """Send each message to the Telegram chat, oldest first; stop at a failure."""
        sender = self._telegram()
        if sender is None:
            return [], DeliveryError("TELEGRAM_BOT_TOKEN is not set")
        try:
            chat_id = int(raw_id)
        except ValueError:
            return [], DeliveryError("not a Telegram user id", final=True)
        delivered: list[int] = []
        for message in pending:
            try:
                await sender.send_text(chat_id, message.text, message.buttons or None)
            except DeliveryFailed as error:
                final = bool(getattr(error, "final", False))
                return delivered, DeliveryError(str(error)[:200], final=final)
            delivered.append(message.id)
        return delivered, None

    async def _failed(
        self,
        key: str,
        pending: list[outbound.ConversationMessage],
        error: DeliveryError,
    ) -> None:
        """Count the attempt of each message; schedule a retry while any is left."""
        reason = str(error)

        def work(session: Any) -> int:
            left = 0
            for message in pending:
                final = error.final or message.attempts + 1 >= self.max_attempts
                outbound.mark_failed(session, message.id, reason, final=final)
                left += not final
            return left

        left = await self._in_store(work)
        attempts = min(m.attempts for m in pending) + 1
        logger.warning(
            "courier: push to %s failed (%s); %d message(s) pending, %d given up",
            key,
            reason,
            left,
            len(pending) - left,
        )
        if left:
            self._schedule(key, attempts)

    def _schedule(self, key: str, attempts: int) -> None:
        if key in self._retries:
            return
        delay = backoff_delay(attempts, self.base_delay, self.max_delay)

        async def retry() -> None:
            try:
                await asyncio.sleep(delay)
            finally:
                self._retries.pop(key, None)
            await self.deliver(key)

        self._retries[key] = asyncio.get_running_loop().create_task(retry())

    async def pause(self, tracker_key: str) -> bool:
        """Pause the bot on the conversation; False (logged) if that failed."""
        try:
            await self._call("POST", "pause", {"tracker_key": tracker_key})
        except DeliveryError as error:
            logger.error("courier: pausing %s failed (%s)", tracker_key, error)
            return False
        return True

    async def resume(self, tracker_key: str) -> bool:
        """Let the bot answer again without a turn of its own (after a resolve)."""
        try:
            await self._call("POST", "resume", {"tracker_key": tracker_key})
        except DeliveryError as error:
            logger.error("courier: resuming %s failed (%s)", tracker_key, error)
            return False
        return True

    async def hand_back(self, tracker_key: str) -> list[dict[str, Any]]:
        """Hand the conversation back to the bot.

        Returns the bot's answers when the channel cannot receive them live (not
        ``web:``); ``[]`` otherwise or on failure (logged).
        """
        try:
            data = await self._call("POST", "handback", {"tracker_key": tracker_key})
        except DeliveryError as error:
            logger.error("courier: handing back %s failed (%s)", tracker_key, error)
            return []
        messages = data.get("messages")
        return [m for m in messages if isinstance(m, dict)] if messages else []

    async def stats(self) -> dict[str, Any] | None:
        """The Rasa server's counters (``lost_events``), None when unreachable."""
        try:
            return await self._call("GET", "stats")
        except DeliveryError as error:
            logger.warning("courier: no stats from the Rasa server (%s)", error)
            return None

    async def retries_done(self) -> None:
        """Wait until the scheduled retries have run (tests, shutdown)."""
        while self._retries:
            await asyncio.gather(*list(self._retries.values()), return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel scheduled retries and close the HTTP client."""
        for task in list(self._retries.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._retries.clear()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None
        if self._telegram_sender is not None:
            with contextlib.suppress(Exception):
                await self._telegram_sender.aclose()
            self._telegram_sender = None
