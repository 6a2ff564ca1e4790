"""The manager review JSON/CSV API: transcripts, scorecards, KPIs, exports, audit.

Manager role and up (``/api/audit``: admin). Errors are JSON like the rest of
``/api`` (400 bad input, 401, 403, 404). Downloads are audited before their
first byte: ``story_exported``, ``scorecards_exported``, ``report_exported``.

The CSV reports are streamed: a ``StreamingResponse`` over a generator that
opens its own session (the request's unit of work has ended by then), reads
the rows with a server-side cursor on PostgreSQL and yields CSV text about a
thousand rows at a time (``crm_store.services.report_format``), so memory
stays flat however long the period; the session is closed in ``finally``,
also when the client goes away mid-download.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session, sessionmaker

from console.auth import require_role
from console.store import in_store
from crm_store.errors import InvalidInput
from crm_store.services import reports, scorecards, test_stories, transcripts
from crm_store.services.audit import audit_entries, parse_audit_filters, record_audit
from crm_store.services.report_format import csv_rows
from crm_store.services.staff import StaffIdentity

router = APIRouter(prefix="/api", tags=["manager review"])
manager = require_role("manager")
admin = require_role("admin")
MAX_RECONTACT_HOURS = 720
PAGE_LIMIT = 50
MAX_SCORECARD_PAGE = 500
SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def now_utc() -> dt.datetime:
    """Now, naive UTC."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def query_params(request: Request) -> dict[str, str]:
    """The request's query parameters (first value of each)."""
    return dict(request.query_params)


def whole_number(
    value: str | None, name: str, low: int, high: int, default: int
) -> int:
    """A query parameter as an int in ``low..high`` (``default`` when blank).

    Raises:
        InvalidInput: not a whole number in range.
    """
    if value is None or not value.strip():
        return default
    text = value.strip()
    if not re.fullmatch(r"\d{1,19}", text) or not low <= int(text) <= high:
        raise InvalidInput(f"{name} must be a whole number from {low} to {high}")
    return int(text)


def recontact_hours(value: str | None) -> int:
    """The re-contact window of a query (default ``DEFAULT_RECONTACT_HOURS``)."""
    return whole_number(
        value,
        "recontact_hours",
        1,
        MAX_RECONTACT_HOURS,
        reports.DEFAULT_RECONTACT_HOURS,
    )


