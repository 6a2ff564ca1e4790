"""Feature helpers read straight from the store."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from crm_store.analytics.features import newest_order_time
from crm_store.db import make_session_factory
from crm_store.models import Customer, Order

EARLY = dt.datetime(2026, 3, 1, 9, 30)
LATE = dt.datetime(2026, 10, 29, 17, 58)


def test_newest_order_time_is_the_latest_placed_at(empty_engine):
    factory = make_session_factory(empty_engine)
    with factory() as session:
        assert newest_order_time(session) is None
    with factory.begin() as session:
        session.add(Customer(id="C-F1", first_name="Fea", last_name="Tures"))
        session.flush()
        for number, placed_at in (("F-1", LATE), ("F-2", EARLY)):
            session.add(
                Order(
                    id=number,
                    customer_id="C-F1",
                    placed_at=placed_at,
                    status="cancelled" if placed_at == LATE else "paid",
                    subtotal=Decimal("10.00"),
                    shipping_fee=Decimal("0.00"),
                    total=Decimal("10.00"),
                )
            )
    with factory() as session:
        assert newest_order_time(session) == LATE
