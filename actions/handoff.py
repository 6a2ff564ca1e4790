"""Human handoff and the fallback ladder (rephrase once, then offer a person)."""

from __future__ import annotations

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict
from sqlalchemy.orm import Session

from actions.common import (
    channel_of,
    is_verified,
    recent_user_turns,
    reset_task,
    treatment_settings,
    verified_customer_id,
)
from actions.complaints import (
    acknowledge_complaint,
    complaint_in,
    record_complaint_quietly,
)
from actions.store import in_store
from crm_settings import get_settings
from crm_store.services.handoff import (
    REASONS,
    HandoffPacket,
    HandoffResult,
    current_conversation_id,
    request_handoff,
)
from crm_store.services.tickets import open_ticket

FALLBACK_INTENTS = ("nlu_fallback", "out_of_scope")


def queue_handoff(
    session: Session,
    *,
    tracker_key: str,
    packet: HandoffPacket,
    priority: int,
    recent_texts: list[str],
    sender_limit: int,
) -> HandoffResult:
    """Queue the tracker's current conversation for a human agent.

    De-duplicated per conversation and limited per sender (``request_handoff``).
    Outside agent hours the bot promises a callback, so a known customer also
    gets a callback ticket with a new handoff, in the same transaction.
    """
    conversation_id = current_conversation_id(
        session, tracker_key=tracker_key, channel=packet.channel
    )
    result = request_handoff(
        session,
        conversation_id=conversation_id,
        packet=packet,
        priority=priority,
        sender_limit=sender_limit,
    )
    if result.status == "queued" and not result.agents_available and packet.customer_id:
        open_ticket(
            session,
            customer_id=packet.customer_id,
            subject="Callback requested outside agent hours",
            description="; ".join(recent_texts[-3:]),
            kind="callback",
            conversation_id=conversation_id,
        )
    return result


def tell_customer(dispatcher: CollectingDispatcher, result: HandoffResult) -> None:
    """Say what became of the request (queued, already queued, limited)."""
    if result.status == "limited":
        dispatcher.utter_message(response="utter_handoff_limit")
    elif not result.agents_available:
        dispatcher.utter_message(response="utter_handoff_after_hours")
    elif result.status == "already_claimed":
        dispatcher.utter_message(response="utter_handoff_already_claimed")
    elif result.status == "already_queued":
        dispatcher.utter_message(
            response="utter_handoff_already_queued", position=result.position
        )
    else:
        dispatcher.utter_message(
            response="utter_handoff_queued", position=result.position
        )


class ActionHandoff(Action):
    """Queue the conversation for a human agent and tell the customer."""

    def name(self) -> str:  # noqa: D102
        return "action_handoff"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        complaint = complaint_in(tracker)
        reason = tracker.get_slot("handoff_reason") or (
            "complaint" if complaint else "customer_request"
        )
        if complaint is not None:
            await record_complaint_quietly(tracker, complaint)
        if reason not in REASONS:
            reason = "other"
        customer_id = verified_customer_id(tracker)
        treatment = await treatment_settings(customer_id)
        intents, texts = recent_user_turns(tracker)
        last = intents[-1] if intents else "-"
        packet = HandoffPacket(
            customer_id=customer_id,
            verified=is_verified(tracker),
            verification_method=tracker.get_slot("verification_method"),
            channel=channel_of(tracker),
            reason=reason,
            last_intents=intents,
            last_messages=texts,
            summary=f"Bot handoff ({reason}); last intent: {last}.",
            value_tier=treatment.get("value_tier"),
            churn_band=treatment.get("churn_band"),
        )
        result = await in_store(
            queue_handoff,
            tracker_key=tracker.sender_id,
            packet=packet,
            priority=int(treatment.get("handoff_priority_boost") or 0),
            recent_texts=texts,
            sender_limit=get_settings().handoff_sender_limit,
        )
        tell_customer(dispatcher, result)
        escalated = [] if result.status == "limited" else [SlotSet("escalated", True)]
        return [
            *escalated,
            SlotSet("human_offered", False),
            SlotSet("handoff_reason", None),
            *reset_task(),
        ]


def consecutive_fallbacks(tracker: Tracker) -> int:
    """Count the latest user messages in a row that the bot did not understand."""
    count = 0
    for event in reversed(tracker.events):
        if event.get("event") != "user":
            continue
        intent = ((event.get("parse_data") or {}).get("intent") or {}).get("name")
        if intent not in FALLBACK_INTENTS:
            break
        count += 1
    return count


class ActionFallback(Action):
    """Ask to rephrase; after N misunderstandings in a row offer a human."""

    def name(self) -> str:  # noqa: D102
        return "action_fallback"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        customer_id = verified_customer_id(tracker)
        treatment = await treatment_settings(customer_id)
        limit = int(treatment.get("offer_human_after_fallbacks") or 2)
        intent = (tracker.latest_message.get("intent") or {}).get("name")
        complaint = complaint_in(tracker)
        if complaint is not None:
            return await acknowledge_complaint(
                dispatcher, tracker, complaint, in_task=False
            )
        if consecutive_fallbacks(tracker) >= max(limit, 1):
            dispatcher.utter_message(response="utter_offer_human")
            return [
                SlotSet("human_offered", True),
                SlotSet("handoff_reason", "fallback"),
            ]
        if intent == "out_of_scope":
            dispatcher.utter_message(response="utter_out_of_scope")
        else:
            dispatcher.utter_message(response="utter_ask_rephrase")
        return []


class ActionHumanDeclined(Action):
    """The customer does not want a person after all."""

    def name(self) -> str:  # noqa: D102
        return "action_human_declined"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        dispatcher.utter_message(response="utter_human_declined")
        return [SlotSet("human_offered", False), SlotSet("handoff_reason", None)]
