"""Jinja2 templates of the console: autoescaped, with a few display filters.

Autoescaping is on for every template (Starlette's default); no template marks
customer text ``|safe``. Times in the store are naive UTC and shown as such.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from crm_store.services.staff import role_at_least

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def iso(value: dt.datetime | None) -> str:
    """ISO 8601 UTC with a ``Z`` (for ``datetime`` attributes and scripts)."""
    return "" if value is None else value.replace(microsecond=0).isoformat() + "Z"


def when(value: dt.datetime | None) -> str:
    """``2026-11-01 12:00`` (UTC)."""
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M")


def day(value: dt.datetime | None) -> str:
    """``2026-11-01``."""
    return "" if value is None else value.strftime("%Y-%m-%d")


def duration(seconds: float | int | None) -> str:
    """A short human duration: ``45 s``, ``12 min``, ``3 h 5 min``, ``2 d``."""
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} d"


def ago(value: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """How long ago ``value`` was, as ``duration``."""
    if value is None:
        return ""
    now = now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    return duration((now - value).total_seconds())


def money(value: Decimal | None) -> str:
    """``1234.50 EUR`` or a dash."""
    return "—" if value is None else f"{value} EUR"


def make_templates() -> Jinja2Templates:
    """The console's template set with its filters."""
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    env = templates.env
    env.autoescape = True
    env.filters.update(
        iso=iso, when=when, day=day, duration=duration, ago=ago, money=money
    )
    return templates


TICKET_NUMBER = re.compile(r"^T-[A-Z0-9]{1,30}$")
NOTICES = {
    "claimed": ("ok", "You claimed this conversation. The bot is paused."),
    "lost": ("warn", "Someone else claimed it first."),
    "sent": ("ok", "Message sent."),
    "noted": ("ok", "Note added."),
    "resolved": ("ok", "Resolved."),
    "handed_back": ("ok", "Handed back to the bot."),
    "ticket": ("ok", "Ticket opened and the handoff resolved."),
}


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """Render a page with the signed-in staff member and an optional notice."""
    staff = getattr(request.state, "staff", None)
    code = request.query_params.get("notice", "")
    notice = NOTICES.get(code)
    number = request.query_params.get("number", "")
    if notice and code == "ticket" and TICKET_NUMBER.match(number):
        notice = (notice[0], f"Ticket {number} opened and the handoff resolved.")
    full = {
        "request": request,
        "staff": staff,
        "is_manager": bool(staff and role_at_least(staff.role, "manager")),
        "is_admin": bool(staff and role_at_least(staff.role, "admin")),
        "notice": {"kind": notice[0], "text": notice[1]} if notice else None,
        **(context or {}),
    }
    return request.app.state.templates.TemplateResponse(
        name, full, status_code=status, headers=headers
    )
