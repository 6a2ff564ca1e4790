"""Helpers shared by the actions: identity, channel, task state, treatment."""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.store import in_store
from channels.identity_assertion import verified_identity
from channels.names import channel_for
from crm_settings import get_settings
from crm_store.analytics.treatment import treatment_for_customer
from crm_store.errors import InvalidInput
from crm_store.services.identities import find_customer_by_identity

logger = logging.getLogger(__name__)

# ``pending_task`` and ``task_ok`` stay set after a task: the rules that ran it
# still match while the bot waits for the next message; action_start_task
# overwrites them.
TASK_SLOTS = (
    "order_number",
    "postcode",
    "confirm_cancel",
    "return_reason",
    "damage_description",
    "ticket_description",
    "ticket_number",
    "contact_field",
    "contact_value",
)
# Tasks that act on one order; the customer must name it.
ORDER_TASKS = ("cancel_order", "start_return", "report_damage")


def channel_of(tracker: Tracker) -> str:
    """Return the contact-history channel of the conversation."""
    return channel_for(tracker.get_latest_input_channel() or "rest")


def is_verified(tracker: Tracker) -> bool:
    """Tell whether the sender is a verified customer."""
    return bool(tracker.get_slot("verified")) and bool(tracker.get_slot("customer_id"))


def verified_customer_id(tracker: Tracker) -> str | None:
    """Return the customer id of a verified sender, else None."""
    return tracker.get_slot("customer_id") if is_verified(tracker) else None


def identity_secret() -> str | None:
    """Return the secret that signs channel identities (``CRM_IDENTITY_SECRET``)."""
    secret = get_settings().identity_secret
    return secret.get_secret_value() if secret is not None else None


async def identity_events(tracker: Tracker) -> list[EventType]:
    """Verify the sender from a signed, registered identity in the message metadata.

    Returns the slot events that mark the customer verified, or nothing when the
    sender is verified already or the claim is missing, forged or unregistered.
    """
    if is_verified(tracker):
        return []
    metadata = (tracker.latest_message or {}).get("metadata") or {}
    claim = verified_identity(identity_secret(), tracker.sender_id, metadata)
    if claim is None:
        return []
    kind, value = claim
    try:
        match = await in_store(find_customer_by_identity, kind=kind, value=value)
    except InvalidInput:
        return []
    if match is None or not match.verified or match.is_prospect:
        return []
    return [
        SlotSet("customer_id", match.customer_id),
        SlotSet("verified", True),
        SlotSet("verification_method", f"identity:{kind}"),
    ]


def reset_task(*, resolved: bool | None = None) -> list[EventType]:
    """Return events clearing the task slots (and optionally marking it resolved)."""
    events: list[EventType] = [SlotSet(slot, None) for slot in TASK_SLOTS]
    if resolved is not None:
        events.append(SlotSet("task_resolved", resolved))
    return events


TREATMENT_DEFAULTS: dict[str, Any] = {
    "offer_human_after_fallbacks": 2,
    "goodwill_on_damage": None,
    "handoff_priority_boost": 0,
    "value_tier": None,
    "churn_band": None,
}


async def treatment_settings(customer_id: str | None) -> dict[str, Any]:
    """Return the analytics treatment for a customer, or safe defaults.

    The rules file is ``CRM_TREATMENT_RULES`` (default ``config/treatment.yml``).
    Falls back to ``TREATMENT_DEFAULTS`` when the rules or the score lookup fail,
    so a scoring problem never breaks a conversation.
    """
    try:
        treatment = await in_store(
            treatment_for_customer,
            customer_id=customer_id,
            rules_path=get_settings().treatment_rules,
        )
    except Exception:  # noqa: BLE001 - analytics must never break the dialogue
        logger.warning("treatment lookup failed", exc_info=True)
        return dict(TREATMENT_DEFAULTS)
    return {
        key: getattr(treatment, key, value) for key, value in TREATMENT_DEFAULTS.items()
    }


RunMethod = Callable[
    [Any, CollectingDispatcher, Tracker, DomainDict], Awaitable[list[EventType]]
]


def verified_task(
    *required_slots: str, refusal: Callable[[], list[EventType]] = reset_task
) -> Callable[[RunMethod], RunMethod]:
    """Guard an action's ``run()``: only verified senders with the slots filled.

    When the sender is not verified or a required slot is empty, the action says
    nothing and returns ``refusal()`` (by default ``reset_task()``: the task ends).

    Args:
        required_slots: slots that must hold a value for the task to run.
        refusal: builds the events returned instead of running the task.
    """

    def decorate(run: RunMethod) -> RunMethod:
        @functools.wraps(run)
        async def guarded(
            self: Any,
            dispatcher: CollectingDispatcher,
            tracker: Tracker,
            domain: DomainDict,
        ) -> list[EventType]:
            if not is_verified(tracker) or not all(
                tracker.get_slot(slot) for slot in required_slots
            ):
                return refusal()
            return await run(self, dispatcher, tracker, domain)

        return guarded

    return decorate


def task_done(dispatcher: CollectingDispatcher) -> list[EventType]:
    """End a task that succeeded: ask "anything else?" and mark it resolved."""
    dispatcher.utter_message(response="utter_anything_else")
    return reset_task(resolved=True)


def fmt_date(value: dt.datetime | dt.date | None) -> str:
    """Render a date for customers: ``Mon 2 Nov 2026``."""
    if value is None:
        return "unknown"
    return f"{value:%a} {value.day} {value:%b %Y}"


def fmt_money(amount: Any, currency: str = "EUR") -> str:
    """Render money for customers: ``52.95 EUR``."""
    return f"{amount:.2f} {currency}"


def recent_user_turns(tracker: Tracker, limit: int = 5) -> tuple[list[str], list[str]]:
    """Return the last ``limit`` user intents and texts, oldest first."""
    intents: list[str] = []
    texts: list[str] = []
    for event in reversed(tracker.events):
        if event.get("event") != "user":
            continue
        intents.append(
            ((event.get("parse_data") or {}).get("intent") or {}).get("name")
        )
        texts.append(event.get("text") or "")
        if len(intents) >= limit:
            break
    return [i for i in reversed(intents) if i], list(reversed(texts))
