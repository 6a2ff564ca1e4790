"""The handoff packet's store side: who the customer is, and a one-line summary.

The action server fills what the conversation knows (``HandoffPacket``: reason,
verification, intents, task slots, bot actions, last messages); ``enrich_packet``
adds what the store knows (name, masked identities, CLV, churn risk and drivers,
open orders and tickets) and, unless the packet has one, a summary.

``summarize`` is a template, not a model: it reads only intents, slots, actions
and the customer's name, tier and verification, so it never repeats what the
customer typed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.analytics.service import customer_scores
from crm_store.errors import InvalidInput
from crm_store.models import ChannelIdentity, Customer, Order, Ticket
from crm_store.services.complaints import PROBLEMS
from crm_store.services.handoff import HandoffPacket
from crm_store.services.normalize import mask
from crm_store.services.references import find_order_number
from crm_store.services.tickets import normalize_ticket_number

CLOSED_ORDER_STATUSES = ("delivered", "cancelled", "returned")
CLOSED_TICKET_STATUSES = ("resolved", "closed")
MAX_OPEN_ITEMS = 5
MAX_PHRASES = 6

# Task slots an agent may see. Postcodes, e-mail addresses, phone numbers,
# codes and free-text answers never enter the packet's slots.
PACKET_SLOTS = (
    "pending_task",
    "order_number",
    "confirmed_order",
    "login_order",
    "ticket_number",
    "contact_field",
    "complaint",
    "invalid_answers",
)
PENDING_TASKS = (
    "order_status",
    "list_orders",
    "cancel_order",
    "start_return",
    "report_damage",
    "update_contact",
    "open_ticket",
    "ticket_status",
    "show_contact",
)

ORDER_SLOTS = ("order_number", "confirmed_order", "login_order")
INTENT_PHRASES = {
    "check_order_status": "asked about {order} (status)",
    "list_orders": "asked for their recent orders",
    "cancel_order": "asked to cancel {order}",
    "start_return": "asked to return {order}",
    "report_damage": "reported a damaged item in {order}",
    "update_contact": "asked to change their {field}",
    "ask_contact_details": "asked which contact details we have",
    "open_ticket": "asked to open a ticket",
    "ticket_status": "asked about {ticket} (status)",
    "complain": "complained about {problem}",
    "request_human": "asked for a person",
    "request_login_code": "asked for a login code by e-mail",
    "faq": "asked a general question",
    "out_of_scope": "asked something the bot does not handle",
    "nlu_fallback": "was not understood",
    "bot_challenge": "asked whether they talk to a bot",
}
PROBLEM_PHRASES = {
    "late_delivery": "a late delivery",
    "lost_parcel": "a lost parcel",
    "damaged": "a damaged item",
    "wrong_item": "a wrong item",
    "refund": "a refund",
    "billing": "a billing problem",
    "no_response": "getting no response",
    "staff": "a member of staff",
    "bot": "the bot",
    "quality": "product quality",
    "general": "the service",
}
FIELD_PHRASES = {"email": "e-mail address", "phone": "phone number"}
# Bot actions that did a task (they ran; whether they succeeded is in the transcript).
TASK_ACTIONS = {
    "action_order_status": "order status",
    "action_list_orders": "order list",
    "action_cancel_order": "cancellation",
    "action_start_return": "return",
    "action_report_damage": "damage report",
    "action_open_ticket": "ticket",
    "action_ticket_status": "ticket status",
    "action_update_contact": "contact change",
    "action_show_contact": "contact details shown",
    "action_send_login_code": "login code",
}
METHOD_PHRASES = {
    "order_postcode": "order+postcode",
    "code:login": "a code to the registered e-mail",
    "identity:email": "registered e-mail",
    "identity:phone": "registered phone number",
    "identity:telegram": "registered Telegram account",
}
REASON_PHRASES = {
    "customer_request": "customer request",
    "low_confidence": "bot did not understand",
    "fallback": "bot could not help",
    "verification_failed": "verification failed",
    "step_up_required": "change needs a stronger check",
    "complaint": "complaint",
    "form_stuck": "stuck answering a question",
    "action_failure": "bot error",
    "business_rule": "business rule",
    "other": "other",
}


def packet_slots(slots: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the task slots an agent may see, each checked for its expected form.

    Only ``PACKET_SLOTS`` pass; empty values and values of the wrong form are
    dropped (an order number that is not one, an unknown problem), so nothing
    personal the customer typed into a slot reaches the packet.
    """
    kept: dict[str, Any] = {}
    for name in PACKET_SLOTS:
        value = slots.get(name)
        if value is None or value == "" or isinstance(value, bool):
            continue
        clean = _clean_slot(name, value)
        if clean is not None:
            kept[name] = clean
    return kept


