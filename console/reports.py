"""The manager review pages: transcripts, the review page, KPIs, scorecards, audit.

``/manager/transcripts`` (search), ``/manager/transcripts/{id}`` (review with
the scorecard form; ``…/scorecard`` saves, ``…/story.yml`` downloads a test
story), ``/manager/kpis`` (figures with their definitions and SVG charts),
``/manager/scorecards`` and ``/admin/audit`` (admin). Manager role and up;
bad filters show the form with the message (status 400), not an error page.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from console import charts
from console.auth import require_role
from console.render import duration, render
from console.reports_api import (
    now_utc,
    optional_period,
    period,
    query_params,
    recontact_hours,
    story_download,
    whole_number,
)
from console.store import in_store
from crm_store.errors import InvalidInput
from crm_store.services import reports, scorecards, transcripts
from crm_store.services.audit import AUDIT_GROUPS, audit_entries, parse_audit_filters
from crm_store.services.queue import VALUE_TIERS
from crm_store.services.staff import StaffIdentity

router = APIRouter(include_in_schema=False)
manager = require_role("manager")
admin = require_role("admin")
PAGE = 50
SCORECARD_PAGE = 50
AUDIT_PAGE = 100
POINTS_PREFIX = "points_"
CSAT_CHOICES = (
    ("positive", "positive (4-5)"),
    ("negative", "negative (1-3)"),
    ("none", "not given"),
    ("5", "5"),
    ("4", "4"),
    ("3", "3"),
    ("2", "2"),
    ("1", "1"),
)
SCORED = {"kind": "ok", "text": "Scorecard saved."}


def _query(values: Mapping[str, object]) -> str:
    """``?a=1&b=2`` of the non-empty values ('' when none)."""
    kept = {k: str(v) for k, v in values.items() if v not in (None, "")}
    return "?" + urlencode(kept) if kept else ""


def _form(params: Mapping[str, str], keys: tuple[str, ...]) -> dict[str, str]:
    return {key: params.get(key, "") for key in keys}


# --- Transcripts -----------------------------------------------------------


@router.get("/manager/transcripts")
async def transcripts_page(
    request: Request, staff: StaffIdentity = Depends(manager)
) -> Response:
    """Search conversations by period, channel, intent, outcome, CSAT and more."""
    params = query_params(request)
    form = _form(params, transcripts.FILTER_KEYS)
    cursor = params.get("cursor") or None
    page, error = None, None
    try:
        filters = transcripts.parse_filters(params)
        page = await in_store(
            request,
            lambda s: transcripts.search_conversations(
                s, filters, limit=PAGE, cursor=cursor
            ),
        )
    except InvalidInput as exc:
        error = str(exc)
    older = (
        "/manager/transcripts" + _query({**form, "cursor": page.next_cursor})
        if page is not None and page.next_cursor
        else None
    )
    del staff
    return render(
        request,
        "transcripts.html",
        {
            "nav": "manager",
            "subnav": "transcripts",
            "form": form,
            "page": page,
            "error": error,
            "cursor": cursor,
            "older_url": older,
            "first_url": "/manager/transcripts" + _query(form),
            "csv_url": "/api/reports/conversations.csv"
            + _query({"from": form["from"], "to": form["to"]}),
            "channels": transcripts.FILTER_CHANNELS,
            "outcomes": transcripts.OUTCOME_FILTERS,
            "csat_choices": CSAT_CHOICES,
            "tiers": VALUE_TIERS,
        },
        status=400 if error else 200,
    )


@dataclass(frozen=True)
class PacketValue:
    """A packet value as text; ``nested`` when it is compact JSON."""

    text: str
    nested: bool


def packet_rows(packet: Mapping[str, Any] | None) -> list[tuple[str, PacketValue]]:
    """The packet's keys and values for a definition list (nested as JSON)."""
    rows = []
    for key, value in (packet or {}).items():
        if value is None or value == "" or value == [] or value == {}:
            continue
        if isinstance(value, (dict, list, tuple)):
            text = json.dumps(
                value, ensure_ascii=False, separators=(", ", ": "), default=str
            )
            rows.append((str(key).replace("_", " "), PacketValue(text, True)))
        else:
            shown = {True: "yes", False: "no"}.get(value, value)  # type: ignore[call-overload]
            rows.append((str(key).replace("_", " "), PacketValue(str(shown), False)))
    return rows


