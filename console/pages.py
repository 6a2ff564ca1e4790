"""The console's HTML pages (server-rendered; forms post and redirect back).

/ (queue), /handoffs/{id} (conversation with its packet), /customers and
/customers/{id} (customer 360), /conversations/{id} (a transcript), /manager
(manager+) and /admin (admin). Every form carries the session's CSRF token.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from console import workflow
from console.auth import current_staff, require_role
from console.jsonout import plain
from console.render import render
from console.store import in_store
from console.views import customer_360, handoff_page
from crm_store.errors import Conflict, InvalidInput
from crm_store.services import console_views, queue
from crm_store.services import staff as staff_service
from crm_store.services.staff import StaffIdentity, role_at_least

router = APIRouter(include_in_schema=False)
MAX_TEXT = 4000


def queue_context(session: Session, staff: StaffIdentity) -> dict[str, Any]:
    """What the queue list shows: waiting entries in order, and mine."""
    return {
        "waiting": queue.waiting_queue(session),
        "mine": queue.handoffs_by_status(session, "claimed", staff_id=staff.staff_id),
    }


def render_queue_fragment(request: Request, staff: StaffIdentity, data: dict) -> str:
    """The queue list as an HTML fragment (the page and its live updates)."""
    template = request.app.state.templates.get_template("_queue.html")
    return template.render({"staff": staff, **data})


def _hours(request: Request) -> dict[str, Any]:
    hours = request.app.state.agent_hours
    return {"hours_open": hours.is_open(_now()), "hours_text": hours.describe()}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _back(handoff_id: int, notice: str, extra: str = "") -> RedirectResponse:
    return RedirectResponse(
        f"/handoffs/{handoff_id}?notice={notice}{extra}", status_code=303
    )


@router.get("/")
async def queue_page(
    request: Request, staff: StaffIdentity = Depends(current_staff)
) -> Response:
    """The queue: waiting conversations in priority order, and mine."""
    data = await in_store(request, lambda s: queue_context(s, staff))
    return render(request, "queue.html", {"nav": "queue", **data, **_hours(request)})


@router.post("/handoffs/{handoff_id}/claim")
async def claim_form(
    request: Request, handoff_id: int, staff: StaffIdentity = Depends(current_staff)
) -> Response:
    """Claim a waiting conversation; losing the race says so on the page."""
    try:
        await workflow.claim(request, handoff_id, staff)
    except Conflict:
        return _back(handoff_id, "lost")
    return _back(handoff_id, "claimed")


@router.get("/handoffs/{handoff_id}")
async def handoff_view(
    request: Request, handoff_id: int, staff: StaffIdentity = Depends(current_staff)
) -> Response:
    """A handed-off conversation: packet, transcript, reply box, notes, actions."""
    page = await in_store(request, lambda s: handoff_page(s, handoff_id))
    h = page.handoff
    can_act = h.status == "claimed" and (
        h.claimed_by == staff.staff_id or role_at_least(staff.role, "manager")
    )
    return render(
        request,
        "handoff.html",
        {
            "nav": "queue",
            "h": h,
            "claimer": getattr(h, "claimed_by_username", None),
            "notes": page.notes,
            "messages": page.messages,
            "undelivered": page.conversation.undelivered if page.conversation else [],
            "last_message_id": page.last_message_id,
            "can_act": can_act,
            "canned": request.app.state.canned_replies,
        },
    )


@router.post("/handoffs/{handoff_id}/messages")
async def message_form(
    request: Request,
    handoff_id: int,
    text: str = Form("", max_length=MAX_TEXT * 2),
    staff: StaffIdentity = Depends(current_staff),
) -> Response:
    """Send a reply to the customer (JSON answer for the page's script)."""
    message = await workflow.send_message(request, handoff_id, staff, text)
    if _wants_json(request):
        return JSONResponse(plain(message), status_code=201)
    return _back(handoff_id, "sent", "#reply")


@router.post("/handoffs/{handoff_id}/notes")
async def note_form(
    request: Request,
    handoff_id: int,
    text: str = Form("", max_length=MAX_TEXT * 2),
    staff: StaffIdentity = Depends(current_staff),
) -> Response:
    """Add an internal note."""
    await workflow.add_note(request, handoff_id, staff, text)
    return _back(handoff_id, "noted", "#notes-title")


@router.post("/handoffs/{handoff_id}/resolve")
async def resolve_form(
    request: Request,
    handoff_id: int,
    action: str = Form("resolve"),
    note: str = Form("", max_length=MAX_TEXT * 2),
    staff: StaffIdentity = Depends(current_staff),
) -> Response:
    """Resolve, or hand the conversation back to the bot."""
    if action not in ("resolve", "handback"):
        raise InvalidInput("action must be resolve or handback")
    handback = action == "handback"
    await workflow.resolve(request, handoff_id, staff, handback=handback, note=note)
    return _back(handoff_id, "handed_back" if handback else "resolved")


@router.post("/handoffs/{handoff_id}/ticket")
async def ticket_form(
    request: Request,
    handoff_id: int,
    subject: str = Form("", max_length=400),
    description: str = Form("", max_length=MAX_TEXT * 2),
    staff: StaffIdentity = Depends(current_staff),
) -> Response:
    """Open a ticket from the conversation; the handoff is resolved."""
    number = await workflow.convert_to_ticket(
        request, handoff_id, staff, subject=subject, description=description
    )
    return _back(handoff_id, "ticket", f"&number={number}")


@router.get("/customers")
async def customers_page(
    request: Request,
    q: str = Query("", max_length=100),
    staff: StaffIdentity = Depends(current_staff),
) -> Response:
    """Search customers by name, e-mail, phone or id."""
    results: list = []
    error = None
    if q.strip():
        try:
            results = await in_store(
                request, lambda s: console_views.find_customers(s, query=q)
            )
        except InvalidInput as exc:
            error = str(exc)
    del staff
    return render(
        request,
        "customers.html",
        {"nav": "customers", "q": q, "results": results, "error": error},
    )


@router.get("/customers/{customer_id}")
async def customer_page(
    request: Request,
    customer_id: str,
    before: str | None = Query(None, max_length=200),
    staff: StaffIdentity = Depends(current_staff),
) -> Response:
    """Customer 360: profile, scores, orders, tickets, handoffs, timeline."""
    data = await in_store(
        request, lambda s: customer_360(s, customer_id, before=before)
    )
    del staff
    return render(
        request, "customer.html", {"nav": "customers", "c": data, "before": before}
    )


@router.get("/conversations/{conversation_id}")
async def conversation_page(
    request: Request,
    conversation_id: str,
    staff: StaffIdentity = Depends(current_staff),
) -> Response:
    """One conversation's transcript."""
    conv = await in_store(
        request,
        lambda s: console_views.conversation_view(s, conversation_id=conversation_id),
    )
    del staff
    return render(request, "conversation.html", {"nav": "customers", "conv": conv})


@router.get("/manager")
async def manager_page(
    request: Request, staff: StaffIdentity = Depends(require_role("manager"))
) -> Response:
    """Queue statistics, agents online, conversations with agents, resolutions."""

    def work(session: Session) -> dict[str, Any]:
        recent = queue.handoffs_by_status(session, "resolved", limit=20)
        recent += queue.handoffs_by_status(session, "handed_back", limit=20)
        recent.sort(
            key=lambda e: (e.resolved_at or e.created_at, e.handoff_id), reverse=True
        )
        return {
            "stats": queue.queue_stats(session),
            "agents_online": staff_service.agents_online(session),
            "claimed": queue.handoffs_by_status(session, "claimed"),
            "recent": recent[:20],
        }

    data = await in_store(request, work)
    del staff
    return render(
        request, "manager.html", {"nav": "manager", **data, **_hours(request)}
    )


@router.get("/admin")
async def admin_page(
    request: Request, staff: StaffIdentity = Depends(require_role("admin"))
) -> Response:
    """The staff list."""
    users = await in_store(request, console_views.staff_list)
    del staff
    return render(request, "admin.html", {"nav": "admin", "users": users})
