"""Return skill: create an RMA for an eligible order."""

from __future__ import annotations

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.common import fmt_date, reset_task, task_done, verified_task
from actions.orders import ask_about_confirmed_order, confirmed_order_refusal
from actions.store import in_store
from crm_store.errors import NotFound
from crm_store.services.returns import NotReturnable, start_return


class ActionAskReturnReason(Action):
    """Ask the reason for the return and pin the order it is about."""

    def name(self) -> str:  # noqa: D102
        return "action_ask_return_reason"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        return ask_about_confirmed_order(dispatcher, tracker, "utter_ask_return_reason")


class ActionStartReturn(Action):
    """Create the return (RMA) for the order asked about; say what happens next.

    Refuses when ``order_number`` changed since the reason was asked for that
    order, or when the verification is not strong and recent enough.
    """

    def name(self) -> str:  # noqa: D102
        return "action_start_return"

    @verified_task("order_number")
    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        refusal = confirmed_order_refusal(dispatcher, tracker)
        if refusal is not None:
            return refusal
        number = tracker.get_slot("confirmed_order")
        try:
            ticket = await in_store(
                start_return,
                order_number=number,
                customer_id=tracker.get_slot("customer_id"),
                reason=tracker.get_slot("return_reason"),
                conversation_id=tracker.sender_id,
            )
        except NotReturnable as exc:
            e = exc.eligibility
            dispatcher.utter_message(
                response=f"utter_return_{e.reason}",
                order=number,
                window_days=e.window_days,
                deadline=fmt_date(e.deadline),
                rma=e.rma_number or "",
            )
            return reset_task()
        except NotFound:
            dispatcher.utter_message(response="utter_order_not_found", order=number)
            return reset_task()
        dispatcher.utter_message(
            response="utter_return_started", order=number, rma=ticket.rma_number
        )
        return task_done(dispatcher)
