"""End of a task: stop on request, wrap up, ask and record CSAT (1-5, once).

Also the return from a person: ``handed_back`` (triggered by the console's
hand-back, never typed) runs ``action_handed_back``, which welcomes the
customer back and asks for a rating of the conversation.
"""

from __future__ import annotations

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict
from sqlalchemy.orm import Session

from actions.common import channel_of, reset_task, verified_customer_id
from actions.store import in_store
from crm_store.errors import InvalidInput
from crm_store.services.feedback import (
    CsatOutcome,
    parse_csat,
    record_csat,
    request_csat,
)
from crm_store.services.handoff import current_conversation_id
from crm_store.services.links import conversation_id_for


class ActionStopTask(Action):
    """The customer changed their mind: drop the task and its answers."""

    def name(self) -> str:  # noqa: D102
        return "action_stop_task"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        dispatcher.utter_message(response="utter_task_stopped")
        return [
            *reset_task(),
            SlotSet("invalid_answers", None),
            SlotSet("human_offered", False),
            SlotSet("handoff_reason", None),
        ]


def ask_for_csat(session: Session, *, tracker_key: str, channel: str) -> bool:
    """Note that the bot asks the tracker's conversation for a rating.

    Returns False when that conversation was rated already.
    """
    conversation_id = current_conversation_id(
        session, tracker_key=tracker_key, channel=channel
    )
    return request_csat(session, conversation_id=conversation_id)


def rate_conversation(
    session: Session, *, tracker_key: str, score: int, customer_id: str | None
) -> CsatOutcome:
    """Record a rating on the tracker's current conversation (if it was asked)."""
    return record_csat(
        session,
        conversation_id=conversation_id_for(session, tracker_key),
        score=score,
        customer_id=customer_id,
    )


class ActionWrapUp(Action):
    """After "thanks" or "no, that's all": ask CSAT once if a task was resolved."""

    def name(self) -> str:  # noqa: D102
        return "action_wrap_up"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        if (
            tracker.get_slot("task_resolved")
            and not tracker.get_slot("csat_asked")
            and await in_store(
                ask_for_csat,
                tracker_key=tracker.sender_id,
                channel=channel_of(tracker),
            )
        ):
            dispatcher.utter_message(response="utter_ask_csat")
            return [SlotSet("csat_asked", True)]
        intent = (tracker.latest_message.get("intent") or {}).get("name")
        if intent == "thanks":
            dispatcher.utter_message(response="utter_you_are_welcome")
        else:
            dispatcher.utter_message(response="utter_ok_anything_else")
        return []


class ActionRecordCsat(Action):
    """Store the customer's 1-5 rating, once, where the bot asked for one.

    A rating the bot did not ask for, or a second one, gets a polite answer
    and records nothing (``CsatOutcome``).
    """

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
            if not tracker.get_slot("csat_asked"):
                dispatcher.utter_message(response="utter_csat_not_requested")
                return []
            dispatcher.utter_message(response="utter_ask_csat")
            return [SlotSet("csat_asked", True)]
        outcome = await in_store(
            rate_conversation,
            tracker_key=tracker.sender_id,
            score=score,
            customer_id=verified_customer_id(tracker),
        )
        if outcome is CsatOutcome.ALREADY_ANSWERED:
            dispatcher.utter_message(response="utter_csat_already_recorded")
            return []
        if outcome is not CsatOutcome.RECORDED:
            dispatcher.utter_message(response="utter_csat_not_requested")
            return []
        dispatcher.utter_message(response="utter_thanks_for_rating")
        return [
            SlotSet("csat_asked", True),
            SlotSet("task_resolved", False),
            *reset_task(),
        ]


class ActionHandedBack(Action):
    """An agent handed the conversation back: welcome back, then ask for a rating.

    The rating question is asked once per conversation (``request_csat``); the
    answer is recorded by ``action_record_csat``. A conversation rated already
    only hears the welcome and "anything else?".
    """

    def name(self) -> str:  # noqa: D102
        return "action_handed_back"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        dispatcher.utter_message(response="utter_handed_back")
        events: list[EventType] = [
            *reset_task(),
            SlotSet("invalid_answers", None),
            SlotSet("human_offered", False),
            SlotSet("handoff_reason", None),
        ]
        if await in_store(
            ask_for_csat, tracker_key=tracker.sender_id, channel=channel_of(tracker)
        ):
            dispatcher.utter_message(response="utter_ask_csat_after_agent")
            return [*events, SlotSet("csat_asked", True)]
        dispatcher.utter_message(response="utter_anything_else")
        return events