def _review_context(
    session: Session, conversation_id: str, staff: StaffIdentity
) -> dict[str, Any]:
    found = transcripts.transcript(session, conversation_id=conversation_id)
    mine = next((s for s in found.scorecards if s.reviewer == staff.username), None)
    return {
        "t": found,
        "entered": {k: str(v) for k, v in (mine.scores if mine else {}).items()},
        "entered_comment": (mine.comment or "") if mine else "",
    }


def _review_page(
    request: Request,
    context: dict[str, Any],
    criteria: Any,
    *,
    error: str | None = None,
    status: int = 200,
) -> Response:
    extra = {"notice": SCORED} if request.query_params.get("notice") == "scored" else {}
    return render(
        request,
        "transcript.html",
        {
            "nav": "manager",
            "subnav": "transcripts",
            "criteria": criteria,
            "packet_rows": packet_rows,
            "error": error,
            **extra,
            **context,
        },
        status=status,
    )


@router.get("/manager/transcripts/{conversation_id}")
async def review_page(
    request: Request, conversation_id: str, staff: StaffIdentity = Depends(manager)
) -> Response:
    """One conversation for review: record, transcript, handoffs, scorecards."""
    criteria = scorecards.default_criteria()
    context = await in_store(
        request, lambda s: _review_context(s, conversation_id, staff)
    )
    return _review_page(request, context, criteria)


@router.post("/manager/transcripts/{conversation_id}/scorecard")
async def scorecard_form(
    request: Request, conversation_id: str, staff: StaffIdentity = Depends(manager)
) -> Response:
    """Save the reviewer's scorecard; bad points show the page again (400)."""
    criteria = scorecards.default_criteria()
    form = await request.form()
    points: dict[str, object] = {}
    for criterion in criteria.criteria:
        value = form.get(POINTS_PREFIX + criterion.key)
        points[criterion.key] = value.strip() if isinstance(value, str) else None
    raw_comment = form.get("comment")
    comment = raw_comment if isinstance(raw_comment, str) else ""
    try:
        await in_store(
            request,
            lambda s: scorecards.save_scorecard(
                s,
                conversation_id=conversation_id,
                reviewer_id=staff.staff_id,
                scores=points,
                comment=comment,
                criteria=criteria,
            ),
        )
    except InvalidInput as exc:
        context = await in_store(
            request, lambda s: _review_context(s, conversation_id, staff)
        )
        context["entered"] = {k: v or "" for k, v in points.items()}
        context["entered_comment"] = comment[: scorecards.MAX_COMMENT]
        return _review_page(request, context, criteria, error=str(exc), status=400)
    return RedirectResponse(
        f"/manager/transcripts/{quote(conversation_id, safe='')}"
        "?notice=scored#scorecards-title",
        status_code=303,
    )


@router.get("/manager/transcripts/{conversation_id}/story.yml")
async def story_file(
    request: Request, conversation_id: str, staff: StaffIdentity = Depends(manager)
) -> Response:
    """Download the conversation as a Rasa test story (audited)."""
    return await story_download(request, staff, conversation_id)


# --- KPIs ------------------------------------------------------------------


def _rate(value: float | None) -> str:
    return "—" if value is None else charts.percent(value)


