"""Answer an unhappy customer like a person: apologise for the problem, offer a person.

The detector (``crm_store.services.complaints``) reads the message; the
trained intent ``complain`` counts as a complaint too. Each complaint is
recorded once per conversation and problem on the contact history.
"""

from __future__ import annotations

import logging

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict
from sqlalchemy.orm import Session

from actions.common import channel_of, verified_customer_id
from actions.store import in_store
from crm_store.services.complaints import (
    ComplaintSignal,
    detect_complaint,
    problem_of,
    record_complaint,
)
from crm_store.services.handoff import current_conversation_id

logger = logging.getLogger(__name__)


def complaint_in(tracker: Tracker) -> ComplaintSignal | None:
    """The complaint in the latest message (lexicon or intent ``complain``), or None."""
    message = tracker.latest_message or {}
    text = message.get("text") or ""
    if text.startswith("/"):
        return None
    signal = detect_complaint(text)
    intent = (message.get("intent") or {}).get("name")
    if signal is None and intent == "complain":
        return ComplaintSignal(score=0.0, problem=problem_of(text))
    return signal


def record_for_tracker(
    session: Session,
    *,
    tracker_key: str,
    channel: str,
    problem: str,
    customer_id: str | None,
    source: str,
) -> bool:
    """Record the complaint on the tracker's current conversation."""
    conversation_id = current_conversation_id(
        session, tracker_key=tracker_key, channel=channel, customer_id=customer_id
    )
    return record_complaint(
        session,
        conversation_id=conversation_id,
        channel=channel,
        problem=problem,
        customer_id=customer_id,
        source=source,
    )


async def record_complaint_quietly(tracker: Tracker, signal: ComplaintSignal) -> None:
    """Record the complaint on the contact history; a store error is only logged."""
    try:
        await in_store(
            record_for_tracker,
            tracker_key=tracker.sender_id,
            channel=channel_of(tracker),
            problem=signal.problem,
            customer_id=verified_customer_id(tracker),
            source="intent" if signal.score == 0.0 else "lexicon",
        )
    except Exception:  # noqa: BLE001 - the reply matters more than the record
        logger.warning("could not record a complaint", exc_info=True)


async def acknowledge_complaint(
    dispatcher: CollectingDispatcher,
    tracker: Tracker,
    signal: ComplaintSignal,
    *,
    in_task: bool,
    offer: str | None = None,
) -> list[EventType]:
    """Apologise naming the problem, offer a person, and record the complaint.

    ``in_task``: the bot goes on with a task (a form asks next), so the offer is
    a button that works mid-form (``/request_human``); otherwise a yes/no
    question (``human_offered``); ``offer`` replaces that response. A repeated
    complaint about the same problem gets a shorter apology, not the same text.
    """
    again = tracker.get_slot("complaint") == signal.problem
    dispatcher.utter_message(
        response="utter_complaint_again"
        if again
        else f"utter_complaint_{signal.problem}"
    )
    default = (
        "utter_complaint_person_anytime" if in_task else "utter_complaint_offer_human"
    )
    dispatcher.utter_message(response=offer or default)
    await record_complaint_quietly(tracker, signal)
    events: list[EventType] = [
        SlotSet("complaint", signal.problem),
        SlotSet("handoff_reason", "complaint"),
    ]
    if not in_task:
        events.append(SlotSet("human_offered", True))
    return events


class ActionComplaint(Action):
    """A complaint without a task: apologise, offer a person, record it."""

    def name(self) -> str:  # noqa: D102
        return "action_complaint"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        text = (tracker.latest_message or {}).get("text") or ""
        signal = complaint_in(tracker) or ComplaintSignal(0.0, problem_of(text))
        return await acknowledge_complaint(dispatcher, tracker, signal, in_task=False)
