"""Server-sent events: the live queue and a live conversation.

The browser opens an ``EventSource`` (plain HTTP, reconnects on its own, one
small script, no polling in the page). The server watches the store with one
cheap indexed query every ``app.state.watch_seconds`` (0.25 s), so any process
that writes the store (the Rasa server's contact history, another console) is
seen without a message bus.

- ``GET /events/queue``: ``event: queue`` whose data is the queue list as an
  HTML fragment (rendered by the same autoescaped template as the page), sent
  at once and whenever the open queue changes (``queue_fingerprint``).
- ``GET /events/handoffs/{id}?after=<interaction id>``: ``event: message`` per
  new interaction of the conversation (JSON; ``id:`` is the interaction id, so
  a reconnect resumes with ``Last-Event-ID``) and ``event: state`` (JSON
  status and claimer) at once and on every change. The page inserts message
  text with ``textContent``.

A comment line every 15 s keeps proxies from closing an idle stream; a stream
ends after 10 minutes, when the session ends or when the server shuts down
(``app.state.stopping``, ``console.server``), and the browser reconnects.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from console.auth import SESSION_COOKIE, current_staff
from console.pages import queue_context, render_queue_fragment
from console.store import in_store
from crm_store.errors import NotFound
from crm_store.services import console_views
from crm_store.services import staff as staff_service
from crm_store.services.staff import StaffIdentity

router = APIRouter(include_in_schema=False)
KEEPALIVE_SECONDS = 15.0
STREAM_SECONDS = 600.0
RECHECK_SESSION_SECONDS = 30.0
RETRY_MS = 2000


def sse(event: str | None, data: str, event_id: int | None = None) -> str:
    """Format one server-sent event (multi-line data split per line)."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in data.splitlines() or [""])
    return "\n".join(lines) + "\n\n"


def _stream(body: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


class _Clock:
    """Keep-alives, the stream's lifetime and the session re-check."""

    def __init__(self) -> None:
        self.started = self.last_sent = self.checked = time.monotonic()

    def sent(self) -> None:
        self.last_sent = time.monotonic()

    def keepalive_due(self) -> bool:
        return time.monotonic() - self.last_sent >= KEEPALIVE_SECONDS

    def expired(self, request: Request) -> bool:
        stopping = getattr(request.app.state, "stopping", False)
        return stopping or time.monotonic() - self.started >= STREAM_SECONDS

    def recheck_due(self) -> bool:
        due = time.monotonic() - self.checked >= RECHECK_SESSION_SECONDS
        if due:
            self.checked = time.monotonic()
        return due


async def _session_alive(request: Request) -> bool:
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    token = token or request.cookies.get(SESSION_COOKIE, "")
    identity = await in_store(
        request, lambda s: staff_service.identity_for_token(s, token)
    )
    return identity is not None


@router.get("/events/queue")
async def queue_events(
    request: Request, staff: StaffIdentity = Depends(current_staff)
) -> StreamingResponse:
    """The queue list, pushed at once and on every change."""
    every = request.app.state.watch_seconds

    async def body() -> AsyncIterator[str]:
        yield f"retry: {RETRY_MS}\n\n"
        clock = _Clock()
        seen = None
        while not clock.expired(request):
            fingerprint = await in_store(request, console_views.queue_fingerprint)
            if fingerprint != seen:
                data = await in_store(request, lambda s: queue_context(s, staff))
                yield sse("queue", render_queue_fragment(request, staff, data))
                seen = fingerprint
                clock.sent()
            elif clock.keepalive_due():
                yield ": keep-alive\n\n"
                clock.sent()
            if clock.recheck_due() and not await _session_alive(request):
                return
            await asyncio.sleep(every)

    return _stream(body())


def _messages_after(
    conversation_id: str, after_id: int, session: Session
) -> list[console_views.MessageView]:
    return console_views.messages_after(
        session, conversation_id=conversation_id, after_id=after_id
    )


@router.get("/events/handoffs/{handoff_id}")
async def handoff_events(
    request: Request,
    handoff_id: int,
    after: int = Query(0, ge=0),
    staff: StaffIdentity = Depends(current_staff),
) -> StreamingResponse:
    """New messages of the handoff's conversation and its state changes."""
    every = request.app.state.watch_seconds
    state = await in_store(
        request, lambda s: console_views.handoff_state(s, handoff_id=handoff_id)
    )
    if state is None:
        raise NotFound(f"handoff {handoff_id} not found")
    last_event = request.headers.get("last-event-id", "")
    last_id = int(last_event) if last_event.isdigit() else after
    conversation_id = state.conversation_id
    del staff

    async def body() -> AsyncIterator[str]:
        nonlocal last_id
        yield f"retry: {RETRY_MS}\n\n"
        clock = _Clock()
        seen = None
        while not clock.expired(request):
            current = await in_store(
                request,
                lambda s: console_views.handoff_state(s, handoff_id=handoff_id),
            )
            if current is not None and current != seen:
                payload = {"status": current.status, "claimed_by": current.claimed_by}
                yield sse("state", json.dumps(payload))
                seen = current
                clock.sent()
            if conversation_id:
                messages = await in_store(
                    request,
                    functools.partial(_messages_after, conversation_id, last_id),
                )
                for message in messages:
                    yield sse("message", json.dumps(message.as_dict()), message.id)
                    last_id = message.id
                    clock.sent()
            if clock.keepalive_due():
                yield ": keep-alive\n\n"
                clock.sent()
            if clock.recheck_due() and not await _session_alive(request):
                return
            await asyncio.sleep(every)

    return _stream(body())
