"""Read models of the console's pages and API, composed from store services.

``customer_360`` gathers the customer page: profile and identities, analytics
scores with churn drivers, orders with their items, tickets, handoffs and the
first page of the cross-channel timeline. ``handoff_page`` gathers the
conversation page: the handoff with its packet, notes and transcript.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from crm_store.analytics.service import customer_scores
from crm_store.services import console_views, queue
from crm_store.services.console_views import MessageView, TicketView
from crm_store.services.customers import customer_profile
from crm_store.services.interactions import timeline
from crm_store.services.orders import orders_for_customer

TIMELINE_PAGE = 50


@dataclass(frozen=True)
class OrderView:
    """An order as staff see it, with its items as short lines."""

    id: str
    status: str
    placed_at: dt.datetime
    total: Decimal
    currency: str
    carrier: str | None
    tracking_number: str | None
    delivered_at: dt.datetime | None
    items: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ScoresView:
    """Analytics of a customer: RFM, value, churn risk and what drives it."""

    as_of: dt.datetime
    recency_days: int | None
    frequency: int
    monetary: Decimal
    rfm: str
    rfm_segment: str | None
    actual_value: Decimal | None
    clv: Decimal | None
    value_tier: str | None
    churn_risk: float | None
    churn_band: str | None
    churn_drivers: list[dict[str, Any]]


@dataclass(frozen=True)
class TimelineView:
    """One page of the contact history, newest first."""

    items: list[MessageView]
    next_before: str | None


@dataclass(frozen=True)
class Customer360:
    """Everything the customer page shows."""

    profile: Any  # crm_store.services.customers.CustomerProfile
    scores: ScoresView | None
    orders: list[OrderView]
    tickets: list[TicketView]
    handoffs: list[console_views.HandoffSummary]
    timeline: TimelineView


def scores_view(session: Session, customer_id: str) -> ScoresView | None:
    """The customer's scores, or None when analytics never ran for them."""
    scores = customer_scores(session, customer_id=customer_id)
    if scores is None:
        return None
    rfm = "".join(
        str(s or "-") for s in (scores.r_score, scores.f_score, scores.m_score)
    )
    drivers = [
        {"feature": label, "contribution": round(value, 4), "raises_risk": value >= 0}
        for label, value in scores.top_churn_features
    ]
    return ScoresView(
        as_of=scores.as_of,
        recency_days=scores.recency_days,
        frequency=scores.frequency,
        monetary=scores.monetary,
        rfm=rfm,
        rfm_segment=scores.rfm_segment,
        actual_value=scores.actual_value,
        clv=scores.clv,
        value_tier=scores.value_tier,
        churn_risk=scores.churn_risk,
        churn_band=scores.churn_band,
        churn_drivers=drivers,
    )


def order_views(session: Session, customer_id: str, limit: int = 20) -> list[OrderView]:
    """The customer's most recent orders with their items, newest first."""
    return [
        OrderView(
            id=order.id,
            status=order.status,
            placed_at=order.placed_at,
            total=order.total,
            currency=order.currency,
            carrier=order.carrier,
            tracking_number=order.tracking_number,
            delivered_at=order.delivered_at,
            items=[f"{line.quantity} × {line.product_name}" for line in order.lines],
        )
        for order in orders_for_customer(session, customer_id=customer_id, limit=limit)
    ]


def timeline_view(
    session: Session, customer_id: str, *, before: str | None, limit: int
) -> TimelineView:
    """A page of the customer's timeline; ``before`` is the previous page's cursor."""
    page = timeline(session, customer_id=customer_id, limit=limit, cursor=before)
    return TimelineView(
        [console_views.message_view(row) for row in page.items], page.next_cursor
    )


def customer_360(
    session: Session,
    customer_id: str,
    *,
    before: str | None = None,
    limit: int = TIMELINE_PAGE,
) -> Customer360:
    """Gather the customer page (``NotFound`` for an unknown customer)."""
    profile = customer_profile(session, customer_id=customer_id)
    return Customer360(
        profile=profile,
        scores=scores_view(session, customer_id),
        orders=order_views(session, customer_id),
        tickets=console_views.tickets_for_customer(session, customer_id=customer_id),
        handoffs=console_views.handoffs_of_customer(session, customer_id=customer_id),
        timeline=timeline_view(session, customer_id, before=before, limit=limit),
    )


@dataclass(frozen=True)
class HandoffPage:
    """Everything the conversation page shows."""

    handoff: Any  # crm_store.services.queue.HandoffView
    notes: list[Any]
    messages: list[MessageView]
    conversation: console_views.ConversationView | None
    last_message_id: int


def handoff_page(session: Session, handoff_id: int) -> HandoffPage:
    """Gather the conversation page (``NotFound`` for an unknown handoff)."""
    view = queue.get_handoff(session, handoff_id)
    notes = queue.notes_of(session, handoff_id)
    conversation = None
    messages: list[MessageView] = []
    if view.conversation_id:
        conversation = console_views.conversation_view(
            session, conversation_id=view.conversation_id
        )
        messages = conversation.messages
    last = max((m.id for m in messages), default=0)
    return HandoffPage(view, notes, messages, conversation, last)
