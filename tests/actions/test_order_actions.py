"""Order status, recent orders and cancellation on trackers (seeded store)."""

from __future__ import annotations

import pytest
from action_support import pick_order, responses, run, slots_of, tracker, verified
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from actions.common import TASK_SLOTS, fmt_date, fmt_money
from actions.orders import ActionCancelOrder, ActionListOrders, ActionOrderStatus
from crm_store.models import AuditLog, Customer, Order
from crm_store.services.orders import orders_for_customer
from crm_store.services.shipping import expected_delivery


def assert_reset(events: list[dict], resolved: bool | None = None) -> None:
    slots = slots_of(events)
    assert all(slots[name] is None for name in TASK_SLOTS)
    assert slots.get("task_resolved") is resolved


def order(store: sessionmaker, number: str) -> Order:
    with store() as session:
        return session.get(Order, number)


def customer_without_orders(store: sessionmaker) -> str:
    with store.begin() as session:
        session.add(Customer(id="C-new", first_name="Nova", last_name="Nil"))
    return "C-new"


UNVERIFIED = {"customer_id": "C0001", "order_number": "A10001", "verified": False}


@pytest.mark.parametrize(
    "action", [ActionOrderStatus(), ActionListOrders(), ActionCancelOrder()]
)
def test_order_actions_refuse_unverified_sender(store, action) -> None:
    events, messages = run(
        action, tracker(slots={**UNVERIFIED, "confirm_cancel": True})
    )
    assert messages == []
    assert_reset(events)
    assert order(store, "A10001").status == "shipped"


# --- status -----------------------------------------------------------------------


def test_status_of_a_shipped_order_with_tracking_and_window(store) -> None:
    number, owner = pick_order(store, Order.status == "shipped")
    shipped = order(store, number)
    window = expected_delivery(shipped)
    events, messages = run(
        ActionOrderStatus(), tracker(slots=verified(owner, order_number=number))
    )
    assert responses(messages) == ["utter_order_status_shipped", "utter_anything_else"]
    facts = messages[0]
    assert facts["order"] == number
    assert facts["carrier"] == shipped.carrier
    assert facts["tracking"] == shipped.tracking_number
    assert facts["shipped"] == fmt_date(shipped.shipped_at)
    assert facts["earliest"] == fmt_date(window.earliest)
    assert facts["latest"] == fmt_date(window.latest)
    assert facts["total"] == fmt_money(shipped.total, shipped.currency)
    assert_reset(events, resolved=True)


def test_status_of_delivered_and_cancelled_orders(store) -> None:
    number, owner = pick_order(store, Order.status == "delivered")
    _, messages = run(
        ActionOrderStatus(), tracker(slots=verified(owner, order_number=number))
    )
    assert responses(messages)[0] == "utter_order_status_delivered"
    assert messages[0]["delivered"] == fmt_date(order(store, number).delivered_at)
    number, owner = pick_order(store, Order.status == "cancelled")
    _, messages = run(
        ActionOrderStatus(), tracker(slots=verified(owner, order_number=number))
    )
    assert responses(messages)[0] == "utter_order_status_cancelled"


def test_status_of_the_latest_order_when_none_named(store) -> None:
    with store() as session:
        latest = orders_for_customer(session, customer_id="C0002", limit=1)[0]
    events, messages = run(ActionOrderStatus(), tracker(slots=verified("C0002")))
    assert messages[0]["order"] == latest.id
    assert messages[0]["status"] == latest.status
    assert responses(messages)[-1] == "utter_anything_else"
    assert_reset(events, resolved=True)


def test_status_of_someone_elses_order_is_not_found(store) -> None:
    number, owner = pick_order(store, Order.status == "shipped")
    other = "C0001" if owner != "C0001" else "C0002"
    events, messages = run(
        ActionOrderStatus(), tracker(slots=verified(other, order_number=number))
    )
    assert responses(messages) == ["utter_order_not_found"]
    assert messages[0]["order"] == number
    assert "tracking" not in messages[0] and "status" not in messages[0]
    assert_reset(events)


def test_status_and_list_without_orders(store) -> None:
    nobody = customer_without_orders(store)
    for action in (ActionOrderStatus(), ActionListOrders()):
        events, messages = run(action, tracker(slots=verified(nobody)))
        assert responses(messages) == ["utter_no_orders"]
        assert_reset(events)


# --- recent orders ----------------------------------------------------------------


def test_list_recent_orders(store) -> None:
    with store() as session:
        recent = orders_for_customer(session, customer_id="C0002", limit=5)
    events, messages = run(ActionListOrders(), tracker(slots=verified("C0002")))
    assert responses(messages) == ["utter_recent_orders", "utter_anything_else"]
    lines = messages[0]["orders"].split("\n")
    assert len(lines) == len(recent)
    for line, row in zip(lines, recent, strict=True):
        assert line == (
            f"- {row.id}: {row.status}, placed {fmt_date(row.placed_at)}, "
            f"{fmt_money(row.total, row.currency)}"
        )
    assert_reset(events, resolved=True)


# --- cancellation -----------------------------------------------------------------


def test_cancel_a_placed_order_when_confirmed(store) -> None:
    number, owner = pick_order(store, Order.status.in_(("placed", "paid")))
    before = order(store, number)
    t = tracker(
        slots=verified(
            owner, order_number=number, confirm_cancel=True, confirmed_order=number
        ),
        sender="s-c",
    )
    events, messages = run(ActionCancelOrder(), t)
    assert responses(messages) == ["utter_order_cancelled", "utter_anything_else"]
    assert messages[0]["total"] == fmt_money(before.total, before.currency)
    assert_reset(events, resolved=True)
    assert order(store, number).status == "cancelled"
    with store() as session:
        audit = session.execute(
            select(AuditLog).where(AuditLog.entity_id == number)
        ).scalar_one()
    assert (audit.action, audit.actor) == ("order.cancel", "bot:s-c")


def test_cancel_kept_when_not_confirmed(store) -> None:
    number, owner = pick_order(store, Order.status.in_(("placed", "paid")))
    events, messages = run(
        ActionCancelOrder(),
        tracker(
            slots=verified(
                owner, order_number=number, confirm_cancel=False, confirmed_order=number
            )
        ),
    )
    assert responses(messages) == ["utter_cancel_kept"]
    assert_reset(events)
    assert order(store, number).status in ("placed", "paid")


def test_cancel_refused_for_shipped_or_someone_elses_order(store) -> None:
    shipped, owner = pick_order(store, Order.status == "shipped")
    events, messages = run(
        ActionCancelOrder(),
        tracker(
            slots=verified(
                owner,
                order_number=shipped,
                confirm_cancel=True,
                confirmed_order=shipped,
            )
        ),
    )
    assert responses(messages) == ["utter_cannot_cancel_shipped"]
    assert_reset(events)
    placed, owner = pick_order(store, Order.status.in_(("placed", "paid")))
    other = "C0001" if owner != "C0001" else "C0002"
    events, messages = run(
        ActionCancelOrder(),
        tracker(
            slots=verified(
                other, order_number=placed, confirm_cancel=True, confirmed_order=placed
            )
        ),
    )
    assert responses(messages) == ["utter_order_not_found"]
    assert_reset(events)
    assert order(store, placed).status in ("placed", "paid")
    assert order(store, shipped).status == "shipped"
