"""Account skill: change the email address or phone number on file; step-up.

A change needs a strong, recent verification (``action_step_up`` asks for the
order number and postcode again when the sender only has caller id or an old
proof). The new address gets a one-time code and only becomes the customer's
once that code is typed (``contact_code_form``); the old address gets a notice.
"""

from __future__ import annotations

import re
from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.common import (
    has_recent_strong_verification,
    identity_events,
    is_verified,
    reset_task,
    step_up_refusal,
    task_done,
    verified_customer_id,
    verified_task,
)
from actions.form_retries import accepted, reject_answer
from actions.store import in_store
from crm_settings import get_settings
from crm_store.errors import InvalidInput
from crm_store.services.contact_details import (
    STRONG_METHODS,
    IdentityInUse,
    RecipientOptedOut,
    SameAsCurrent,
    StepUpRequired,
    confirm_contact_change,
    request_contact_change,
)
from crm_store.services.normalize import mask, normalize_identity
from crm_store.services.one_time_codes import TooManyCodes

# Tasks that change something: they need a strong, recent verification.
CHANGE_TASKS = ("cancel_order", "start_return", "update_contact")
CODE_RE = re.compile(r"(?<![0-9])([0-9]{3})[ -]?([0-9]{3})(?![0-9])")
LABELS = {"email": "email address", "phone": "phone number"}
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
PHONE_RE = re.compile(r"\+?[\d][\d\s\-().]{6,}\d")


def opted_out_text() -> str:
    """Why no code goes to a number that replied STOP, and how to undo it."""
    ours = get_settings().twilio_from_number
    where = f"to {ours} " if ours else ""
    return (
        "That number has opted out of our text messages (it replied STOP), so I "
        "can't send it a code. Text START "
        f"{where}from that phone to receive texts again, then ask me once more."
    )


def field_from_text(value: Any) -> str | None:
    """Return ``email`` or ``phone`` from an answer like "my mobile number"."""
    text = str(value or "").lower()
    if "mail" in text:
        return "email"
    if any(w in text for w in ("phone", "mobile", "number", "cell", "tel")):
        return "phone"
    return None


def phone_candidate(text: str) -> str:
    """Return a phone number in international form; Dutch ``06...`` becomes +316..."""
    raw = re.sub(r"[\s\-().]", "", text)
    if raw.startswith("00"):
        return "+" + raw[2:]
    if raw.startswith("0"):
        return "+31" + raw[1:]
    return raw


