"""Helpers shared by the actions: identity, channel, task state, treatment."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict
from sqlalchemy.orm import Session

from actions.store import in_store
from channels.identity_assertion import Assertion, verify_assertion
from channels.keys import channel_identity
from channels.names import channel_for
from crm_settings import get_settings
from crm_store.analytics.treatment import treatment_for_customer
from crm_store.errors import InvalidInput
from crm_store.services.contact_details import recent_strong_verification
from crm_store.services.identities import find_customer_by_identity
from crm_store.services.nonces import consume_nonce

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
    "contact_code",
    "confirmed_order",
)
# Tasks that act on one order; the customer must name it.
ORDER_TASKS = ("cancel_order", "start_return", "report_damage")


def channel_of(tracker: Tracker) -> str:
    """Return the contact-history channel of the conversation."""
    return channel_for(tracker.get_latest_input_channel() or "rest")


# Set only by our actions (``mappings: [type: custom]``), reset at every session
# start (``session_config.carry_over_slots_to_new_session: false``).
IDENTITY_SLOTS = ("customer_id", "verified", "verified_at", "verification_method")


def verified_events(
    customer_id: str, method: str, *, now: float | None = None
) -> list[EventType]:
    """Slot events marking the sender verified as ``customer_id`` by ``method``.

    ``verified_at`` (unix seconds, UTC) is the time of this proof; it is never
    refreshed, so step-up checks can tell how old the proof is.
    """
    return [
        SlotSet("customer_id", customer_id),
        SlotSet("verified", True),
        SlotSet("verified_at", float(time.time() if now is None else now)),
        SlotSet("verification_method", method),
    ]


def last_activity(tracker: Tracker) -> float | None:
    """Return when the sender was last active before the current message.

    That is the later of ``verified_at`` and the previous user message's
    timestamp (the current message, the last user event, does not count), or
    None without a usable ``verified_at``.
    """
    verified_at = tracker.get_slot("verified_at")
    if isinstance(verified_at, bool) or not isinstance(verified_at, (int, float)):
        return None
    latest = float(verified_at)
    users = [e for e in tracker.events if e.get("event") == "user"]
    for event in users[:-1]:
        stamp = event.get("timestamp")
        if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
            latest = max(latest, float(stamp))
    return latest


def verification_expired(tracker: Tracker, *, now: float | None = None) -> bool:
    """Tell whether the sender was idle longer than ``CRM_VERIFICATION_IDLE_MINUTES``.

    Idle time is measured from ``last_activity`` to ``now``; a verification
    without ``verified_at`` counts as expired.
    """
    since = last_activity(tracker)
    if since is None:
        return True
    idle = get_settings().verification_idle_minutes * 60
    return (time.time() if now is None else now) - since > idle


def is_verified(tracker: Tracker, *, now: float | None = None) -> bool:
    """Tell whether the sender is a verified customer whose proof has not expired."""
    return (
        tracker.get_slot("verified") is True
        and bool(tracker.get_slot("customer_id"))
        and not verification_expired(tracker, now=now)
    )


def expired_identity_events(tracker: Tracker) -> list[EventType]:
    """Clear the identity slots of a verification that expired (else nothing)."""
    if tracker.get_slot("verified") is not True or is_verified(tracker):
        return []
    return [
        SlotSet("customer_id", None),
        SlotSet("verified", False),
        SlotSet("verified_at", None),
        SlotSet("verification_method", None),
    ]


def verified_customer_id(tracker: Tracker) -> str | None:
    """Return the customer id of a verified sender, else None."""
    return tracker.get_slot("customer_id") if is_verified(tracker) else None


def identity_secret() -> str | None:
    """Return the secret that signs channel identities (``CRM_IDENTITY_SECRET``)."""
    secret = get_settings().identity_secret
    return secret.get_secret_value() if secret is not None else None


def redeem_assertion(session: Session, *, assertion: Assertion) -> Any:
    """Consume the assertion's nonce, then look up its identity (one transaction).

    Returns the identity match, or None when the nonce was used already (replay).
    """
    if not consume_nonce(
        session, nonce=assertion.nonce, expires_at=assertion.expires_at
    ):
        return None
    return find_customer_by_identity(
        session, kind=assertion.kind, value=assertion.value
    )


# Channel identities that prove who writes: Telegram authenticates its users
# (and the webhook secret proves the update came from Telegram); a registered
# phone number (SMS, voice; the Twilio signature proves Twilio sent it) verifies
# as ``identity:phone``, which is enough to be told things but never for changes
# (``contact_details.CALLER_ID_METHODS``: caller id can be spoofed or the phone
# borrowed, so changes ask for order number and postcode or a code). An e-mail
# From is only identified (no SPF/DKIM checked here): those senders verify by
# order number and postcode like anyone else.
VERIFYING_CHANNEL_KINDS = ("telegram", "phone")


async def channel_identity_events(tracker: Tracker) -> list[EventType]:
    """Verify a sender whose channel vouches for a registered identity.

    A ``telegram:<user id>`` tracker whose user id is registered (verified, not
    a prospect) on a customer is that customer (method ``identity:telegram``);
    an ``sms:``/``voice:`` tracker of a registered number likewise
    (``identity:phone``, too weak for changes). Returns nothing for any other
    key, an unknown id or a prospect.
    """
    identity = channel_identity(tracker.sender_id or "")
    if identity is None or identity[0] not in VERIFYING_CHANNEL_KINDS:
        return []
    kind, value = identity
    try:
        match = await in_store(find_customer_by_identity, kind=kind, value=value)
    except InvalidInput:
        return []
    if match is None or not match.verified or match.is_prospect:
        return []
    return verified_events(match.customer_id, f"identity:{kind}")


async def identity_events(tracker: Tracker) -> list[EventType]:
    """Verify the sender from its channel identity or a signed assertion.

    First the channel's own identity (``channel_identity_events``). Else the
    assertion (``channels.identity_assertion``, v2) must be valid now for
    this REST tracker and its nonce unused; it is consumed here. Returns the
    slot events that mark the customer verified (``verified_events``), or
    nothing when the sender is verified already or the claim is missing, forged,
    expired, replayed or unregistered.
    """
    if is_verified(tracker):
        return []
    by_channel = await channel_identity_events(tracker)
    if by_channel:
        return by_channel
    metadata = (tracker.latest_message or {}).get("metadata") or {}
    assertion = verify_assertion(
        identity_secret(),
        tracker.sender_id,
        metadata,
        max_ttl=get_settings().identity_assertion_ttl_seconds,
    )
    if assertion is None:
        return []
    try:
        match = await in_store(redeem_assertion, assertion=assertion)
    except InvalidInput:
        return []
    if match is None or not match.verified or match.is_prospect:
        return []
    return verified_events(match.customer_id, f"identity:{assertion.kind}")


def has_recent_strong_verification(
    tracker: Tracker, minutes: float | None = None
) -> bool:
    """Tell whether the sender may make changes (contact details, cancel, return).

    Needs order number + postcode or a registered non-phone channel identity
    (``STRONG_METHODS``), verified within ``minutes`` (default
    ``CRM_STEP_UP_MINUTES``) according to the ``verified_at`` slot.
    """
    if not is_verified(tracker):
        return False
    if minutes is None:
        minutes = get_settings().step_up_minutes
    return recent_strong_verification(
        method=tracker.get_slot("verification_method"),
        verified_at=tracker.get_slot("verified_at"),
        max_age_minutes=minutes,
        now=time.time(),
    )


def step_up_refusal() -> list[EventType]:
    """Events ending a change whose verification is too weak or too old.

    The task ends and the sender is no longer verified, so the next task asks
    for the order number and postcode again.
    """
    return [*reset_task(), SlotSet("verified", False), SlotSet("verified_at", None)]


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
    "hand_off_on": (),
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


# Rasa's own bookkeeping actions: not worth an agent's attention.
INTERNAL_ACTIONS = frozenset(
    {
        "action_listen",
        "action_session_start",
        "action_extract_slots",
        "action_deactivate_loop",
        "action_unlikely_intent",
        "action_restart",
        "action_back",
    }
)


def recent_actions(tracker: Tracker, limit: int = 10) -> list[str]:
    """Return the names of the bot's last ``limit`` actions, oldest first.

    Rasa's bookkeeping actions (``INTERNAL_ACTIONS``) are left out.
    """
    names: list[str] = []
    for event in reversed(tracker.events):
        if event.get("event") != "action":
            continue
        name = event.get("name")
        if not name or name in INTERNAL_ACTIONS:
            continue
        names.append(name)
        if len(names) >= limit:
            break
    return list(reversed(names))
