"""What an agent does to a handoff, shared by the pages and the JSON API.

Each step is one unit of work on the store, then the calls to the Rasa server
through the courier (``console.courier``), which never raise: an unreachable
Rasa server leaves the message pending in the outbox and the step succeeds.

- claim -> pause the bot on the conversation, tell the others in the queue
  their new position;
- agent message -> written to the outbox and the contact history, delivered;
- resolve -> with hand-back the bot resumes (``courier.hand_back``); queue
  positions are announced again;
- convert to ticket -> a ticket for the customer, the handoff resolved.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from console.store import run_unit
from crm_store.errors import Conflict, Forbidden, InvalidInput
from crm_store.services import outbound, queue
from crm_store.services.staff import StaffIdentity, role_at_least

logger = logging.getLogger(__name__)
T = TypeVar("T")


async def in_app_store(app: FastAPI, work: Callable[[Session], T]) -> T:
    """Run ``work`` as one unit of work on ``app``'s store, in a worker thread."""
    return await run_in_threadpool(run_unit, app.state.session_factory, work)


def tracker_key_of(view: Any) -> str | None:
    """The handoff's tracker key (its own field, else the packet's)."""
    key = getattr(view, "tracker_key", None)
    if not key:
        packet = getattr(view, "packet", None) or {}
        key = packet.get("tracker_key") if isinstance(packet, dict) else None
    return key or None


def wait_text(wait: dt.timedelta | None) -> str:
    """Say an expected wait the way a customer reads it."""
    if wait is None:
        return ""
    minutes = math.ceil(wait.total_seconds() / 60)
    if minutes <= 1:
        return " (expected wait: about a minute)"
    return f" (expected wait: about {minutes} minutes)"


def position_text(position: int, wait: dt.timedelta | None) -> str:
    """The queue update a waiting customer receives."""
    if position <= 1:
        return "Good news: you're next in line for a member of our team" + (
            wait_text(wait) + "."
        )
    return f"Update: you're now number {position} in the queue{wait_text(wait)}."


def in_background(app: FastAPI, work: Coroutine[Any, Any, Any]) -> None:
    """Run ``work`` after the response (kept until done; cancelled at shutdown)."""
    task = asyncio.create_task(work)
    app.state.background.add(task)
    task.add_done_callback(app.state.background.discard)


# Channels not told each change of place in the queue: a mail per change would
# flood the customer's inbox (the bot's reply already gave place and wait).
QUIET_QUEUE_PREFIXES = ("email:",)


async def deliver_all(app: FastAPI, keys: list[str]) -> None:
    """Deliver the pending messages of each tracker key (never raises)."""
    for key in keys:
        await app.state.courier.deliver(key)


async def announce_positions(app: FastAPI, *, wait: bool = True) -> int:
    """Tell waiting customers whose queue position changed; return how many.

    One unit of work: the position updates (``told_position`` is set) and
    their outbox messages commit together, then each conversation's pending
    messages are delivered: awaited, or (``wait=False``, after an agent's
    action) in the background so the agent does not wait for the Rasa server.
    Runs one at a time per process.
    """
    lock: asyncio.Lock = app.state.announce_lock

    def work(session: Session) -> list[str]:
        keys: list[str] = []
        for update in queue.position_updates(session):
            if not update.conversation_id:
                continue
            if (update.tracker_key or "").startswith(QUIET_QUEUE_PREFIXES):
                continue  # the bot's reply told the place; no mail per change
            outbound.queue_conversation_message(
                session,
                conversation_id=update.conversation_id,
                text=position_text(update.position, update.expected_wait),
                author="system",
                purpose="queue_update",
                handoff_id=update.handoff_id,
            )
            if update.tracker_key and update.tracker_key not in keys:
                keys.append(update.tracker_key)
        return keys

    async with lock:
        keys = await in_app_store(app, work)
        if wait:
            await deliver_all(app, keys)
    if keys and not wait:
        in_background(app, deliver_all(app, keys))
    return len(keys)


async def claim(request: Request, handoff_id: int, staff: StaffIdentity) -> Any:
    """Claim a waiting handoff for ``staff`` (``Conflict`` if someone was faster)."""
    app = request.app

    def work(session: Session) -> Any:
        queue.claim(session, handoff_id, staff.staff_id)
        return queue.get_handoff(session, handoff_id)

    view = await in_app_store(app, work)
    key = tracker_key_of(view)
    if key:
        await app.state.courier.pause(key)
    await announce_positions(app, wait=False)
    return view