def period(
    params: Mapping[str, str], now: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    """The report period of a query (``from``/``to``; default the last 30 days)."""
    return reports.parse_period(params.get("from"), params.get("to"), now=now)


def optional_period(
    params: Mapping[str, str],
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``from``/``to`` when given (either may be blank), validated like the audit's."""
    filters = parse_audit_filters({"from": params.get("from"), "to": params.get("to")})
    return filters.start, filters.end


def iso(value: dt.datetime) -> str:
    """ISO 8601 with ``Z``."""
    return value.isoformat() + "Z"


def attachment(filename: str) -> dict[str, str]:
    """A ``Content-Disposition`` header for a download of ``filename``."""
    safe = SAFE_FILENAME.sub("_", filename).strip("._") or "download"
    return {"Content-Disposition": f'attachment; filename="{safe}"'}


def csv_stream(
    factory: sessionmaker,
    rows: Callable[[Session], Iterable[tuple]],
    header: tuple[str, ...],
) -> Iterator[str]:
    """CSV chunks of ``rows(session)`` on a session of its own, closed at the end."""
    session = factory()
    try:
        yield from csv_rows(rows(session), header)
    finally:
        session.close()


def streamed_csv(
    request: Request,
    rows: Callable[[Session], Iterable[tuple]],
    header: tuple[str, ...],
    filename: str,
) -> StreamingResponse:
    """A streamed ``text/csv`` download."""
    return StreamingResponse(
        csv_stream(request.app.state.session_factory, rows, header),
        media_type="text/csv; charset=utf-8",
        headers={**attachment(filename), "Cache-Control": "no-store"},
    )


async def conversations_csv(request: Request, staff: StaffIdentity) -> Response:
    """The per-conversation report of a period as a streamed, audited CSV."""
    params = query_params(request)
    now = now_utc()
    start, end = period(params, now)
    hours = recontact_hours(params.get("recontact_hours"))
    await in_store(
        request,
        lambda s: record_audit(
            s,
            actor=staff.username,
            action="report_exported",
            entity_type="report",
            entity_id="conversations.csv",
            details={"from": iso(start), "to": iso(end), "recontact_hours": hours},
        ),
    )
    return streamed_csv(
        request,
        lambda s: reports.conversation_rows(
            s, start=start, end=end, now=now, recontact_hours=hours
        ),
        tuple(reports.REPORT_COLUMNS),
        f"conversations_{start:%Y-%m-%d}_{end - dt.timedelta(seconds=1):%Y-%m-%d}.csv",
    )


async def story_download(
    request: Request, staff: StaffIdentity, conversation_id: str
) -> Response:
    """A conversation as a Rasa test story (YAML attachment), audited."""

    def work(session: Session) -> str:
        story = test_stories.conversation_story(
            session, conversation_id=conversation_id
        )
        record_audit(
            session,
            actor=staff.username,
            action="story_exported",
            entity_type="conversation",
            entity_id=conversation_id,
        )
        return story

    story = await in_store(request, work)
    return Response(
        story,
        media_type="text/yaml; charset=utf-8",
        headers={
            **attachment(test_stories.story_file_name(conversation_id)),
            "Cache-Control": "no-store",
        },
    )


def kpi_json(report: Any) -> dict[str, Any]:
    """A ``KpiReport`` as JSON values, with the figures' definitions."""
    return {**report.as_dict(), "definitions": dict(reports.KPI_DEFINITIONS)}


class ScorecardBody(BaseModel):
    """Points per criterion key, and an optional comment."""

    scores: dict[str, Any]
    comment: str | None = Field(None, max_length=scorecards.MAX_COMMENT * 2)


@router.get("/conversations")
async def search_conversations(
    request: Request, staff: StaffIdentity = Depends(manager)
) -> JSONResponse:
    """Conversations matching the filters, newest first (manager+).

    Filters: ``from``, ``to``, ``channel``, ``intent``, ``outcome``, ``csat``,
    ``agent``, ``customer``, ``tier``, ``q``; ``cursor`` (the answer's
    ``next_cursor``) and ``limit`` (1-200, 50) page.
    """
    params = query_params(request)
    filters = transcripts.parse_filters(params)
    limit = whole_number(params.get("limit"), "limit", 1, 200, PAGE_LIMIT)
    cursor = params.get("cursor") or None
    page = await in_store(
        request,
        lambda s: transcripts.search_conversations(
            s, filters, limit=limit, cursor=cursor
        ),
    )
    del staff
    return JSONResponse(page.as_dict())


@router.get("/conversations/{conversation_id}/transcript")
async def conversation_transcript(
    request: Request, conversation_id: str, staff: StaffIdentity = Depends(manager)
) -> JSONResponse:
    """A conversation for review (manager+).

    Record, customer, lines with the bot actions before them, handoffs with
    packets and notes, scorecards.
    """
    found = await in_store(
        request,
        lambda s: transcripts.transcript(s, conversation_id=conversation_id),
    )
    del staff
    return JSONResponse(found.as_dict())


@router.get("/conversations/{conversation_id}/story")
async def conversation_story(
    request: Request, conversation_id: str, staff: StaffIdentity = Depends(manager)
) -> Response:
    """The conversation as a Rasa test story (``text/yaml`` attachment; audited)."""
    return await story_download(request, staff, conversation_id)


@router.post("/conversations/{conversation_id}/scorecard", status_code=201)
async def save_scorecard(
    request: Request,
    conversation_id: str,
    body: ScorecardBody,
    staff: StaffIdentity = Depends(manager),
) -> JSONResponse:
    """Save the caller's scorecard of a conversation (one per reviewer; 201)."""
    criteria = scorecards.default_criteria()
    view = await in_store(
        request,
        lambda s: scorecards.save_scorecard(
            s,
            conversation_id=conversation_id,
            reviewer_id=staff.staff_id,
            scores=body.scores,
            comment=body.comment,
            criteria=criteria,
        ),
    )
    return JSONResponse(view.as_dict(), status_code=201)


@router.get("/scorecards")
async def list_scorecards(
    request: Request, staff: StaffIdentity = Depends(manager)
) -> JSONResponse:
    """Scorecards newest first: from, to, reviewer, limit, offset."""
    params = query_params(request)
    start, end = optional_period(params)
    limit = whole_number(params.get("limit"), "limit", 1, MAX_SCORECARD_PAGE, 100)
    offset = whole_number(params.get("offset"), "offset", 0, 10**9, 0)
    reviewer = (params.get("reviewer") or "").strip() or None
    items = await in_store(
        request,
        lambda s: scorecards.list_scorecards(
            s, start=start, end=end, reviewer=reviewer, limit=limit, offset=offset
        ),
    )
    del staff
    return JSONResponse({"items": [item.as_dict() for item in items]})


@router.get("/scorecards.csv")
async def scorecards_csv(
    request: Request, staff: StaffIdentity = Depends(manager)
) -> Response:
    """Every scorecard of the period (``from``/``to``, optional) as a streamed CSV."""
    start, end = optional_period(query_params(request))
    details = {
        "from": iso(start) if start else None,
        "to": iso(end) if end else None,
    }
    await in_store(
        request,
        lambda s: record_audit(
            s,
            actor=staff.username,
            action="scorecards_exported",
            entity_type="report",
            entity_id="scorecards.csv",
            details=details,
        ),
    )
    return streamed_csv(
        request,
        lambda s: scorecards.scorecard_rows(s, start=start, end=end),
        scorecards.scorecard_columns(),
        "scorecards.csv",
    )


@router.get("/reports/kpis")
async def kpis(
    request: Request, staff: StaffIdentity = Depends(manager)
) -> JSONResponse:
    """Self-service KPIs of a period (``from``, ``to``, ``recontact_hours``).

    Overall, by channel, by day and escalation reasons, with ``definitions``
    (one sentence per figure).
    """
    params = query_params(request)
    now = now_utc()
    start, end = period(params, now)
    hours = recontact_hours(params.get("recontact_hours"))
    report = await in_store(
        request,
        lambda s: reports.kpi_report(
            s, start=start, end=end, now=now, recontact_hours=hours
        ),
    )
    del staff
    return JSONResponse(kpi_json(report))


@router.get("/reports/conversations.csv")
async def conversations_report(
    request: Request, staff: StaffIdentity = Depends(manager)
) -> Response:
    """One CSV row per conversation started in the period (streamed; audited)."""
    return await conversations_csv(request, staff)


@router.get("/audit")
async def audit_log(
    request: Request, staff: StaffIdentity = Depends(admin)
) -> JSONResponse:
    """Audit entries newest first (admin).

    Filters ``group``, ``action``, ``actor``, ``from``, ``to``; ``before_id``
    (the answer's ``next_before_id``) and ``limit`` page.
    """
    params = query_params(request)
    filters = parse_audit_filters(params)
    limit = whole_number(params.get("limit"), "limit", 1, 500, 100)
    before = params.get("before_id")
    before_id = whole_number(before, "before_id", 1, 2**62, 0) if before else None
    page = await in_store(
        request,
        lambda s: audit_entries(
            s,
            group=filters.group,
            action=filters.action,
            actor=filters.actor,
            start=filters.start,
            end=filters.end,
            limit=limit,
            before_id=before_id,
        ),
    )
    del staff
    return JSONResponse(page.as_dict())
