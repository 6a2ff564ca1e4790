"""The staff JSON API under ``/api`` (DESIGN.md section 4).

Authenticated by a bearer token (``POST /api/auth/token``) or the console's
session cookie (then unsafe methods need ``X-CSRF-Token``). Errors are JSON
``{"error": "..."}``: 400 bad input, 401 no valid token, 403 role or CSRF,
404 unknown record, 409 lost a race (e.g. the handoff was claimed by someone
else). The schema is at ``/api/openapi.json``; the interactive docs pages are
off because they load their assets from a CDN.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from console import workflow
from console.auth import current_staff, require_role
from console.jsonout import plain
from console.store import in_store
from console.views import customer_360, timeline_view
from crm_store.errors import InvalidInput
from crm_store.services import console_views, queue
from crm_store.services import staff as staff_service
from crm_store.services.customers import customer_profile
from crm_store.services.staff import StaffIdentity

router = APIRouter(prefix="/api", tags=["console"])
STATUSES = ("waiting", "claimed", "resolved", "handed_back")


class TextBody(BaseModel):
    """A message or a note."""

    text: str = Field(..., max_length=8000)


class ResolveBody(BaseModel):
    """How a claimed handoff ends."""

    handback: bool = False
    note: str | None = Field(None, max_length=8000)


class TicketBody(BaseModel):
    """The ticket a handoff becomes."""

    subject: str = Field(..., max_length=400)
    description: str | None = Field(None, max_length=8000)


def ok(value: object, status: int = 200) -> JSONResponse:
    """A JSON answer of plain values."""
    return JSONResponse(plain(value), status_code=status)


@router.get("/me")
async def me(staff: StaffIdentity = Depends(current_staff)) -> JSONResponse:
    """Who the token belongs to."""
    return ok(
        {
            "username": staff.username,
            "role": staff.role,
            "expires_at": staff.expires_at,
        }
    )


@router.get("/customers")
async def search(
    request: Request,
    q: str = Query(..., max_length=100),
    limit: int = Query(20, ge=1, le=100),
    staff: StaffIdentity = Depends(current_staff),
) -> JSONResponse:
    """Customers whose id, name, e-mail or phone contains ``q``."""
    found = await in_store(
        request, lambda s: console_views.find_customers(s, query=q, limit=limit)
    )
    del staff
    return ok({"items": found})


@router.get("/customers/{customer_id}")
async def customer(
    request: Request, customer_id: str, staff: StaffIdentity = Depends(current_staff)
) -> JSONResponse:
    """Customer 360: profile, identities, scores, orders, tickets, timeline.

    Scores hold RFM, CLV, value tier, churn risk and its drivers; the timeline
    is the newest page (``timeline.next_before`` pages on).
    """
    data = await in_store(request, lambda s: customer_360(s, customer_id, limit=20))
    del staff
    return ok(data)


@router.get("/customers/{customer_id}/timeline")
async def customer_timeline(
    request: Request,
    customer_id: str,
    before: str | None = Query(None, max_length=200),
    limit: int = Query(50, ge=1, le=200),
    staff: StaffIdentity = Depends(current_staff),
) -> JSONResponse:
    """The contact history on every channel, newest first.

    Pass the answer's ``next_before`` as ``before`` for the next (older) page;
    it is null on the last page.
    """

    def work(session):  # noqa: ANN001, ANN202
        customer_profile(session, customer_id=customer_id)  # NotFound
        return timeline_view(session, customer_id, before=before, limit=limit)

    page = await in_store(request, work)
    del staff
    return ok(page)


@router.get("/handoffs")
async def handoffs(
    request: Request,
    status: str = Query("waiting"),
    limit: int = Query(100, ge=1, le=1000),
    staff: StaffIdentity = Depends(current_staff),
) -> JSONResponse:
    """Handoffs of one status; waiting ones in priority order with positions."""
    if status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}")
    items = await in_store(
        request, lambda s: queue.handoffs_by_status(s, status, limit=limit)
    )
    del staff
    return ok({"items": items})


@router.get("/handoffs/{handoff_id}")
async def handoff(
    request: Request, handoff_id: int, staff: StaffIdentity = Depends(current_staff)
) -> JSONResponse:
    """One handoff: packet, claimer, position while waiting, and its notes."""

    def work(session):  # noqa: ANN001, ANN202
        view = queue.get_handoff(session, handoff_id)
        return {**plain(view), "notes": plain(queue.notes_of(session, handoff_id))}

    data = await in_store(request, work)
    del staff
    return ok(data)


@router.post("/handoffs/{handoff_id}/claim")
async def claim(
    request: Request, handoff_id: int, staff: StaffIdentity = Depends(current_staff)
) -> JSONResponse:
    """Claim a waiting handoff (409 when someone else was faster); the bot pauses."""
    return ok(await workflow.claim(request, handoff_id, staff))


@router.post("/handoffs/{handoff_id}/messages")
async def message(
    request: Request,
    handoff_id: int,
    body: TextBody,
    staff: StaffIdentity = Depends(current_staff),
) -> JSONResponse:
    """Reply to the customer on their channel (the claimer, or a manager)."""
    sent = await workflow.send_message(request, handoff_id, staff, body.text)
    return ok(sent, 201)


@router.post("/handoffs/{handoff_id}/notes")
async def note(
    request: Request,
    handoff_id: int,
    body: TextBody,
    staff: StaffIdentity = Depends(current_staff),
) -> JSONResponse:
    """Add an internal note."""
    return ok(await workflow.add_note(request, handoff_id, staff, body.text), 201)


@router.post("/handoffs/{handoff_id}/resolve")
async def resolve(
    request: Request,
    handoff_id: int,
    body: ResolveBody,
    staff: StaffIdentity = Depends(current_staff),
) -> JSONResponse:
    """Resolve a claimed handoff, or (``handback``) return the customer to the bot."""
    view = await workflow.resolve(
        request, handoff_id, staff, handback=body.handback, note=body.note
    )
    return ok(view)


@router.post("/handoffs/{handoff_id}/ticket")
async def ticket(
    request: Request,
    handoff_id: int,
    body: TicketBody,
    staff: StaffIdentity = Depends(current_staff),
) -> JSONResponse:
    """Open a ticket for the customer; the handoff is resolved with its number."""
    number = await workflow.convert_to_ticket(
        request, handoff_id, staff, subject=body.subject, description=body.description
    )
    return ok({"ticket_number": number}, 201)


@router.get("/conversations/{conversation_id}")
async def conversation(
    request: Request,
    conversation_id: str,
    staff: StaffIdentity = Depends(current_staff),
) -> JSONResponse:
    """A conversation's record and transcript, oldest first."""
    data = await in_store(
        request,
        lambda s: console_views.conversation_view(s, conversation_id=conversation_id),
    )
    del staff
    return ok(data)


@router.get("/stats")
async def stats(
    request: Request, staff: StaffIdentity = Depends(require_role("manager"))
) -> JSONResponse:
    """Queue figures now and over the last 24 hours, agents online (manager+)."""

    def work(session):  # noqa: ANN001, ANN202
        return {
            **plain(queue.queue_stats(session)),
            "agents_online": staff_service.agents_online(session),
        }

    data = await in_store(request, work)
    del staff
    return ok(data)


@router.get("/staff")
async def staff_users(
    request: Request, staff: StaffIdentity = Depends(require_role("admin"))
) -> JSONResponse:
    """Console users, roles, last sign-in and open sessions (admin)."""
    users = await in_store(request, console_views.staff_list)
    del staff
    return ok({"items": users})