def kpi_tiles(report: Any) -> list[dict[str, str]]:
    """The figure tiles of the dashboard, each with the definitions it shows."""
    o = report.overall

    def tile(label: str, keys: tuple[str, ...], value: str, detail: str):  # noqa: ANN202
        definition = " ".join(reports.KPI_DEFINITIONS[key] for key in keys)
        return {
            "label": label,
            "value": value,
            "detail": detail,
            "definition": definition,
        }

    return [
        tile(
            "Conversations",
            ("conversations",),
            str(o.conversations),
            f"{o.closed} closed · {o.open} open",
        ),
        tile(
            "Containment rate",
            ("containment_rate", "containment_pending"),
            _rate(o.containment_rate),
            f"{o.contained} contained of {o.containment_eligible} eligible · "
            f"{o.containment_pending} pending",
        ),
        tile(
            "Escalation rate",
            ("escalation_rate",),
            _rate(o.escalation_rate),
            f"{o.escalated} escalated",
        ),
        tile(
            "First response time",
            ("frt_median_seconds", "frt_p90_seconds"),
            f"{duration(o.frt_median_seconds)} median",
            f"p90 {duration(o.frt_p90_seconds)} · {o.frt_answered} answered · "
            f"{o.never_answered} never answered",
        ),
        tile(
            "Average handle time",
            ("aht_seconds",),
            duration(o.aht_seconds),
            f"over {o.aht_count} escalated conversations",
        ),
        tile(
            "CSAT score",
            ("csat_score", "csat_response_rate"),
            _rate(o.csat_score),
            f"{o.csat_positive} positive of {o.csat_answered} ratings · "
            f"response rate {_rate(o.csat_response_rate)} "
            f"({o.csat_answered} of {o.csat_asked} asked)",
        ),
        tile(
            "Abandonment rate",
            ("abandonment_rate",),
            _rate(o.abandonment_rate),
            f"{o.abandoned} abandoned",
        ),
    ]


def kpi_tables(report: Any) -> dict[str, list[dict[str, Any]]]:
    """The numbers behind the charts (their data tables)."""
    days = []
    for day, f in report.by_day:
        known = f.self_served + f.escalated + f.abandoned
        days.append(
            {
                "day": day.isoformat(),
                "conversations": f.conversations,
                "self_served": f.self_served,
                "escalated": f.escalated,
                "abandoned": f.abandoned,
                "other": max(f.conversations - known, 0),
                "eligible": f.containment_eligible,
                "contained": f.contained,
                "pending": f.containment_pending,
                "containment": _rate(f.containment_rate),
            }
        )
    channels = [
        {
            "channel": channel,
            "conversations": f.conversations,
            "containment": _rate(f.containment_rate),
            "escalation": _rate(f.escalation_rate),
            "abandonment": _rate(f.abandonment_rate),
            "frt": duration(f.frt_median_seconds),
            "aht": duration(f.aht_seconds),
            "csat": _rate(f.csat_score),
            "csat_response": _rate(f.csat_response_rate),
        }
        for channel, f in report.by_channel.items()
    ]
    return {"days": days, "channels": channels}


def _date_value(moment: dt.datetime, *, end: bool = False) -> str:
    """A datetime as the value of a date input (an exclusive end: its last day)."""
    if end:
        moment -= dt.timedelta(microseconds=1)
    return moment.date().isoformat()


