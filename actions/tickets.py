"""Ticket skills: damaged or faulty item, open a ticket, ticket status.

A damage report by a customer whose treatment lists ``damaged_item`` in
``hand_off_on`` (platinum in ``config/treatment.yml``) is also queued for a
person (reason ``business_rule``) once the ticket is open.
"""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.common import reset_task, task_done, treatment_settings, verified_task
from actions.form_retries import accepted, reject_answer
from actions.handoff import hand_off
from actions.store import in_store
from crm_store.errors import InvalidInput, NotFound
from crm_store.services.tickets import (
    NotReportable,
    normalize_ticket_number,
    open_ticket,
    report_damaged_item,
    ticket_status,
)

MIN_DESCRIPTION = 3
DAMAGE_EVENT = "damaged_item"


def _text_ok(value: Any) -> bool:
    return isinstance(value, str) and len(value.strip()) >= MIN_DESCRIPTION


async def _free_text(
    slot: str, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker
) -> dict[str, Any]:
    """Accept a description that says something, else ask for more detail."""
    if _text_ok(value):
        return accepted(tracker, {slot: value.strip()})
    return await reject_answer(
        dispatcher, tracker, slot, "utter_need_more_detail", kind="description"
    )


class ValidateTicketForms(FormValidationAction):
    """Free-text answers must say something."""

    def name(self) -> str:  # noqa: D102
        return "validate_ticket_form"

    async def validate_ticket_description(  # noqa: D102
        self,
        slot_value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> dict[str, Any]:
        return await _free_text("ticket_description", slot_value, dispatcher, tracker)


class ValidateDamageForm(FormValidationAction):
    """The damage description must say something."""

    def name(self) -> str:  # noqa: D102
        return "validate_damage_form"

    async def validate_damage_description(  # noqa: D102
        self,
        slot_value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> dict[str, Any]:
        return await _free_text("damage_description", slot_value, dispatcher, tracker)


class ValidateTicketStatusForm(FormValidationAction):
    """Ticket numbers look like T-ABC234."""

    def name(self) -> str:  # noqa: D102
        return "validate_ticket_status_form"

    async def validate_ticket_number(  # noqa: D102
        self,
        slot_value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> dict[str, Any]:
        for token in str(slot_value or "").replace(",", " ").split():
            try:
                number = normalize_ticket_number(token.strip(".?!"))
            except InvalidInput:
                continue
            return accepted(tracker, {"ticket_number": number})
        return await reject_answer(
            dispatcher, tracker, "ticket_number", "utter_invalid_ticket_number"
        )


class ActionReportDamage(Action):
    """Open a damage ticket; add the treatment's goodwill gesture and handoff.

    When the treatment hands off on ``damaged_item``, a person is queued after
    the ticket (reason ``business_rule``) and the customer hears their place in
    line instead of "anything else?".
    """

    def name(self) -> str:  # noqa: D102
        return "action_report_damage"

    @verified_task("order_number")
    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        number = tracker.get_slot("order_number")
        customer_id = tracker.get_slot("customer_id")
        try:
            ticket = await in_store(
                report_damaged_item,
                order_number=number,
                customer_id=customer_id,
                description=tracker.get_slot("damage_description") or "",
                conversation_id=tracker.sender_id,
            )
        except NotReportable as exc:
            dispatcher.utter_message(
                response=f"utter_damage_{exc.reason}", order=number
            )
            return reset_task()
        except NotFound:
            dispatcher.utter_message(response="utter_order_not_found", order=number)
            return reset_task()
        dispatcher.utter_message(
            response="utter_damage_reported", order=number, ticket=ticket.number
        )
        treatment = await treatment_settings(customer_id)
        goodwill = treatment.get("goodwill_on_damage")
        if goodwill:
            dispatcher.utter_message(
                response="utter_damage_goodwill", goodwill=goodwill
            )
        if DAMAGE_EVENT in (treatment.get("hand_off_on") or ()):
            result, events = await hand_off(
                dispatcher,
                tracker,
                reason="business_rule",
                treatment=treatment,
                intro="utter_handoff_business_rule",
                quiet_when_limited=True,
            )
            if result.status != "limited":
                return [*events, *reset_task(resolved=True)]
        return task_done(dispatcher)


class ActionOpenTicket(Action):
    """Open a general ticket with the customer's description."""

    def name(self) -> str:  # noqa: D102
        return "action_open_ticket"

    @verified_task("ticket_description")
    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        description = tracker.get_slot("ticket_description")
        subject = description.strip().splitlines()[0][:80]
        ticket = await in_store(
            open_ticket,
            customer_id=tracker.get_slot("customer_id"),
            subject=subject,
            description=description,
            conversation_id=tracker.sender_id,
        )
        dispatcher.utter_message(response="utter_ticket_opened", ticket=ticket.number)
        return task_done(dispatcher)


class ActionTicketStatus(Action):
    """Tell the owner the status of a ticket; others hear it does not exist."""

    def name(self) -> str:  # noqa: D102
        return "action_ticket_status"

    @verified_task("ticket_number")
    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        number = tracker.get_slot("ticket_number")
        try:
            status = await in_store(
                ticket_status,
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
        return task_done(dispatcher)
