"""End of a task: stop on request, wrap up, ask and record CSAT (1-5)."""

from __future__ import annotations

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.common import channel_of, reset_task, verified_customer_id
from actions.store import in_store
from crm_store.errors import InvalidInput
from crm_store.services.feedback import parse_csat, record_csat


class ActionStopTask(Action):
    """The customer changed their mind: drop the task and its answers."""

    def name(self) -> str:  # noqa: D102
        return "action_stop_task"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        dispatcher.utter_message(response="utter_task_stopped")
        return reset_task()


class ActionWrapUp(Action):
    """After "thanks" or "no, that's all": ask CSAT once if a task was resolved."""

    def name(self) -> str:  # noqa: D102
        return "action_wrap_up"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        if tracker.get_slot("task_resolved") and not tracker.get_slot("csat_asked"):
            dispatcher.utter_message(response="utter_ask_csat")
            return [SlotSet("csat_asked", True)]
        intent = (tracker.latest_message.get("intent") or {}).get("name")
        if intent == "thanks":
            dispatcher.utter_message(response="utter_you_are_welcome")
        else:
            dispatcher.utter_message(response="utter_ok_anything_else")
        return []


class ActionRecordCsat(Action):
    """Store the customer's 1-5 rating on the conversation and in the history."""

    def name(self) -> str:  # noqa: D102
        return "action_record_csat"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        entity = next(tracker.get_latest_entity_values("rating"), None)
        try:
            score = parse_csat(
                entity if entity is not None else tracker.latest_message.get("text")
            )
        except InvalidInput:
            dispatcher.utter_message(response="utter_ask_csat")
            return [SlotSet("csat_asked", True)]
        customer_id = verified_customer_id(tracker)
        await in_store(
            record_csat,
            conversation_id=tracker.sender_id,
            score=score,
            channel=channel_of(tracker),
            customer_id=customer_id,
        )
        dispatcher.utter_message(response="utter_thanks_for_rating")
        return [
            SlotSet("csat_asked", True),
            SlotSet("task_resolved", False),
            *reset_task(),
        ]
