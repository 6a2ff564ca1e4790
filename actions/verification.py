"""Who is the sender? Signed channel identity, or order number plus postcode."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict
from sqlalchemy.orm import Session

from actions.common import (
    ORDER_TASKS,
    expired_identity_events,
    fmt_date,
    fmt_money,
    identity_events,
    is_verified,
    reset_task,
    verified_customer_id,
    verified_events,
    verified_task,
)
from actions.complaints import acknowledge_complaint, complaint_in
from actions.details import detail_for_task
from actions.form_retries import accepted, reject_answer
from actions.store import in_store
from crm_settings import get_settings
from crm_store.errors import NotFound
from crm_store.services.customers import customer_first_name
from crm_store.services.order_changes import NotCancellable, check_cancellable
from crm_store.services.orders import get_order_for_customer, recent_order_summaries
from crm_store.services.references import find_order_number, find_postcode
from crm_store.services.returns import return_eligibility
from crm_store.services.tickets import NotReportable, check_damage_reportable
from crm_store.services.verification import (
    VerificationLimits,
    VerificationVerdict,
    attempt_postcode,
    check_order_number,
    client_key_for,
)

TICKET_RE = re.compile(r"\b([Tt]-[A-Za-z0-9]{6})\b")
POSTCODE_WORDS = re.compile(r"\b(post ?code|postal code|zip( code)?)\b", re.IGNORECASE)
TASK_INTENTS = {
    "check_order_status": "order_status",
    "list_orders": "list_orders",
    "cancel_order": "cancel_order",
    "start_return": "start_return",
    "report_damage": "report_damage",
    "update_contact": "update_contact",
    "open_ticket": "open_ticket",
    "ticket_status": "ticket_status",
    "ask_contact_details": "show_contact",
}


def given_postcode(text: str) -> str | None:
    """A postcode given along with other facts: Dutch form, or after "postcode".

    A bare 4-digit number in a sentence (a year, a price) is not taken.
    """
    postcode = find_postcode(text)
    if postcode and (" " in postcode or POSTCODE_WORDS.search(text)):
        return postcode
    return None


class ActionGreet(Action):
    """Greet, by first name when a signed channel identity verifies the sender."""

    def name(self) -> str:  # noqa: D102
        return "action_greet"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        events = expired_identity_events(tracker) + await identity_events(tracker)
        # The last customer_id event wins (an expired one is cleared first).
        ids = [e["value"] for e in events if e.get("name") == "customer_id"]
        customer_id = ids[-1] if ids else verified_customer_id(tracker)
        name = None
        if customer_id:
            name = await in_store(customer_first_name, customer_id=customer_id)
        if name:
            dispatcher.utter_message(response="utter_greet_known", name=name)
        else:
            dispatcher.utter_message(response="utter_greet")
        return events


class ActionStartTask(Action):
    """Remember the task, every fact given with it, and check a signed identity.

    An order number, ticket number or postcode in the message fills its slot,
    so the forms never ask for it again; an angry message gets an apology and
    the offer of a person first.
    """

    def name(self) -> str:  # noqa: D102
        return "action_start_task"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        intent = (tracker.latest_message.get("intent") or {}).get("name")
        task = TASK_INTENTS.get(intent)
        events: list[EventType] = [
            SlotSet("pending_task", task),
            SlotSet("task_ok", None),
        ]
        events += self._numbers_in_text(tracker)
        detail = detail_for_task(task, tracker.latest_message.get("text"))
        if detail is not None:
            events.append(SlotSet(*detail))
        events += expired_identity_events(tracker)
        events += await identity_events(tracker)
        verified = is_verified(tracker) or any(
            e.get("name") == "verified" and e.get("value") for e in events
        )
        complaint = complaint_in(tracker)
        if complaint is not None:
            events += await acknowledge_complaint(
                dispatcher, tracker, complaint, in_task=True
            )
        if not verified:
            dispatcher.utter_message(
                response="utter_need_verification_quietly"
                if complaint
                else "utter_need_verification"
            )
        return events

    @staticmethod
    def _numbers_in_text(tracker: Tracker) -> list[EventType]:
        """Order/ticket numbers the NLU missed, read from the raw text."""
        text = tracker.latest_message.get("text") or ""
        entities = {e.get("entity") for e in tracker.latest_message.get("entities", [])}
        events: list[EventType] = []
        order = find_order_number(text)
        if order and "order_number" not in entities:
            events.append(SlotSet("order_number", order))
        ticket = TICKET_RE.search(text)
        if ticket and "ticket_number" not in entities:
            events.append(SlotSet("ticket_number", ticket.group(1).upper()))
        postcode = given_postcode(text) if order else None
        if postcode:
            events.append(SlotSet("postcode", postcode))
        return events


def verification_limits() -> VerificationLimits:
    """The lock-out thresholds from the settings (``CRM_ORDER_LOCK_*`` etc.)."""
    settings = get_settings()
    return VerificationLimits(
        order_lock_failures=settings.order_lock_failures,
        customer_lock_failures=settings.customer_lock_failures,
        sender_limit=settings.verify_sender_limit,
        client_limit=settings.verify_client_limit,
        window_minutes=settings.order_lock_minutes,
    )


def client_key(tracker: Tracker) -> str | None:
    """The hashed client address of the latest message (``client_ip`` metadata)."""
    metadata = (tracker.latest_message or {}).get("metadata")
    if not isinstance(metadata, dict):
        return None
    return client_key_for(metadata.get("client_ip"))


PAUSED_RESPONSES = {
    "order_locked": "utter_verification_locked",
    "sender_limited": "utter_verification_limited",
    "client_limited": "utter_verification_limited",
}


class ValidateVerifyForm(FormValidationAction):
    """Order number + postcode from unverified senders, within the store's limits.

    Every postcode check is recorded in the store (``attempt_postcode``), so
    failures count per order, customer, sender and client across conversations.
    A locked order or a limited sender gets the same "checks are paused" answer
    whether the order exists or not, plus the offer of a person or of a code
    sent to the account's e-mail (``actions.login_code``). A locked
    *customer* is not announced (that would tell the order exists): the attempt
    is refused and answered like a wrong postcode.
    """

    def name(self) -> str:  # noqa: D102
        return "validate_verify_form"

    async def required_slots(  # noqa: D102
        self,
        domain_slots: list[str],
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> list[str]:
        if is_verified(tracker):
            needs_order = tracker.get_slot("pending_task") in ORDER_TASKS
            number = tracker.get_slot("order_number")
            if needs_order and (number is None or find_order_number(number) != number):
                # Missing, malformed or of the wrong type: (re)validate it.
                return ["order_number"]
            return []
        return ["order_number", "postcode"]

    async def extract_postcode(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        # "A10047 5500 LE" answers both questions at once: take the postcode too.
        if tracker.get_slot("postcode") or tracker.get_slot("requested_slot") != (
            "order_number"
        ):
            return {}
        text = (tracker.latest_message or {}).get("text") or ""
        postcode = given_postcode(text)
        return {"postcode": postcode} if postcode else {}

    @staticmethod
    def _asked(tracker: Tracker, slot: str) -> str | None:
        """The value in the whole answer to the question asked, if the entity missed it.

        The NLU may tag a stray number ("waited 2 weeks") as the entity; the
        customer's message answering the question still holds the real one.
        """
        if tracker.get_slot("requested_slot") != slot:
            return None
        text = (tracker.latest_message or {}).get("text") or ""
        if text.startswith("/"):
            return None
        find = find_order_number if slot == "order_number" else find_postcode
        return find(text)

    def _paused(
        self,
        dispatcher: CollectingDispatcher,
        verdict: VerificationVerdict,
        order: str,
    ) -> dict[str, Any]:
        """End the form, offering a person or a code by e-mail (``login_order``)."""
        dispatcher.utter_message(response=PAUSED_RESPONSES[verdict.reason])
        return {
            "order_number": None,
            "postcode": None,
            "requested_slot": None,
            "human_offered": True,
            "handoff_reason": "verification_failed",
            "login_order": order,
        }

    async def validate_order_number(  # noqa: D102
        self,
        slot_value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> dict[str, Any]:
        number = find_order_number(slot_value) or self._asked(tracker, "order_number")
        if number is None:
            return await reject_answer(
                dispatcher, tracker, "order_number", "utter_invalid_order_number"
            )
        if not is_verified(tracker):
            verdict = await in_store(
                check_order_number,
                order_id=number,
                sender_key=tracker.sender_id,
                client_key=client_key(tracker),
                limits=verification_limits(),
            )
            if not verdict.allowed:
                return self._paused(dispatcher, verdict, number)
            return accepted(tracker, {"order_number": number})
        try:
            await in_store(
                get_order_for_customer,
                order_number=number,
                customer_id=tracker.get_slot("customer_id"),
            )
        except NotFound:
            return await reject_answer(
                dispatcher,
                tracker,
                "order_number",
                "utter_order_not_found",
                hint_args={"order": number},
            )
        return accepted(tracker, {"order_number": number})

    async def validate_postcode(  # noqa: D102
        self,
        slot_value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> dict[str, Any]:
        if is_verified(tracker):
            return {"postcode": None}
        order = find_order_number(tracker.get_slot("order_number"))
        if order is None:
            return {"postcode": None}
        postcode = find_postcode(slot_value) or self._asked(tracker, "postcode")
        if postcode is None:
            return await reject_answer(
                dispatcher, tracker, "postcode", "utter_invalid_postcode"
            )
        check = await in_store(
            attempt_postcode,
            order_number=order,
            postcode=postcode,
            sender_key=tracker.sender_id,
            client_key=client_key(tracker),
            limits=verification_limits(),
        )
        if check.verified:
            dispatcher.utter_message(response="utter_verified")
            proof = verified_events(check.customer_id, "order_postcode")
            return accepted(
                tracker,
                {"postcode": postcode, **{e["name"]: e["value"] for e in proof}},
            )
        if check.verdict.reason in PAUSED_RESPONSES:
            return self._paused(dispatcher, check.verdict, order)
        if check.failures_left <= 0:
            return self._paused(
                dispatcher, VerificationVerdict(False, "order_locked"), order
            )
        dispatcher.utter_message(
            response="utter_verification_failed", attempts_left=check.failures_left
        )
        return {"postcode": None}


def task_not_ok() -> list[EventType]:
    """Events ending a task that cannot go ahead (``task_ok`` false)."""
    return [*reset_task(), SlotSet("task_ok", False)]


@dataclass(frozen=True)
class TaskCheck:
    """Whether an order task may go ahead, and what to tell the customer."""

    ok: bool
    response: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)


def check_order_task(
    session: Session, *, task: str, order_number: str, customer_id: str
) -> TaskCheck:
    """Check that ``task`` (one of ``ORDER_TASKS``) is possible for the order.

    Raises:
        NotFound: no such order, or it belongs to someone else.
    """
    order = get_order_for_customer(
        session, order_number=order_number, customer_id=customer_id
    )
    if task == "cancel_order":
        try:
            check_cancellable(order)
        except NotCancellable as exc:
            return TaskCheck(
                False, f"utter_cannot_cancel_{exc.status}", {"order": order.id}
            )
        return TaskCheck(
            True,
            "utter_cancel_summary",
            {
                "order": order.id,
                "status": order.status,
                "total": fmt_money(order.total, order.currency),
            },
        )
    if task == "start_return":
        eligibility = return_eligibility(session, order=order)
        facts = {
            "order": order.id,
            "window_days": eligibility.window_days,
            "deadline": fmt_date(eligibility.deadline),
        }
        if not eligibility.eligible:
            return TaskCheck(
                False,
                f"utter_return_{eligibility.reason}",
                {**facts, "rma": eligibility.rma_number or ""},
            )
        return TaskCheck(True, "utter_return_eligible", facts)
    try:
        check_damage_reportable(order)
    except NotReportable as exc:
        return TaskCheck(
            False,
            f"utter_damage_{exc.reason}",
            {"order": order.id, "deadline": fmt_date(exc.deadline)},
        )
    return TaskCheck(True)


class ActionCheckTask(Action):
    """After verification: check the pending task is possible, or explain why not."""

    def name(self) -> str:  # noqa: D102
        return "action_check_task"

    @verified_task("pending_task", refusal=task_not_ok)
    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        task = tracker.get_slot("pending_task")
        if task not in ORDER_TASKS:
            return [SlotSet("task_ok", True)]
        number = find_order_number(tracker.get_slot("order_number"))
        if number is None:
            dispatcher.utter_message(response="utter_invalid_order_number")
            return task_not_ok()
        try:
            check = await in_store(
                check_order_task,
                task=task,
                order_number=number,
                customer_id=tracker.get_slot("customer_id"),
            )
        except NotFound:
            dispatcher.utter_message(response="utter_order_not_found", order=number)
            return task_not_ok()
        if check.response:
            dispatcher.utter_message(response=check.response, **check.facts)
        if not check.ok:
            return task_not_ok()
        # The order checked is the order the change acts on (see
        # actions.orders.confirmed_order_refusal), even when the customer gave
        # the form's answer up front and no question pins it.
        return [SlotSet("task_ok", True), SlotSet("confirmed_order", number)]


def recent_orders_text(session: Session, customer_id: str, limit: int = 5) -> str:
    """Return ``A10001 (shipped), A10002 (delivered)`` for recent orders."""
    orders = recent_order_summaries(session, customer_id=customer_id, limit=limit)
    return ", ".join(f"{o.id} ({o.status})" for o in orders)


class ActionAskOrderNumber(Action):
    """Ask for the order number; verified customers see their recent orders."""

    def name(self) -> str:  # noqa: D102
        return "action_ask_order_number"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        if is_verified(tracker):
            recent = await in_store(recent_orders_text, tracker.get_slot("customer_id"))
            if recent:
                dispatcher.utter_message(
                    response="utter_ask_order_number_known", orders=recent
                )
                return []
        dispatcher.utter_message(response="utter_ask_order_number")
        return []
