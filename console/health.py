"""``GET /healthz`` (the store answers) and ``GET /metrics`` (Prometheus text).

Metrics, all gauges computed at scrape time from the store:
``crm_handoffs_waiting``, ``crm_handoffs_claimed``,
``crm_handoff_oldest_wait_seconds``, ``crm_handoff_wait_seconds`` (median wait
for an agent over the last 24 h; NaN when none was claimed),
``crm_messages_total{channel=...}`` (messages in the contact history over the
last 24 h) and ``crm_events_not_recorded`` (events the Rasa server's
contact-history broker could not record, from its control endpoint; -1 when
the Rasa server does not answer).
"""

from __future__ import annotations

import logging
import math

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from console.store import in_store
from crm_store.services import console_views, queue

logger = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    """200 ``{"status": "ok"}`` when the store answers, else 503."""
    try:
        await in_store(request, console_views.ping)
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        logger.warning("health check failed: %s", type(exc).__name__)
        return JSONResponse({"status": "unavailable", "store": "down"}, status_code=503)
    return JSONResponse({"status": "ok", "store": "ok"})


def _number(value: float | int | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NaN"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3f}"
    return str(int(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _gauge(name: str, help_text: str, samples: list[tuple[str, object]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    lines.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)
    return lines


@router.get("/metrics")
async def metrics(request: Request) -> PlainTextResponse:
    """The queue and contact-history figures in the Prometheus text format."""
    stats = await in_store(request, queue.queue_stats)
    broker = await request.app.state.courier.stats()
    lost = broker.get("lost_events") if isinstance(broker, dict) else None
    channels = sorted(stats.messages_by_channel.items())
    lines = [
        *_gauge(
            "crm_handoffs_waiting",
            "Handoffs waiting for an agent.",
            [("", stats.waiting)],
        ),
        *_gauge(
            "crm_handoffs_claimed",
            "Handoffs an agent is handling.",
            [("", stats.claimed)],
        ),
        *_gauge(
            "crm_handoff_oldest_wait_seconds",
            "Seconds the longest-waiting handoff has waited.",
            [("", stats.oldest_wait_seconds)],
        ),
        *_gauge(
            "crm_handoff_wait_seconds",
            "Median seconds from handoff to claim over the last 24 hours.",
            [("", stats.median_wait_seconds_24h)],
        ),
        *_gauge(
            "crm_messages_total",
            "Messages in the contact history over the last 24 hours, by channel.",
            [(f'{{channel="{_label(ch)}"}}', n) for ch, n in channels],
        ),
        *_gauge(
            "crm_events_not_recorded",
            "Events the contact-history broker could not record (-1: unknown).",
            [("", lost if isinstance(lost, int) else -1)],
        ),
    ]
    return PlainTextResponse("\n".join(lines) + "\n", media_type=PROMETHEUS_TEXT)
