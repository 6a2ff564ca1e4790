"""Order skills: status with tracking and expected delivery, recent orders, cancel."""

from __future__ import annotations

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.common import fmt_date, fmt_money, is_verified, reset_task
from actions.store import transaction
from crm_store.models import Order
from crm_store.services.errors import NotFound
from crm_store.services.order_changes import NotCancellable, cancel_order
from crm_store.services.orders import get_order_for_customer, orders_for_customer
from crm_store.services.shipping import expected_delivery


def status_response(order: Order) -> tuple[str, dict[str, str]]:
    """Return the response name and variables describing an order's status."""
    facts = {
        "order": order.id,
        "status": order.status,
        "total": fmt_money(order.total, order.currency),
        "placed": fmt_date(order.placed_at),
    }
    if order.status == "shipped":
        window = expected_delivery(order)
        return "utter_order_status_shipped", {
            **facts,
            "carrier": order.carrier or "our carrier",
            "tracking": order.tracking_number or "not available yet",
            "shipped": fmt_date(order.shipped_at),
            "earliest": fmt_date(window.earliest if window else None),
            "latest": fmt_date(window.latest if window else None),
        }
    if order.status == "delivered":
        return "utter_order_status_delivered", {
            **facts,
            "carrier": order.carrier or "our carrier",
            "tracking": order.tracking_number or "-",
            "delivered": fmt_date(order.delivered_at),
        }
    if order.status == "cancelled":
        return "utter_order_status_cancelled", {
            **facts,
            "cancelled": fmt_date(order.cancelled_at or order.updated_at),
        }
    if order.status == "returned":
        return "utter_order_status_returned", facts
    return "utter_order_status_processing", facts


class ActionOrderStatus(Action):
    """Tell a verified customer the status of the named (or latest) order."""

    def name(self) -> str:  # noqa: D102
        return "action_order_status"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        if not is_verified(tracker):
            return reset_task()
        customer_id = tracker.get_slot("customer_id")
        number = tracker.get_slot("order_number")
        with transaction() as session:
            if number:
                try:
                    order = get_order_for_customer(
                        session, order_number=number, customer_id=customer_id
                    )
                except NotFound:
                    dispatcher.utter_message(
                        response="utter_order_not_found", order=number
                    )
                    return reset_task()
            else:
                latest = orders_for_customer(session, customer_id=customer_id, limit=1)
                if not latest:
                    dispatcher.utter_message(response="utter_no_orders")
                    return reset_task()
                order = latest[0]
            response, facts = status_response(order)
        dispatcher.utter_message(response=response, **facts)
        dispatcher.utter_message(response="utter_anything_else")
        return reset_task(resolved=True)


class ActionListOrders(Action):
    """List a verified customer's five most recent orders."""

    def name(self) -> str:  # noqa: D102
        return "action_list_orders"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        if not is_verified(tracker):
            return reset_task()
        with transaction() as session:
            orders = orders_for_customer(
                session, customer_id=tracker.get_slot("customer_id"), limit=5
            )
            lines = [
                f"- {o.id}: {o.status}, placed {fmt_date(o.placed_at)}, "
                f"{fmt_money(o.total, o.currency)}"
                for o in orders
            ]
        if not lines:
            dispatcher.utter_message(response="utter_no_orders")
            return reset_task()
        dispatcher.utter_message(
            response="utter_recent_orders", orders="\n".join(lines)
        )
        dispatcher.utter_message(response="utter_anything_else")
        return reset_task(resolved=True)


class ActionCancelOrder(Action):
    """Cancel the order once the customer confirmed; explain if it is too late."""

    def name(self) -> str:  # noqa: D102
        return "action_cancel_order"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        number = tracker.get_slot("order_number")
        if not is_verified(tracker) or not number:
            return reset_task()
        if not tracker.get_slot("confirm_cancel"):
            dispatcher.utter_message(response="utter_cancel_kept", order=number)
            return reset_task()
        try:
            with transaction() as session:
                order = cancel_order(
                    session,
                    order_number=number,
                    customer_id=tracker.get_slot("customer_id"),
                    actor=f"bot:{tracker.sender_id}"[:64],
                )
                total = fmt_money(order.total, order.currency)
        except NotCancellable as exc:
            dispatcher.utter_message(
                response=f"utter_cannot_cancel_{exc.status}", order=number
            )
            return reset_task()
        except NotFound:
            dispatcher.utter_message(response="utter_order_not_found", order=number)
            return reset_task()
        dispatcher.utter_message(
            response="utter_order_cancelled", order=number, total=total
        )
        dispatcher.utter_message(response="utter_anything_else")
        return reset_task(resolved=True)
