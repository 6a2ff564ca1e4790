"""Proof by a code to the registered e-mail, when postcode checks are paused.

When the verify form pauses (order locked, sender limited) it remembers the
order in question (``login_order``) and offers a person or a code. Asking for
the code sends one to the e-mail address on that order's account, if there is
such an order and address; the answer is the same either way. The code typed
into ``login_code_form`` verifies the sender (method ``code:login``) and the
pending task goes on as after a postcode check.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.account import parse_code
from actions.common import is_verified, reset_task, verified_events
from actions.store import in_store
from crm_store.errors import InvalidInput
from crm_store.services.login_codes import METHOD, check_login_code, send_login_code
from crm_store.services.references import find_order_number

LOGIN_SLOTS = ("login_order", "login_code", "login_code_at", "login_code_tries")


def clear_login() -> list[EventType]:
    """Events forgetting the order in question and the code state."""
    return [SlotSet(slot, None) for slot in LOGIN_SLOTS]


def number(value: Any) -> float | None:
    """A float slot value, or None for anything else (booleans included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def store_time(epoch: float | None) -> dt.datetime | None:
    """Unix seconds as the store's naive UTC datetime."""
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).replace(tzinfo=None)


class ActionSendLoginCode(Action):
    """Send a login code for the paused order; answer the same whatever happened."""

    def name(self) -> str:  # noqa: D102
        return "action_send_login_code"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        order = find_order_number(tracker.get_slot("login_order"))
        if order is None or is_verified(tracker):
            dispatcher.utter_message(response="utter_login_code_unavailable")
            return []
        await in_store(send_login_code, order_number=order)
        dispatcher.utter_message(response="utter_login_code_sent")
        return [
            SlotSet("human_offered", False),
            SlotSet("handoff_reason", None),
            SlotSet("login_code", None),
            SlotSet("login_code_at", time.time()),
            SlotSet("login_code_tries", 0.0),
            FollowupAction("login_code_form"),
        ]


class ValidateLoginCodeForm(FormValidationAction):
    """The typed login code: checked, never stored.

    ``login_code`` ends up holding the outcome (``confirmed``, ``exhausted``,
    ``expired``), never the code; a wrong code empties it, so the form asks
    again. A right code sets the identity slots (``verified_events``).
    """

    def name(self) -> str:  # noqa: D102
        return "validate_login_code_form"

    async def validate_login_code(  # noqa: D102
        self,
        slot_value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> dict[str, Any]:
        order = find_order_number(tracker.get_slot("login_order"))
        if order is None:
            return {"login_code": "expired"}
        code = parse_code(slot_value)
        if code is None:
            dispatcher.utter_message(response="utter_invalid_code")
            return {"login_code": None}
        tries = int(number(tracker.get_slot("login_code_tries")) or 0)
        try:
            result = await in_store(
                check_login_code,
                order_number=order,
                code=code,
                requested_at=store_time(number(tracker.get_slot("login_code_at"))),
                wrong_before=tries,
            )
        except InvalidInput:
            dispatcher.utter_message(response="utter_invalid_code")
            return {"login_code": None}
        if result.status == "ok" and result.customer_id:
            proof = verified_events(result.customer_id, METHOD)
            return {"login_code": "confirmed", **{e["name"]: e["value"] for e in proof}}
        if result.status == "wrong":
            dispatcher.utter_message(
                response="utter_code_wrong", tries_left=result.tries_left
            )
            return {"login_code": None, "login_code_tries": float(tries + 1)}
        if result.status == "exhausted":
            return {"login_code": "exhausted"}
        return {"login_code": "expired"}


class ActionLoginCodeResult(Action):
    """After the code form: go on with the pending task, or offer a person."""

    def name(self) -> str:  # noqa: D102
        return "action_login_code_result"

    async def run(  # noqa: D102
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        order = find_order_number(tracker.get_slot("login_order"))
        if tracker.get_slot("login_code") == "confirmed" and is_verified(tracker):
            dispatcher.utter_message(response="utter_verified")
            # The order in question is the one the pending task is about.
            events: list[EventType] = [
                *clear_login(),
                SlotSet("order_number", order),
                SlotSet("postcode", None),
                SlotSet("task_ok", None),
            ]
            if tracker.get_slot("pending_task"):
                return [*events, FollowupAction("action_check_task")]
            dispatcher.utter_message(response="utter_anything_else")
            return events
        dispatcher.utter_message(response="utter_login_code_failed")
        return [
            *reset_task(),
            *clear_login(),
            SlotSet("human_offered", True),
            SlotSet("handoff_reason", "verification_failed"),
        ]
