"""Read services behind the bot's actions: order summaries and first names."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.errors import NotFound, NotOwner
from crm_store.models import Customer, Order
from crm_store.services.customers import customer_first_name
from crm_store.services.orders import (
    order_summary,
    orders_for_customer,
    recent_order_summaries,
    summarize_order,
)
from crm_store.services.shipping import expected_delivery


def first_order(session: Session, status: str) -> Order:
    return session.execute(
        select(Order).where(Order.status == status).order_by(Order.id).limit(1)
    ).scalar_one()


def test_summary_of_a_shipped_order_has_its_facts_and_delivery_window(
    session: Session,
) -> None:
    order = first_order(session, "shipped")
    summary = order_summary(
        session, order_number=order.id.lower(), customer_id=order.customer_id
    )
    assert summary.id == order.id and summary.status == "shipped"
    assert (summary.total, summary.currency) == (order.total, order.currency)
    assert (summary.carrier, summary.tracking_number) == (
        order.carrier,
        order.tracking_number,
    )
    assert summary.shipped_at == order.shipped_at
    assert summary.delivery is not None
    assert summary.delivery == expected_delivery(order)


def test_summary_of_a_delivered_order_has_no_delivery_window(session: Session) -> None:
    order = first_order(session, "delivered")
    summary = summarize_order(order)
    assert summary.delivered_at == order.delivered_at
    assert summary.delivery is None


def test_summary_of_someone_elses_or_an_unknown_order_is_not_found(
    session: Session,
) -> None:
    order = first_order(session, "shipped")
    with pytest.raises(NotOwner):
        order_summary(session, order_number=order.id, customer_id="C-nobody")
    with pytest.raises(NotFound):
        order_summary(session, order_number="Z99999", customer_id=order.customer_id)


def test_recent_summaries_follow_orders_for_customer(session: Session) -> None:
    expected = orders_for_customer(session, customer_id="C0002", limit=5)
    summaries = recent_order_summaries(session, customer_id="C0002", limit=5)
    assert [s.id for s in summaries] == [o.id for o in expected]
    assert [s.status for s in summaries] == [o.status for o in expected]
    assert recent_order_summaries(session, customer_id="C-nobody") == []


def test_customer_first_name(session: Session) -> None:
    customer = session.get(Customer, "C0001")
    assert customer_first_name(session, customer_id="C0001") == customer.first_name
    assert customer_first_name(session, customer_id="C-nobody") is None
