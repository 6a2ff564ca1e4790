"""Account skill: change the email address or phone number on file."""

from __future__ import annotations

import re
from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.common import reset_task, task_done, verified_task
from actions.store import in_store
from crm_store.errors import InvalidInput
from crm_store.services.contact_details import (
    IdentityInUse,
    StepUpRequired,
    change_requires_step_up,
    update_contact_detail,
)
from crm_store.services.normalize import mask, normalize_identity

EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
PHONE_RE = re.compile(r"\+?[\d][\d\s\-().]{6,}\d")


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

    def validate_contact_field(  # noqa: D102
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
        )
        if field is None:
            value = str(tracker.get_slot("contact_value") or "")
            field = "email" if "@" in value else None
        if field is None:
            dispatcher.utter_message(response="utter_ask_contact_field")
            return {"contact_field": None}
        return {"contact_field": field}

    def validate_contact_value(  # noqa: D102
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
            dispatcher.utter_message(response=f"utter_invalid_{field}")
            return {"contact_value": None}
        return {"contact_value": value, "contact_field": field}


class ActionUpdateContact(Action):
    """Store the new email or phone; caller-id-only senders need stronger proof."""

    def name(self) -> str:  # noqa: D102
        return "action_update_contact"

    @verified_task("contact_field", "contact_value")
    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        field = tracker.get_slot("contact_field")
        value = tracker.get_slot("contact_value")
        method = tracker.get_slot("verification_method")
        if change_requires_step_up(verification_method=method, field=field):
            dispatcher.utter_message(response="utter_contact_step_up")
            return [
                *reset_task(),
                SlotSet("human_offered", True),
                SlotSet("handoff_reason", "step_up_required"),
            ]
        try:
            await in_store(
                update_contact_detail,
                customer_id=tracker.get_slot("customer_id"),
                field=field,
                value=value,
                actor=f"bot:{tracker.sender_id}"[:64],
                verification_method=method,
            )
        except StepUpRequired:
            dispatcher.utter_message(response="utter_contact_step_up")
            return reset_task()
        except IdentityInUse:
            dispatcher.utter_message(response="utter_contact_in_use", field=field)
            return reset_task()
        except InvalidInput:
            dispatcher.utter_message(response=f"utter_invalid_{field}")
            return reset_task()
        label = "email address" if field == "email" else "phone number"
        dispatcher.utter_message(
            response="utter_contact_updated", field=label, value=mask(field, value)
        )
        return task_done(dispatcher)
