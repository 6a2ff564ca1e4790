"""Read scores cheaply: one customer's, or per-segment totals for dashboards.

``customer_scores`` is one primary-key read; ``segment_summary`` one aggregate.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput
from crm_store.models import CENT, CustomerScore


@dataclass(frozen=True)
class CustomerScoresView:
    """A customer's analytics scores as of ``as_of``.

    Attributes:
        top_churn_features: the features that raise (positive) or lower the churn
            risk most, as ``(label, contribution)`` pairs, largest first.
    """

    customer_id: str
    as_of: dt.datetime
    recency_days: int | None
    frequency: int
    monetary: Decimal
    r_score: int | None
    f_score: int | None
    m_score: int | None
    rfm_segment: str | None
    actual_value: Decimal | None
    clv: Decimal | None
    clv_heuristic: Decimal | None
    value_tier: str | None
    churn_risk: float | None
    churn_band: str | None
    top_churn_features: list[tuple[str, float]] = field(default_factory=list)
    explanation: dict[str, Any] = field(default_factory=dict)
    computed_at: dt.datetime | None = None

    @property
    def summary(self) -> str:
        """One sentence: segment, tier and churn risk."""
        tier = self.value_tier or "unscored"
        segment = self.rfm_segment or "-"
        risk = (
            f"{self.churn_band} churn risk ({self.churn_risk:.0%})"
            if self.churn_risk is not None
            else "churn risk unknown"
        )
        return f"{tier} customer, RFM segment {segment}, {risk}"

    def __str__(self) -> str:
        """Render a few readable lines for the CLI and handoff notes."""
        recency = "-" if self.recency_days is None else f"{self.recency_days} d"
        rfm = "".join(str(s or "-") for s in (self.r_score, self.f_score, self.m_score))
        lines = [
            f"scores as of {self.as_of:%Y-%m-%d}: {self.summary}",
            f"  RFM {rfm}: last order {recency} ago, {self.frequency} orders, "
            f"{self.monetary} EUR spent",
            f"  value: actual {_money(self.actual_value)}, CLV {_money(self.clv)} "
            f"(heuristic {_money(self.clv_heuristic)})",
        ]
        if self.top_churn_features:
            drivers = ", ".join(
                f"{label} ({'+' if value >= 0 else '-'})"
                for label, value in self.top_churn_features
            )
            lines.append(f"  churn drivers: {drivers}")
        return "\n".join(lines)


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"{value} EUR"


def view_from_row(score: CustomerScore) -> CustomerScoresView:
    """Build the view from a ``customer_scores`` row."""
    explanation = dict(score.explanation or {})
    top = [
        (str(item[0]), float(item[1]))
        for item in explanation.get("top_churn_features", [])
        if isinstance(item, (list, tuple)) and len(item) == 2
    ]
    return CustomerScoresView(
        customer_id=score.customer_id,
        as_of=score.as_of,
        recency_days=score.recency_days,
        frequency=score.frequency,
        monetary=score.monetary,
        r_score=score.r_score,
        f_score=score.f_score,
        m_score=score.m_score,
        rfm_segment=score.rfm_segment,
        actual_value=score.actual_value,
        clv=score.clv,
        clv_heuristic=score.clv_heuristic,
        value_tier=score.value_tier,
        churn_risk=score.churn_risk,
        churn_band=score.churn_band,
        top_churn_features=top,
        explanation=explanation,
        computed_at=score.computed_at,
    )


def customer_scores(session: Session, *, customer_id: str) -> CustomerScoresView | None:
    """Return ``customer_id``'s scores, or None when not scored (or unknown).

    Args:
        session: an open session; one primary-key read of ``customer_scores``.
        customer_id: the customer.
    """
    score = session.get(CustomerScore, customer_id)
    return None if score is None else view_from_row(score)


@dataclass(frozen=True)
class SegmentSummary:
    """One group of scored customers for the manager dashboard.

    Attributes:
        value_at_risk: sum of CLV of the group's customers in the high churn band.
    """

    name: str
    customers: int
    clv: Decimal
    value_at_risk: Decimal


def segment_summary(
    session: Session, *, by: str = "rfm_segment"
) -> list[SegmentSummary]:
    """Customers, CLV and value at risk per RFM segment or value tier.

    One aggregate over ``customer_scores`` (indexed by both columns).

    Args:
        session: an open session.
        by: ``"rfm_segment"`` or ``"value_tier"``.

    Raises:
        InvalidInput: ``by`` names another column.
    """
    if by not in ("rfm_segment", "value_tier"):
        raise InvalidInput("segment_summary groups by rfm_segment or value_tier")
    column = getattr(CustomerScore, by)
    at_risk = case((CustomerScore.churn_band == "high", CustomerScore.clv), else_=0)
    rows = session.execute(
        select(
            column,
            func.count(),
            func.coalesce(func.sum(CustomerScore.clv), 0),
            func.coalesce(func.sum(at_risk), 0),
        )
        .group_by(column)
        .order_by(func.count().desc())
    ).all()
    return [
        SegmentSummary(
            name=name or "-",
            customers=int(count),
            clv=Decimal(str(clv)).quantize(CENT),
            value_at_risk=Decimal(str(risk)).quantize(CENT),
        )
        for name, count, clv, risk in rows
    ]