def _clean_slot(name: str, value: Any) -> Any:
    if name in ORDER_SLOTS:
        return find_order_number(value) if isinstance(value, str) else None
    if name == "ticket_number":
        try:
            return normalize_ticket_number(str(value))
        except InvalidInput:
            return None
    if name == "pending_task":
        return value if value in PENDING_TASKS else None
    if name == "contact_field":
        return value if value in FIELD_PHRASES else None
    if name == "complaint":
        return value if value in PROBLEMS else None
    if name == "invalid_answers" and isinstance(value, (int, float)):
        return int(value) or None
    return None


def _times(count: int) -> str:
    return "twice" if count == 2 else f"{count} times"


def _activities(intents: Iterable[str | None], slots: Mapping[str, Any]) -> list[str]:
    order = next((slots[s] for s in ORDER_SLOTS if slots.get(s)), None)
    problem = slots.get("complaint")
    values = {
        "order": f"order {order}" if order else "an order",
        "ticket": f"ticket {slots['ticket_number']}"
        if slots.get("ticket_number")
        else "a ticket",
        "field": FIELD_PHRASES.get(slots.get("contact_field"), "contact details"),
        "problem": PROBLEM_PHRASES.get(problem, "the service"),
    }
    phrases: list[list[Any]] = []  # [phrase, count]
    for intent in intents:
        template = INTENT_PHRASES.get(intent or "")
        if template is None:
            continue
        phrase = template.format(**values)
        if phrases and phrases[-1][0] == phrase:
            phrases[-1][1] += 1
        else:
            phrases.append([phrase, 1])
    complained = any(intent == "complain" for intent in intents)
    if problem in PROBLEM_PHRASES and not complained:
        phrases.append([f"complained about {values['problem']}", 1])
    rendered = [p if n == 1 else f"{p} {_times(n)}" for p, n in phrases]
    return rendered[-MAX_PHRASES:]


def _who(name: str | None, value_tier: str | None, churn_band: str | None) -> str:
    churn = f"churn risk {churn_band}" if churn_band else None
    tags = [t for t in (value_tier, churn) if t]
    label = f" ({', '.join(tags)})" if tags else ""
    return f"Customer {name}{label}" if name else f"An unidentified customer{label}"


def _verification(verified: bool, method: str | None) -> str:
    if not verified:
        return "not verified"
    if not method:
        return "verified"
    if method in METHOD_PHRASES:
        return f"verified by {METHOD_PHRASES[method]}"
    return f"verified by {method.replace('identity:', 'registered ')}"


def summarize(
    *,
    reason: str,
    intents: Iterable[str | None],
    slots: Mapping[str, Any],
    actions: Iterable[str],
    customer_name: str | None,
    value_tier: str | None = None,
    churn_band: str | None = None,
    verified: bool = False,
    verification_method: str | None = None,
) -> str:
    """Build one templated line for the agent.

    For example::

        Customer Fenna de Vries (gold, churn risk high) asked about order A10047
        (status), then complained about a late delivery; verified by
        order+postcode; hands off: complaint.

    Built only from the intents (oldest first), the task slots (filtered by
    ``packet_slots``), the bot's actions and the customer's name, tier, churn
    band and verification; never from message texts.
    """
    clean = packet_slots(slots)
    activities = _activities(list(intents), clean)
    what = ", then ".join(activities) if activities else "contacted us"
    parts = [f"{_who(customer_name, value_tier, churn_band)} {what}"]
    tried: list[str] = []
    for action in actions:
        label = TASK_ACTIONS.get(action)
        if label and label not in tried:
            tried.append(label)
    if tried:
        parts.append(f"bot tried: {', '.join(tried)}")
    parts.append(_verification(verified, verification_method))
    parts.append(f"hands off: {REASON_PHRASES.get(reason, reason)}")
    return "; ".join(parts) + "."


