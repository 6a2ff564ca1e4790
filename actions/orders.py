"""Order skills: status with tracking and expected delivery, recent orders, cancel."""

from __future__ import annotations

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict
from sqlalchemy.orm import Session

from actions.common import (
    fmt_date,
    fmt_money,
    has_recent_strong_verification,
    reset_task,
    step_up_refusal,
    task_done,
    verified_task,
)
from actions.store import in_store
from crm_store.errors import NotFound
from crm_store.services.order_changes import NotCancellable, cancel_order
from crm_store.services.orders import (
    OrderSummary,
    order_summary,
    recent_order_summaries,
    summarize_order,
)


def status_response(order: OrderSummary) -> tuple[str, dict[str, str]]:
    """Return the response name and variables describing an order's status."""
    facts = {
        "order": order.id,
        "status": order.status,
        "total": fmt_money(order.total, order.currency),
        "placed": fmt_date(order.placed_at),
    }
    if order.status == "shipped":
        window = order.delivery
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


def order_or_latest(
    session: Session, *, customer_id: str, order_number: str | None
) -> OrderSummary | None:
    """Return the named order of the customer, else their latest (None: no orders).

    Raises:
        NotFound: the named order does not exist or is someone else's.
    """
    if order_number:
        return order_summary(
            session, order_number=order_number, customer_id=customer_id
        )
    latest = recent_order_summaries(session, customer_id=customer_id, limit=1)
    return latest[0] if latest else None


class ActionOrderStatus(Action):
    """Tell a verified customer the status of the named (or latest) order."""

    def name(self) -> str:  # noqa: D102
        return "action_order_status"

    @verified_task()
    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        number = tracker.get_slot("order_number")
        try:
            order = await in_store(
                order_or_latest,
                customer_id=tracker.get_slot("customer_id"),
                order_number=number,
            )
        except NotFound:
            dispatcher.utter_message(response="utter_order_not_found", order=number)
            return reset_task()
        if order is None:
            dispatcher.utter_message(response="utter_no_orders")
            return reset_task()
        response, facts = status_response(order)
        dispatcher.utter_message(response=response, **facts)
        return task_done(dispatcher)


class ActionListOrders(Action):
    """List a verified customer's five most recent orders."""

    def name(self) -> str:  # noqa: D102
        return "action_list_orders"

    @verified_task()
    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        orders = await in_store(
            recent_order_summaries, customer_id=tracker.get_slot("customer_id"), limit=5
        )
        if not orders:
            dispatcher.utter_message(response="utter_no_orders")
            return reset_task()
        lines = [
            f"- {o.id}: {o.status}, placed {fmt_date(o.placed_at)}, "
            f"{fmt_money(o.total, o.currency)}"
            for o in orders
        ]
        dispatcher.utter_message(
            response="utter_recent_orders", orders="\n".join(lines)
        )
        return task_done(dispatcher)


def cancel_and_summarize(session: Session, **cancel_args: str) -> OrderSummary:
    """Cancel the order (see ``cancel_order``) and return its new summary."""
    return summarize_order(cancel_order(session, **cancel_args))


def ask_about_confirmed_order(
    dispatcher: CollectingDispatcher, tracker: Tracker, response: str
) -> list[EventType]:
    """Ask ``response`` about the order the task was checked for; remember it.

    The first question of a task pins the order it names in ``confirmed_order``
    (reset at task start by ``action_step_up``); repeated questions keep naming
    that order even if ``order_number`` changed meanwhile, so the customer only
    ever confirms the order that was checked.
    """
    order = tracker.get_slot("confirmed_order") or tracker.get_slot("order_number")
    dispatcher.utter_message(response=response, order_number=order)
    return [SlotSet("confirmed_order", order)]


def confirmed_order_refusal(
    dispatcher: CollectingDispatcher, tracker: Tracker
) -> list[EventType] | None:
    """Refusal events unless the task is about the order the customer confirmed.

    Also refuses when the verification is no longer strong and recent enough
    for a change (``has_recent_strong_verification``).
    """
    confirmed = tracker.get_slot("confirmed_order")
    if not confirmed or confirmed != tracker.get_slot("order_number"):
        dispatcher.utter_message(response="utter_order_changed", order=confirmed)
        return reset_task()
    if not has_recent_strong_verification(tracker):
        dispatcher.utter_message(response="utter_step_up_expired")
        return step_up_refusal()
    return None


class ActionAskConfirmCancel(Action):
    """Ask "Shall I cancel order X?" and pin X as the order being confirmed."""

    def name(self) -> str:  # noqa: D102
        return "action_ask_confirm_cancel"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        return ask_about_confirmed_order(
            dispatcher, tracker, "utter_ask_confirm_cancel"
        )


class ActionCancelOrder(Action):
    """Cancel the confirmed order; explain if it is too late.

    Acts only on ``confirmed_order``, the order named in the confirmation
    question, and refuses if ``order_number`` differs from it (a later message
    cannot redirect the confirmation to another order).
    """

    def name(self) -> str:  # noqa: D102
        return "action_cancel_order"

    @verified_task("order_number")
    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        number = tracker.get_slot("confirmed_order") or tracker.get_slot("order_number")
        if tracker.get_slot("confirm_cancel") is not True:
            dispatcher.utter_message(response="utter_cancel_kept", order=number)
            return reset_task()
        refusal = confirmed_order_refusal(dispatcher, tracker)
        if refusal is not None:
            return refusal
        try:
            order = await in_store(
                cancel_and_summarize,
                order_number=number,
                customer_id=tracker.get_slot("customer_id"),
                actor=f"bot:{tracker.sender_id}"[:64],
            )
        except NotCancellable as exc:
            dispatcher.utter_message(
                response=f"utter_cannot_cancel_{exc.status}", order=number
            )
            return reset_task()
        except NotFound:
            dispatcher.utter_message(response="utter_order_not_found", order=number)
            return reset_task()
        dispatcher.utter_message(
            response="utter_order_cancelled",
            order=number,
            total=fmt_money(order.total, order.currency),
        )
        return task_done(dispatcher)