def _require_claimer(view: Any, staff: StaffIdentity) -> None:
    if view.status != "claimed":
        raise Conflict(f"handoff {view.id} is {view.status}; claim it first")
    if view.claimed_by != staff.staff_id and not role_at_least(staff.role, "manager"):
        raise Forbidden(f"handoff {view.id} is claimed by {view.claimed_by_username}")


async def send_message(
    request: Request, handoff_id: int, staff: StaffIdentity, text: str
) -> Any:
    """Send the agent's reply through the customer's channel; return the message."""
    app = request.app

    def work(session: Session) -> tuple[Any, Any]:
        view = queue.get_handoff(session, handoff_id)
        _require_claimer(view, staff)
        if not view.conversation_id:
            raise InvalidInput("this handoff has no conversation to reply to")
        message = outbound.queue_conversation_message(
            session,
            conversation_id=view.conversation_id,
            text=text,
            author="agent",
            purpose="agent_reply",
            handoff_id=handoff_id,
            staff_username=staff.username,
        )
        return view, message

    view, message = await in_app_store(app, work)
    key = message.tracker_key or tracker_key_of(view)
    if key:
        await app.state.courier.deliver(key)
    return message


async def add_note(
    request: Request, handoff_id: int, staff: StaffIdentity, text: str
) -> Any:
    """Add an internal note (any staff member; never sent to the customer)."""
    return await in_app_store(
        request.app, lambda s: queue.add_note(s, handoff_id, staff.staff_id, text)
    )


async def resolve(
    request: Request,
    handoff_id: int,
    staff: StaffIdentity,
    *,
    handback: bool,
    note: str | None,
) -> Any:
    """Resolve a claimed handoff, or hand the conversation back to the bot."""
    app = request.app
    manager = role_at_least(staff.role, "manager")

    def work(session: Session) -> Any:
        queue.resolve(
            session,
            handoff_id,
            staff.staff_id,
            handback=handback,
            note=(note or "").strip() or None,
            allow_other=manager,
        )
        return queue.get_handoff(session, handoff_id)

    view = await in_app_store(app, work)
    await give_back(app, view, handback=handback)
    await announce_positions(app, wait=False)
    return view


async def give_back(app: FastAPI, view: Any, *, handback: bool) -> None:
    """Un-pause the bot after a resolution; with ``handback`` it speaks first.

    A hand-back's answers that the channel cannot take live (REST) go to the
    outbox and leave with the answer to the customer's next message.
    """
    key = tracker_key_of(view)
    if not key:
        return
    if not handback:
        await app.state.courier.resume(key)
        return
    answers = await app.state.courier.hand_back(key)
    texts = [a for a in answers if isinstance(a.get("text"), str) and a["text"].strip()]
    if not texts or not view.conversation_id:
        return

    if key.startswith("email:"):  # one mail collecting the turn's answers
        buttons = next(
            (a["buttons"] for a in reversed(texts) if a.get("buttons")), None
        )
        texts = [{"text": "\n\n".join(a["text"] for a in texts), "buttons": buttons}]

    def queue_answers(session: Session) -> None:
        for answer in texts:
            outbound.queue_conversation_message(
                session,
                conversation_id=view.conversation_id,
                text=answer["text"],
                author="bot",
                purpose="bot_reply",
                buttons=answer.get("buttons") or None,
            )

    await in_app_store(app, queue_answers)
    # Telegram takes them now; REST clients and e-mail pick them up themselves.
    await app.state.courier.deliver(key)


async def convert_to_ticket(
    request: Request,
    handoff_id: int,
    staff: StaffIdentity,
    *,
    subject: str,
    description: str | None,
) -> str:
    """Open a ticket from the handoff (which is resolved); return its number.

    The bot answers the customer again afterwards (``give_back``).
    """
    app = request.app

    def work(session: Session) -> tuple[str, Any]:
        number = queue.convert_to_ticket(
            session,
            handoff_id,
            staff.staff_id,
            subject=subject,
            description=(description or "").strip() or None,
        )
        return number, queue.get_handoff(session, handoff_id)

    number, view = await in_app_store(app, work)
    await give_back(app, view, handback=False)
    await announce_positions(app, wait=False)
    return number


async def watch_queue(app: FastAPI, every: float) -> None:
    """Announce position changes every ``every`` seconds (new arrivals reorder).

    Runs for the app's lifetime; a failing round is logged (no customer data)
    and the next one tries again.
    """
    while True:
        await asyncio.sleep(every)
        try:
            await announce_positions(app)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - keep watching
            logger.warning("queue position round failed: %s", type(exc).__name__)