class ValidateContactUpdateForm(FormValidationAction):
    """Which detail (email/phone) and the new, well-formed value."""

    def name(self) -> str:  # noqa: D102
        return "validate_contact_update_form"

    async def validate_contact_field(  # noqa: D102
        self,
        slot_value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> dict[str, Any]:
        field = (
            slot_value
            if slot_value in ("email", "phone")
            else field_from_text(slot_value)
            # A mis-tagged entity ("my phone is 12" -> "12"): read the message.
            or field_from_text((tracker.latest_message or {}).get("text"))
        )
        if field is None:
            # The answer may be the new address itself ("new.me@example.org").
            value = str(tracker.get_slot("contact_value") or "")
            text = str((tracker.latest_message or {}).get("text") or "")
            if "@" in value or EMAIL_RE.search(text):
                field = "email"
            elif PHONE_RE.search(text):
                field = "phone"
            if field is not None and not value:
                # Take the address too, so the form does not ask for it again.
                tracker.slots["contact_field"] = field
                found = await self.validate_contact_value(
                    text, dispatcher, tracker, domain
                )
                if found.get("contact_value"):
                    return accepted(tracker, {**found, "contact_field": field})
        if field is None:
            return await reject_answer(
                dispatcher, tracker, "contact_field", "utter_ask_contact_field"
            )
        return accepted(tracker, {"contact_field": field})

    async def validate_contact_value(  # noqa: D102
        self,
        slot_value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> dict[str, Any]:
        text = str(slot_value or "")
        field = tracker.get_slot("contact_field") or (
            "email" if "@" in text else "phone"
        )
        try:
            if field == "email":
                match = EMAIL_RE.search(text)
                value = normalize_identity(
                    "email", match.group(0).strip(".,;") if match else text
                )
            else:
                match = PHONE_RE.search(text)
                value = normalize_identity(
                    "phone", phone_candidate(match.group(0) if match else text)
                )
        except InvalidInput:
            return await reject_answer(
                dispatcher,
                tracker,
                "contact_value",
                f"utter_invalid_{field}",
                kind=field,
            )
        return accepted(tracker, {"contact_value": value, "contact_field": field})


class ActionStepUp(Action):
    """Before a change task: make sure the proof is strong and recent, else re-ask.

    Runs right after ``action_start_task``. A fresh signed identity in this very
    message (not a phone line) counts as a new proof; otherwise the sender's
    verification is cleared (``verified`` false, ``customer_id`` kept), so the
    verify form that follows asks for the order number and postcode again.
    """

    def name(self) -> str:  # noqa: D102
        return "action_step_up"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        events: list[EventType] = [
            SlotSet("confirmed_order", None),
            SlotSet("contact_code", None),
        ]
        if tracker.get_slot("pending_task") not in CHANGE_TASKS:
            return events
        if not is_verified(tracker) or has_recent_strong_verification(tracker):
            return events
        renewed = await self._identity_in_message(tracker)
        if renewed:
            return events + renewed
        dispatcher.utter_message(response="utter_step_up")
        return [
            *events,
            SlotSet("verified", False),
            SlotSet("verified_at", None),
            SlotSet("verification_method", None),
        ]

    @staticmethod
    async def _identity_in_message(tracker: Tracker) -> list[EventType]:
        """Verification events from a strong signed identity in this message."""
        unverified = tracker.copy()
        unverified.slots["verified"] = False
        unverified.slots["verified_at"] = None
        try:
            events = await identity_events(unverified)
        except Exception:  # noqa: BLE001 - no new proof; fall back to asking
            return []
        methods = [
            e.get("value") for e in events if e.get("name") == "verification_method"
        ]
        return events if methods and methods[-1] in STRONG_METHODS else []


class ActionUpdateContact(Action):
    """Send a code to the new address (and a notice to the old); then ask for it."""

    def name(self) -> str:  # noqa: D102
        return "action_update_contact"

    @verified_task("contact_field", "contact_value")
    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        field = tracker.get_slot("contact_field")
        if not has_recent_strong_verification(tracker):
            dispatcher.utter_message(response="utter_step_up_expired")
            return step_up_refusal()
        try:
            pending = await in_store(
                request_contact_change,
                customer_id=tracker.get_slot("customer_id"),
                field=field,
                value=tracker.get_slot("contact_value"),
                actor=f"bot:{tracker.sender_id}"[:64],
                verification_method=tracker.get_slot("verification_method"),
                verified_at=tracker.get_slot("verified_at"),
                step_up_minutes=get_settings().step_up_minutes,
            )
        except StepUpRequired:
            dispatcher.utter_message(response="utter_step_up_expired")
            return step_up_refusal()
        except SameAsCurrent:
            dispatcher.utter_message(
                response="utter_contact_unchanged", field=LABELS[field]
            )
            return reset_task()
        except IdentityInUse:
            dispatcher.utter_message(response="utter_contact_in_use", field=field)
            return reset_task()
        except RecipientOptedOut:
            dispatcher.utter_message(text=opted_out_text())
            return reset_task()
        except TooManyCodes:
            dispatcher.utter_message(response="utter_code_too_many")
            return [
                *reset_task(),
                SlotSet("human_offered", True),
                SlotSet("handoff_reason", "code_limit"),
            ]
        except InvalidInput:
            dispatcher.utter_message(response=f"utter_invalid_{field}")
            return reset_task()
        dispatcher.utter_message(
            response="utter_contact_code_sent",
            field=LABELS[field],
            value=pending.masked_value,
        )
        if pending.notified_old:
            dispatcher.utter_message(
                response="utter_contact_old_notified", field=LABELS[field]
            )
        return [SlotSet("contact_code", None), FollowupAction("contact_code_form")]


def parse_code(value: Any) -> str | None:
    """Return the 6 digits of a typed code (``123456``, ``123 456``), else None."""
    if not isinstance(value, str):
        return None
    matches = CODE_RE.findall(value)
    return "".join(matches[0]) if len(matches) == 1 else None


class ValidateContactCodeForm(FormValidationAction):
    """The code typed for a pending contact change: checked, never stored.

    ``contact_code`` ends up holding the outcome (``confirmed``, ``exhausted``,
    ``expired``, ``in_use``), never the code; a wrong code empties it, so the
    form asks again.
    """

    def name(self) -> str:  # noqa: D102
        return "validate_contact_code_form"

    async def validate_contact_code(  # noqa: D102
        self,
        slot_value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> dict[str, Any]:
        customer_id = verified_customer_id(tracker)
        field = tracker.get_slot("contact_field")
        if customer_id is None or field not in LABELS:
            return {"contact_code": "expired"}
        code = parse_code(slot_value)
        if code is None:
            dispatcher.utter_message(response="utter_invalid_code")
            return {"contact_code": None}
        try:
            result = await in_store(
                confirm_contact_change,
                customer_id=customer_id,
                field=field,
                code=code,
                actor=f"bot:{tracker.sender_id}"[:64],
            )
        except IdentityInUse:
            return {"contact_code": "in_use"}
        except InvalidInput:
            dispatcher.utter_message(response="utter_invalid_code")
            return {"contact_code": None}
        if result.status == "wrong":
            dispatcher.utter_message(
                response="utter_code_wrong", tries_left=result.tries_left
            )
            return {"contact_code": None}
        if result.status == "ok":
            return {"contact_code": "confirmed", "contact_value": result.value}
        if result.status == "exhausted":
            return {"contact_code": "exhausted"}
        return {"contact_code": "expired"}


class ActionContactCodeResult(Action):
    """Tell the customer how the code check ended (the code form has finished)."""

    def name(self) -> str:  # noqa: D102
        return "action_contact_code_result"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        outcome = tracker.get_slot("contact_code")
        field = tracker.get_slot("contact_field")
        value = tracker.get_slot("contact_value")
        if outcome == "confirmed" and field in LABELS and value:
            dispatcher.utter_message(
                response="utter_contact_updated",
                field=LABELS[field],
                value=mask(field, value),
            )
            return task_done(dispatcher)
        if outcome == "exhausted":
            dispatcher.utter_message(response="utter_code_exhausted")
            return [
                *reset_task(),
                SlotSet("human_offered", True),
                SlotSet("handoff_reason", "code_exhausted"),
            ]
        if outcome == "in_use":
            dispatcher.utter_message(response="utter_contact_in_use", field=field)
            return reset_task()
        dispatcher.utter_message(response="utter_code_expired")
        return reset_task()
