"""Ticket skills: damaged or faulty item, open a ticket, ticket status."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.common import is_verified, reset_task, treatment_settings
from actions.store import transaction
from crm_store.services.errors import InvalidInput, NotFound
from crm_store.services.tickets import (
    NotReportable,
    normalize_ticket_number,
    open_ticket,
    report_damaged_item,
    ticket_status,
)

MIN_DESCRIPTION = 3


def _text_ok(value: Any) -> bool:
    return isinstance(value, str) and len(value.strip()) >= MIN_DESCRIPTION


def _free_text(
    slot: str, value: Any, dispatcher: CollectingDispatcher
) -> dict[str, Any]:
    """Accept a description that says something, else ask for more detail."""
    if _text_ok(value):
        return {slot: value.strip()}
    dispatcher.utter_message(response="utter_need_more_detail")
    return {slot: None}


class ValidateTicketForms(FormValidationAction):
    """Free-text answers must say something."""

    def name(self) -> str:  # noqa: D102
        return "validate_ticket_form"

    def validate_ticket_description(  # noqa: D102
        self,
        slot_value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> dict[str, Any]:
        return _free_text("ticket_description", slot_value, dispatcher)


class ValidateDamageForm(FormValidationAction):
    """The damage description must say something."""

    def name(self) -> str:  # noqa: D102
        return "validate_damage_form"

    def validate_damage_description(  # noqa: D102
        self,
        slot_value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> dict[str, Any]:
        return _free_text("damage_description", slot_value, dispatcher)


class ValidateTicketStatusForm(FormValidationAction):
    """Ticket numbers look like T-ABC234."""

    def name(self) -> str:  # noqa: D102
        return "validate_ticket_status_form"

    def validate_ticket_number(  # noqa: D102
        self,
        slot_value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> dict[str, Any]:
        for token in str(slot_value or "").replace(",", " ").split():
            try:
                return {"ticket_number": normalize_ticket_number(token.strip(".?!"))}
            except InvalidInput:
                continue
        dispatcher.utter_message(response="utter_invalid_ticket_number")
        return {"ticket_number": None}


class ActionReportDamage(Action):
    """Open a damage ticket; mention a goodwill gesture if the treatment has one."""

    def name(self) -> str:  # noqa: D102
        return "action_report_damage"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        number = tracker.get_slot("order_number")
        customer_id = tracker.get_slot("customer_id")
        if not is_verified(tracker) or not number:
            return reset_task()
        try:
            with transaction() as session:
                ticket = report_damaged_item(
                    session,
                    order_number=number,
                    customer_id=customer_id,
                    description=tracker.get_slot("damage_description") or "",
                    conversation_id=tracker.sender_id,
                )
                ticket_number = ticket.number
        except NotReportable as exc:
            dispatcher.utter_message(
                response=f"utter_damage_{exc.reason}", order=number
            )
            return reset_task()
        except NotFound:
            dispatcher.utter_message(response="utter_order_not_found", order=number)
            return reset_task()
        dispatcher.utter_message(
            response="utter_damage_reported", order=number, ticket=ticket_number
        )
        goodwill = treatment_settings(customer_id).get("goodwill_on_damage")
        if goodwill:
            dispatcher.utter_message(
                response="utter_damage_goodwill", goodwill=goodwill
            )
        dispatcher.utter_message(response="utter_anything_else")
        return reset_task(resolved=True)


class ActionOpenTicket(Action):
    """Open a general ticket with the customer's description."""

    def name(self) -> str:  # noqa: D102
        return "action_open_ticket"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        description = tracker.get_slot("ticket_description")
        if not is_verified(tracker) or not description:
            return reset_task()
        subject = description.strip().splitlines()[0][:80]
        with transaction() as session:
            ticket = open_ticket(
                session,
                customer_id=tracker.get_slot("customer_id"),
                subject=subject,
                description=description,
                conversation_id=tracker.sender_id,
            )
            number = ticket.number
        dispatcher.utter_message(response="utter_ticket_opened", ticket=number)
        dispatcher.utter_message(response="utter_anything_else")
        return reset_task(resolved=True)


class ActionTicketStatus(Action):
    """Tell the owner the status of a ticket; others hear it does not exist."""

    def name(self) -> str:  # noqa: D102
        return "action_ticket_status"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        number = tracker.get_slot("ticket_number")
        if not is_verified(tracker) or not number:
            return reset_task()
        try:
            with transaction() as session:
                status = ticket_status(
                    session,
                    ticket_number=number,
                    customer_id=tracker.get_slot("customer_id"),
                )
        except (NotFound, InvalidInput):
            dispatcher.utter_message(response="utter_ticket_not_found", ticket=number)
            return reset_task()
        extra = f" Return number: {status.rma_number}." if status.rma_number else ""
        dispatcher.utter_message(
            response="utter_ticket_status",
            ticket=status.number,
            subject=status.subject,
            status=status.status.replace("_", " "),
            extra=extra,
        )
        dispatcher.utter_message(response="utter_anything_else")
        return reset_task(resolved=True)