def _identities(session: Session, customer_id: str) -> list[dict]:
    rows = session.execute(
        select(ChannelIdentity)
        .where(ChannelIdentity.customer_id == customer_id)
        .order_by(ChannelIdentity.kind, ChannelIdentity.value)
    ).scalars()
    return [
        {"kind": i.kind, "value": mask(i.kind, i.value), "verified": bool(i.verified)}
        for i in rows
    ]


def _open_orders(session: Session, customer_id: str) -> list[dict]:
    rows = session.execute(
        select(Order)
        .where(
            Order.customer_id == customer_id,
            Order.status.not_in(CLOSED_ORDER_STATUSES),
        )
        .order_by(Order.placed_at.desc(), Order.id.desc())
        .limit(MAX_OPEN_ITEMS)
    ).scalars()
    return [
        {
            "order_id": o.id,
            "status": o.status,
            "placed_at": o.placed_at.isoformat() if o.placed_at else None,
            "total": f"{o.total:.2f} {o.currency or 'EUR'}",
        }
        for o in rows
    ]


def _open_tickets(session: Session, customer_id: str) -> list[dict]:
    rows = session.execute(
        select(Ticket)
        .where(
            Ticket.customer_id == customer_id,
            Ticket.status.not_in(CLOSED_TICKET_STATUSES),
        )
        .order_by(Ticket.created_at.desc(), Ticket.id.desc())
        .limit(MAX_OPEN_ITEMS)
    ).scalars()
    return [
        {"number": t.number, "subject": t.subject, "status": t.status} for t in rows
    ]


def enrich_packet(session: Session, packet: HandoffPacket) -> HandoffPacket:
    """Return ``packet`` with what the store knows about its customer, and a summary.

    For a known ``customer_id``: display name, channel identities (values masked),
    CLV, churn risk and the features that raise it (``customer_scores``), value
    tier and churn band when the packet has none, and up to five open orders
    (not delivered, cancelled or returned) and open tickets, newest first.
    Slots are filtered again by ``packet_slots``. A packet without a summary
    gets one from ``summarize``. Reads only; an unknown customer adds nothing.
    """
    changes: dict[str, Any] = {"slots": packet_slots(packet.slots)}
    customer = session.get(Customer, packet.customer_id) if packet.customer_id else None
    if customer is not None:
        changes.update(
            customer_name=None if customer.erased_at else customer.display_name,
            identities=_identities(session, customer.id),
            open_orders=_open_orders(session, customer.id),
            open_tickets=_open_tickets(session, customer.id),
        )
        scores = customer_scores(session, customer_id=customer.id)
        if scores is not None:
            changes.update(
                clv=None if scores.clv is None else str(scores.clv),
                churn_risk=scores.churn_risk,
                churn_drivers=[
                    label for label, value in scores.top_churn_features if value > 0
                ],
                value_tier=packet.value_tier or scores.value_tier,
                churn_band=packet.churn_band or scores.churn_band,
            )
    enriched = replace(packet, **changes)
    if enriched.summary:
        return enriched
    return replace(
        enriched,
        summary=summarize(
            reason=enriched.reason,
            intents=enriched.last_intents,
            slots=enriched.slots,
            actions=enriched.actions,
            customer_name=enriched.customer_name,
            value_tier=enriched.value_tier,
            churn_band=enriched.churn_band,
            verified=enriched.verified,
            verification_method=enriched.verification_method,
        ),
    )
