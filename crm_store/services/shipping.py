"""Delivery estimates from the shipping policy (1 to 3 business days after dispatch)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from crm_store.models import Order

MIN_BUSINESS_DAYS = 1
MAX_BUSINESS_DAYS = 3


def add_business_days(day: dt.date, days: int) -> dt.date:
    """Return the date ``days`` business days (Monday to Friday) after ``day``."""
    current = day
    remaining = days
    while remaining > 0:
        current += dt.timedelta(days=1)
        if current.weekday() < 5:
            remaining -= 1
    return current


@dataclass(frozen=True)
class DeliveryWindow:
    """The earliest and latest expected delivery date of a shipped order."""

    earliest: dt.date
    latest: dt.date


def expected_delivery(order: Order) -> DeliveryWindow | None:
    """Return the expected delivery window of a shipped order, else ``None``.

    Policy: standard delivery in NL/BE takes 1 to 3 business days after dispatch,
    so the window counts business days from ``shipped_at``.
    """
    if order.status != "shipped" or order.shipped_at is None:
        return None
    shipped = order.shipped_at.date()
    return DeliveryWindow(
        add_business_days(shipped, MIN_BUSINESS_DAYS),
        add_business_days(shipped, MAX_BUSINESS_DAYS),
    )