@router.get("/manager/kpis")
async def kpis_page(
    request: Request, staff: StaffIdentity = Depends(manager)
) -> Response:
    """KPI dashboard of a period (default: the last 30 days)."""
    params = query_params(request)
    form = _form(params, ("from", "to", "recontact_hours"))
    now = now_utc()
    report, error = None, None
    try:
        start, end = period(params, now)
        hours = recontact_hours(params.get("recontact_hours"))
        report = await in_store(
            request,
            lambda s: reports.kpi_report(
                s, start=start, end=end, now=now, recontact_hours=hours
            ),
        )
    except InvalidInput as exc:
        error = str(exc)
    context: dict[str, Any] = {
        "nav": "manager",
        "subnav": "kpis",
        "form": form,
        "report": report,
        "error": error,
    }
    if report is not None:
        form.update(
            {
                "from": _date_value(report.start),
                "to": _date_value(report.end, end=True),
                "recontact_hours": str(report.recontact_hours),
            }
        )
        period_query = {"from": form["from"], "to": form["to"]}
        if report.recontact_hours != reports.DEFAULT_RECONTACT_HOURS:
            period_query["recontact_hours"] = str(report.recontact_hours)
        context.update(
            tiles=kpi_tiles(report),
            charts=charts.kpi_charts(report),
            csv_url="/api/reports/conversations.csv" + _query(period_query),
            json_url="/api/reports/kpis" + _query(period_query),
            **kpi_tables(report),
        )
    else:
        form.setdefault("recontact_hours", "")
    del staff
    return render(request, "kpis.html", context, status=400 if error else 200)


# --- Scorecards and audit --------------------------------------------------


@router.get("/manager/scorecards")
async def scorecards_page(
    request: Request, staff: StaffIdentity = Depends(manager)
) -> Response:
    """Scorecards newest first, by period and reviewer."""
    params = query_params(request)
    form = _form(params, ("from", "to", "reviewer"))
    items, error, offset = None, None, 0
    try:
        start, end = optional_period(params)
        offset = whole_number(params.get("offset"), "offset", 0, 10**9, 0)
        reviewer = form["reviewer"].strip() or None
        if reviewer is not None and len(reviewer) > 64:
            raise InvalidInput("reviewer is at most 64 characters")
        items = await in_store(
            request,
            lambda s: scorecards.list_scorecards(
                s,
                start=start,
                end=end,
                reviewer=reviewer,
                limit=SCORECARD_PAGE + 1,
                offset=offset,
            ),
        )
    except InvalidInput as exc:
        error = str(exc)
    more = items is not None and len(items) > SCORECARD_PAGE
    del staff
    return render(
        request,
        "scorecards.html",
        {
            "nav": "manager",
            "subnav": "scorecards",
            "form": form,
            "items": items[:SCORECARD_PAGE] if items is not None else None,
            "error": error,
            "older_url": "/manager/scorecards"
            + _query({**form, "offset": offset + SCORECARD_PAGE})
            if more
            else None,
            "newer_url": "/manager/scorecards"
            + _query({**form, "offset": max(offset - SCORECARD_PAGE, 0) or None})
            if offset
            else None,
            "csv_url": "/api/scorecards.csv"
            + _query({"from": form["from"], "to": form["to"]}),
        },
        status=400 if error else 200,
    )


@router.get("/admin/audit")
async def audit_page(
    request: Request, staff: StaffIdentity = Depends(admin)
) -> Response:
    """The audit log, newest first, by group, actor and period (admin)."""
    params = query_params(request)
    form = _form(params, ("group", "actor", "from", "to"))
    page, error, before_id = None, None, None
    try:
        filters = parse_audit_filters(form)
        before = params.get("before_id")
        before_id = whole_number(before, "before_id", 1, 2**62, 1) if before else None
        page = await in_store(
            request,
            lambda s: audit_entries(
                s,
                group=filters.group,
                actor=filters.actor,
                start=filters.start,
                end=filters.end,
                limit=AUDIT_PAGE,
                before_id=before_id,
            ),
        )
    except InvalidInput as exc:
        error = str(exc)
    del staff
    return render(
        request,
        "audit.html",
        {
            "nav": "admin",
            "subnav": "audit",
            "form": form,
            "groups": list(AUDIT_GROUPS),
            "page": page,
            "error": error,
            "before_id": before_id,
            "first_url": "/admin/audit" + _query(form),
            "older_url": "/admin/audit"
            + _query({**form, "before_id": page.next_before_id})
            if page is not None and page.next_before_id
            else None,
        },
        status=400 if error else 200,
    )
