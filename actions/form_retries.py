"""A form never asks the same question forever.

The first invalid answer gets the form's usual hint; the second an explanation
with an example; the third ends the form and offers a person or stopping. A
valid answer resets the count (slot ``invalid_answers``). An invalid answer
that is a complaint gets an apology and the offer of a person instead of the
hint.
"""

from __future__ import annotations

from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

from actions.common import TASK_SLOTS
from actions.complaints import acknowledge_complaint, complaint_in

MAX_INVALID_ANSWERS = 3
REJECTED_MARK = "_crm_answer_rejected"

# Slot (or answer kind) -> the response that explains it with an example.
EXPLANATIONS = {
    "order_number": "utter_explain_order_number",
    "postcode": "utter_explain_postcode",
    "ticket_number": "utter_explain_ticket_number",
    "email": "utter_explain_email",
    "phone": "utter_explain_phone",
    "contact_field": "utter_explain_contact_field",
    "description": "utter_explain_description",
}


def invalid_count(tracker: Tracker) -> int:
    """Invalid answers in a row to the current question (0 if none)."""
    value = tracker.get_slot("invalid_answers")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return max(int(value), 0)


def accepted(tracker: Tracker, values: dict[str, Any]) -> dict[str, Any]:
    """A valid answer: the slot values, and a reset of the invalid-answer count."""
    if invalid_count(tracker):
        return {**values, "invalid_answers": None}
    return values


async def reject_answer(
    dispatcher: CollectingDispatcher,
    tracker: Tracker,
    slot: str,
    hint: str,
    *,
    kind: str | None = None,
    hint_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Reject an answer to ``slot``: hint, then explain with an example, then give up.

    Args:
        dispatcher: where the hint, explanation or offer goes.
        tracker: the conversation (its ``invalid_answers`` count, latest text).
        slot: the form slot that stays empty.
        hint: the first-time response (e.g. ``utter_invalid_order_number``).
        kind: key of ``EXPLANATIONS`` when it is not ``slot``.
        hint_args: template values for ``hint``.

    Returns:
        The slot values for the validator to return. On the third invalid answer
        in a row they end the form: the task's slots are cleared (so no submit
        action runs) and a person is offered (``human_offered``).
    """
    if getattr(tracker, REJECTED_MARK, False):
        # One message, one invalid answer, one reply: a second slot it filled
        # wrongly (an entity the NLU mis-tagged) stays empty without a word.
        return {slot: None}
    setattr(tracker, REJECTED_MARK, True)
    count = invalid_count(tracker) + 1
    complaint = complaint_in(tracker)
    if count >= MAX_INVALID_ANSWERS:
        dispatcher.utter_message(response="utter_form_stuck")
        return {
            **{name: None for name in TASK_SLOTS},
            slot: None,
            "pending_task": None,
            "requested_slot": None,
            "invalid_answers": None,
            "human_offered": True,
            "handoff_reason": "complaint" if complaint else "form_stuck",
        }
    if complaint is not None:
        offer = "utter_complaint_person_now" if count > 1 else None
        events = await acknowledge_complaint(
            dispatcher, tracker, complaint, in_task=True, offer=offer
        )
        values = {e["name"]: e["value"] for e in events}
    elif count == 1:
        dispatcher.utter_message(response=hint, **(hint_args or {}))
        values = {}
    else:
        dispatcher.utter_message(response=EXPLANATIONS[kind or slot])
        values = {}
    return {**values, slot: None, "invalid_answers": float(count)}
