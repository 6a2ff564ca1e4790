"""The customer web chat page: ``GET /chat`` and ``GET /chat/history``.

The page (``templates/chat.html``, ``static/chat.js``, ``static/chat.css``, the
socket.io client ``static/vendor/socket.io.min.js``; all under ``/static``)
talks to the Rasa server's web chat socket (``channels.webchat``):

- ``GET /chat`` signs a chat token (``channels.chat_tokens``, 7 days) and sets it
  as the HttpOnly cookie ``crm_chat`` (``SameSite=Lax``, path ``/chat``, Secure
  in production). A still valid cookie keeps its session (the token is renewed);
  otherwise a new random session starts. The page carries the same token for
  the socket's ``auth``. The socket URL is ``CRM_CHAT_SOCKET_URL`` when set,
  else the page's own host on ``RASA_PORT``.
- ``GET /chat/history`` (cookie) returns the session's latest conversation
  from the contact history, oldest first, as ``{"messages": [{"id", "author",
  "text", "at", "buttons"?, "ref"?}]}`` with authors ``customer``, ``bot``,
  ``agent``, ``system``. Internal rows (complaint markers, the CSAT record, the
  invisible hand-back trigger) are left out. No or a bad cookie -> 401 JSON.

The router reads ``request.app.state.settings`` and
``request.app.state.session_factory``; ``console.app`` includes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from channels.chat_tokens import (
    DEFAULT_TTL_SECONDS,
    InvalidChatToken,
    issue_chat_token,
    verify_chat_token,
)
from channels.keys import tracker_key
from crm_settings import Settings
from crm_store.services.history import latest_conversation
from crm_store.services.interactions import transcript

router = APIRouter()
TEMPLATES = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")
COOKIE = "crm_chat"
COOKIE_PATH = "/chat"
MAX_HISTORY = 200
# Rasa writes an intent triggered from outside (the hand-back) as a user
# message "EXTERNAL: <intent>": the customer never said it.
EXTERNAL_PREFIX = "EXTERNAL: "
OUT_AUTHORS = ("bot", "agent", "system")
NOT_CONFIGURED = "The chat is not available right now."


def _secret(settings: Settings) -> str | None:
    secret = settings.console_secret
    return secret.get_secret_value() if secret is not None else None


def _session_of(request: Request, secret: str) -> str | None:
    try:
        return verify_chat_token(secret, request.cookies.get(COOKIE))
    except InvalidChatToken:
        return None


@router.get("/chat", response_class=HTMLResponse, include_in_schema=False)
async def chat_page(request: Request) -> Response:
    """The chat page with a (renewed) session token in its cookie."""
    settings: Settings = request.app.state.settings
    secret = _secret(settings)
    if secret is None:
        return HTMLResponse(NOT_CONFIGURED, status_code=503)
    token, _ = issue_chat_token(secret, _session_of(request, secret))
    response = TEMPLATES.TemplateResponse(
        "chat.html",
        {
            "request": request,
            "token": token,
            "socket_url": settings.chat_socket_url or "",
            "socket_port": settings.rasa_port,
            "max_chars": settings.max_message_chars,
        },
    )
    response.set_cookie(
        COOKIE,
        token,
        max_age=DEFAULT_TTL_SECONDS,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=settings.environment == "production",
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/chat/history", include_in_schema=False)
async def chat_history(request: Request) -> Response:
    """The session's messages, oldest first (see the module docstring)."""
    settings: Settings = request.app.state.settings
    secret = _secret(settings)
    if secret is None:
        return JSONResponse({"error": NOT_CONFIGURED}, status_code=503)
    session_id = _session_of(request, secret)
    if session_id is None:
        return JSONResponse(
            {"error": "no valid chat session: open /chat again"},
            status_code=401,
            headers={"Cache-Control": "no-store"},
        )
    factory: sessionmaker = request.app.state.session_factory
    key = tracker_key("web", session_id)
    messages = await run_in_threadpool(read_history, factory, key)
    return JSONResponse({"messages": messages}, headers={"Cache-Control": "no-store"})


def read_history(factory: sessionmaker, key: str) -> list[dict[str, Any]]:
    """The last ``MAX_HISTORY`` customer-visible messages of the key's conversation."""
    with factory() as session:
        return customer_messages(session, key)[-MAX_HISTORY:]


def customer_messages(session: Session, key: str) -> list[dict[str, Any]]:
    """The customer-visible messages of the key's latest conversation."""
    conversation = latest_conversation(session, tracker_key=key)
    if conversation is None:
        return []
    messages = []
    for row in transcript(session, conversation_id=conversation.id):
        message = visible_message(row)
        if message is not None:
            messages.append(message)
    return messages


def visible_message(row: Any) -> dict[str, Any] | None:
    """The page's view of an interaction row, None for rows the customer never saw."""
    text, event_id = row.text, row.event_id or ""
    if not isinstance(text, str) or not text.strip():
        return None
    if row.direction == "in":
        if row.author != "customer" or event_id.startswith("csat:"):
            return None
        if text.startswith(EXTERNAL_PREFIX):
            return None
    elif row.author not in OUT_AUTHORS:
        return None
    message: dict[str, Any] = {
        "id": row.id,
        "author": row.author,
        "text": text,
        "at": row.occurred_at.replace(microsecond=0).isoformat() + "Z",
    }
    meta = row.meta if isinstance(row.meta, dict) else {}
    buttons = _buttons(meta.get("buttons")) if row.direction == "out" else []
    if buttons:
        message["buttons"] = buttons
    if event_id.startswith("outbox:"):
        message["ref"] = event_id
    return message


def _buttons(raw: Any) -> list[dict[str, str]]:
    """Buttons from history metadata: titles (bot) or title/payload (outbox)."""
    if not isinstance(raw, list):
        return []
    buttons = []
    for item in raw:
        if isinstance(item, str) and item:
            buttons.append({"title": item})
        elif isinstance(item, dict) and isinstance(item.get("title"), str):
            button = {"title": item["title"]}
            if isinstance(item.get("payload"), str):
                button["payload"] = item["payload"]
            buttons.append(button)
    return buttons
