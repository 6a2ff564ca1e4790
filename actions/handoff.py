"""Human handoff: the packet, the triggers, and what the customer is told.

Triggers, each recorded as the handoff's reason (``handoff.REASONS``):

- ``customer_request``: the customer asks for a person (``request_human``).
- ``low_confidence``: not understood (``nlu_fallback``) ``max(N, 2)`` messages
  in a row, N = the treatment's ``offer_human_after_fallbacks``: queued at once,
  the customer is told why (``ActionFallback``).
- ``fallback``: misunderstood or out of scope N times in a row: a person is
  offered; accepting queues it.
- ``complaint``, ``form_stuck``, ``verification_failed`` (lock-out, failed login
  code), ``step_up_required`` (contact-change codes exhausted or limited): set
  in ``handoff_reason`` by the action that offers a person.
- ``action_failure``: the apology of ``bot.server.FallbackActionEndpoint`` sets
  ``handoff_reason`` so its "Talk to a person" button hands off with it.
- ``business_rule``: the treatment's ``hand_off_on`` (``actions.tickets``).

The customer hears their position and expected wait; outside agent hours a
known customer gets a callback ticket instead (``queue_handoff``).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import replace
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict
from sqlalchemy.orm import Session

from actions.common import (
    channel_of,
    is_verified,
    recent_actions,
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
from channels.keys import channel_identity
from crm_settings import get_settings
from crm_store.errors import InvalidInput
from crm_store.services.agent_hours import AgentHours, parse_agent_hours
from crm_store.services.handoff import (
    REASONS,
    HandoffPacket,
    HandoffResult,
    current_conversation_id,
    request_handoff,
)
from crm_store.services.handoff_packet import enrich_packet, packet_slots
from crm_store.services.identities import resolve_identity
from crm_store.services.queue import QueueWeights, load_queue_weights
from crm_store.services.tickets import open_ticket

logger = logging.getLogger(__name__)

FALLBACK_INTENTS = ("nlu_fallback", "out_of_scope")
LOW_CONFIDENCE_INTENT = "nlu_fallback"
# Not understood this many times in a row (at least): a person takes over.
LOW_CONFIDENCE_HANDOFF_AFTER = 2
# ``handoff_reason`` values other actions set, under their reason.
REASON_ALIASES = {
    "code_limit": "step_up_required",
    "code_exhausted": "step_up_required",
}
INTENT_HISTORY = 8
MESSAGE_HISTORY = 5


def handoff_reason(value: Any) -> str:
    """Map a ``handoff_reason`` slot value to one of ``REASONS`` (else ``other``)."""
    reason = REASON_ALIASES.get(value, value)
    return reason if reason in REASONS else "other"


def wait_phrase(wait: dt.timedelta | None) -> str:
    """Render an expected wait for customers: ``about 6 minutes``."""
    if wait is None:
        return "a few minutes"
    minutes = max(1, math.ceil(wait.total_seconds() / 60))
    if minutes == 1:
        return "about a minute"
    if minutes < 60:
        return f"about {minutes} minutes"
    hours = round(minutes / 30) / 2
    return "about 1 hour" if hours == 1 else f"about {hours:g} hours"


def slots_seen(tracker: Tracker) -> dict[str, Any]:
    """The last non-empty value each slot had in this conversation.

    A finished task resets its slots; the agent still wants to know which order
    or ticket the customer asked about earlier.
    """
    seen: dict[str, Any] = {}
    for event in tracker.events:
        if event.get("event") == "slot" and event.get("value") not in (None, "", []):
            seen[event["name"]] = event["value"]
    return seen


def filled_slots(tracker: Tracker) -> dict[str, Any]:
    """The slots that hold a value now."""
    return {
        name: value
        for name, value in tracker.current_slot_values().items()
        if value not in (None, "", [])
    }


def build_packet(
    tracker: Tracker, *, reason: str, treatment: dict[str, Any], **slots: Any
) -> HandoffPacket:
    """The conversation's side of the packet (``enrich_packet`` adds the store's).

    Slots pass through ``packet_slots`` (no postcode, e-mail, phone or codes);
    ``slots`` overrides tracker slots (e.g. a complaint found in this message).
    """
    intents, texts = recent_user_turns(tracker, limit=INTENT_HISTORY)
    return HandoffPacket(
        customer_id=verified_customer_id(tracker),
        verified=is_verified(tracker),
        verification_method=tracker.get_slot("verification_method"),
        channel=channel_of(tracker),
        reason=reason,
        last_intents=intents,
        last_messages=texts[-MESSAGE_HISTORY:],
        value_tier=treatment.get("value_tier"),
        churn_band=treatment.get("churn_band"),
        tracker_key=tracker.sender_id,
        slots=packet_slots({**slots_seen(tracker), **filled_slots(tracker), **slots}),
        actions=recent_actions(tracker),
    )


def queue_settings() -> tuple[QueueWeights | None, AgentHours | None]:
    """The queue weights and agent hours of the settings; None for a bad file/spec.

    A broken setting is logged and the defaults apply, so a typo in the
    configuration never leaves a customer without a person.
    """
    settings = get_settings()
    weights: QueueWeights | None = None
    hours: AgentHours | None = None
    try:
        # Unset: request_handoff's default (config/queue.yml, read once).
        if settings.queue_config is not None:
            weights = load_queue_weights(settings.queue_config)
    except InvalidInput as error:
        logger.warning("queue weights unusable, defaults apply: %s", error)
    try:
        hours = parse_agent_hours(settings.agent_hours)
    except InvalidInput as error:
        logger.warning("agent hours unusable, defaults apply: %s", error)
    return weights, hours


def queue_handoff(
    session: Session,
    *,
    tracker_key: str,
    packet: HandoffPacket,
    priority: int,
    recent_texts: list[str],
    sender_limit: int,
    weights: QueueWeights | None = None,
    hours: AgentHours | None = None,
) -> HandoffResult:
    """Queue the tracker's current conversation for a human agent.

    The packet is completed with the conversation id, tracker key and what the
    store knows (``enrich_packet``). De-duplicated per conversation and limited
    per sender (``request_handoff``). Outside agent hours the bot promises a
    callback, so a known customer also gets a callback ticket with a new
    handoff, in the same transaction; so does an unverified sender whose
    channel names them (a caller's number, a mail address: the ticket goes to
    that identity's customer or prospect and says where to call back).
    """
    # Who the channel says wrote (a caller's number, a mail address): the
    # conversation's timeline and, after hours, the callback belong to them.
    contact = channel_identity(tracker_key)
    owner = packet.customer_id
    if owner is None and contact is not None:
        try:
            owner = resolve_identity(session, kind=contact[0], value=contact[1])
            owner = owner.customer_id
        except InvalidInput:
            owner = None
    conversation_id = current_conversation_id(
        session, tracker_key=tracker_key, channel=packet.channel, customer_id=owner
    )
    packet = enrich_packet(
        session,
        replace(packet, conversation_id=conversation_id, tracker_key=tracker_key),
    )
    result = request_handoff(
        session,
        conversation_id=conversation_id,
        packet=packet,
        priority=priority,
        sender_limit=sender_limit,
        weights=weights,
        hours=hours,
    )
    if result.status == "queued" and not result.agents_available and owner:
        reach = [f"Call back on {contact[0]}: {contact[1]}"] if contact else []
        open_ticket(
            session,
            customer_id=owner,
            subject="Callback requested outside agent hours",
            description="\n".join([packet.summary or "", *reach, *recent_texts[-3:]]),
            kind="callback",
            conversation_id=conversation_id,
        )
    return result


def tell_customer(
    dispatcher: CollectingDispatcher,
    result: HandoffResult,
    *,
    intro: str | None = None,
    hours: AgentHours | None = None,
) -> None:
    """Say what became of the request: position and expected wait, or why not.

    ``intro`` (a response name) comes first when a person will take over (not
    for a request already waiting or claimed, nor for a limited one).
    """
    if result.status == "limited":
        dispatcher.utter_message(response="utter_handoff_limit")
        return
    if intro and result.status == "queued":
        dispatcher.utter_message(response=intro)
    if not result.agents_available:
        dispatcher.utter_message(
            response="utter_handoff_after_hours",
            hours=(hours or parse_agent_hours(None)).describe(),
        )
    elif result.status == "already_claimed":
        dispatcher.utter_message(response="utter_handoff_already_claimed")
    elif result.status == "already_queued":
        dispatcher.utter_message(
            response="utter_handoff_already_queued",
            position=result.position,
            wait=wait_phrase(result.expected_wait),
        )
    else:
        dispatcher.utter_message(
            response="utter_handoff_queued",
            position=result.position,
            wait=wait_phrase(result.expected_wait),
        )


async def hand_off(
    dispatcher: CollectingDispatcher,
    tracker: Tracker,
    *,
    reason: str,
    treatment: dict[str, Any] | None = None,
    intro: str | None = None,
    quiet_when_limited: bool = False,
    **slots: Any,
) -> tuple[HandoffResult, list[EventType]]:
    """Queue a handoff for ``reason``, tell the customer, return the slot events.

    ``quiet_when_limited``: a sender over its hourly limit hears nothing (the
    caller says something else). The events mark the conversation escalated
    (unless limited) and clear the offer (``human_offered``, ``handoff_reason``).
    """
    if treatment is None:
        treatment = await treatment_settings(verified_customer_id(tracker))
    packet = build_packet(tracker, reason=reason, treatment=treatment, **slots)
    weights, hours = queue_settings()
    result = await in_store(
        queue_handoff,
        tracker_key=tracker.sender_id,
        packet=packet,
        priority=int(treatment.get("handoff_priority_boost") or 0),
        recent_texts=packet.last_messages,
        sender_limit=get_settings().handoff_sender_limit,
        weights=weights,
        hours=hours,
    )
    if not (quiet_when_limited and result.status == "limited"):
        tell_customer(dispatcher, result, intro=intro, hours=hours)
    escalated = [] if result.status == "limited" else [SlotSet("escalated", True)]
    return result, [
        *escalated,
        SlotSet("human_offered", False),
        SlotSet("handoff_reason", None),
    ]


class ActionHandoff(Action):
    """Queue the conversation for a human agent and tell the customer."""

    def name(self) -> str:  # noqa: D102
        return "action_handoff"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        complaint = complaint_in(tracker)
        slot_reason = tracker.get_slot("handoff_reason")
        if slot_reason:
            reason = handoff_reason(slot_reason)
        else:
            reason = "complaint" if complaint else "customer_request"
        extra: dict[str, Any] = {}
        if complaint is not None:
            await record_complaint_quietly(tracker, complaint)
            extra["complaint"] = complaint.problem
        _, events = await hand_off(dispatcher, tracker, reason=reason, **extra)
        return [*events, *reset_task()]


def consecutive_fallbacks(
    tracker: Tracker, intents: tuple[str, ...] = FALLBACK_INTENTS
) -> int:
    """Count the latest user messages in a row whose intent is one of ``intents``."""
    count = 0
    for event in reversed(tracker.events):
        if event.get("event") != "user":
            continue
        intent = ((event.get("parse_data") or {}).get("intent") or {}).get("name")
        if intent not in intents:
            break
        count += 1
    return count


class ActionFallback(Action):
    """Ask to rephrase; offer a person, or hand off when not understood repeatedly.

    With N = the treatment's ``offer_human_after_fallbacks``: ``max(N, 2)``
    not-understood messages in a row queue a handoff (``low_confidence``);
    otherwise N misunderstood or out-of-scope messages in a row offer a person
    (``fallback``).
    """

    def name(self) -> str:  # noqa: D102
        return "action_fallback"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        customer_id = verified_customer_id(tracker)
        treatment = await treatment_settings(customer_id)
        limit = max(int(treatment.get("offer_human_after_fallbacks") or 2), 1)
        intent = (tracker.latest_message.get("intent") or {}).get("name")
        complaint = complaint_in(tracker)
        if complaint is not None:
            return await acknowledge_complaint(
                dispatcher, tracker, complaint, in_task=False
            )
        not_understood = consecutive_fallbacks(tracker, (LOW_CONFIDENCE_INTENT,))
        if not_understood >= max(limit, LOW_CONFIDENCE_HANDOFF_AFTER):
            result, events = await hand_off(
                dispatcher,
                tracker,
                reason="low_confidence",
                treatment=treatment,
                intro="utter_handoff_low_confidence",
                quiet_when_limited=True,
            )
            if result.status == "limited":
                dispatcher.utter_message(response="utter_ask_rephrase")
            return events
        if consecutive_fallbacks(tracker) >= limit:
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
