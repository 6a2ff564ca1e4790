"""Build rasa_sdk trackers and run actions on them (no servers)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from channels.identity_assertion import metadata_for
from channels.keys import rest_sender

SECRET = "actions-test-secret-0123456789abcdef"
DOMAIN: dict[str, Any] = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "domain" / "domain.yml").read_text(
        encoding="utf-8"
    )
)


def new_sender() -> str:
    return f"t-act-{uuid.uuid4().hex[:12]}"


def signed(sender: str, kind: str, value: str, secret: str = SECRET) -> dict:
    """Message metadata carrying a fresh signed identity for tracker ``sender``.

    Assertions are signed for the REST client's own sender id: ``rest:s1`` -> ``s1``.
    """
    return metadata_for(secret, rest_sender(sender) or sender, kind, value)


def verified(customer_id: str, method: str = "order_postcode", **slots: Any) -> dict:
    """Slots of a sender verified as ``customer_id`` just now (``verified_at``)."""
    return {
        "verified": True,
        "customer_id": customer_id,
        "verification_method": method,
        "verified_at": time.time(),
        **slots,
    }


def tracker(
    *,
    slots: dict[str, Any] | None = None,
    intent: str = "affirm",
    text: str = "",
    entities: list[dict] | None = None,
    metadata: dict | None = None,
    sender: str | None = None,
    history: list[dict] | None = None,
    candidates: dict[str, Any] | None = None,
    form: str | None = None,
) -> Tracker:
    """A tracker whose latest event is a user message (then form slot candidates).

    Args:
        candidates: slot values a form just extracted (what validators check).
        form: the active form's name.
    """
    parse = {
        "intent": {"name": intent, "confidence": 0.99},
        "entities": entities or [],
        "text": text,
        "metadata": metadata or {},
    }
    events = [
        *(history or []),
        {
            "event": "user",
            "text": text,
            "parse_data": parse,
            "input_channel": "rest",
            "metadata": metadata or {},
        },
        *(SlotSet(name, value) for name, value in (candidates or {}).items()),
    ]
    return Tracker(
        sender or new_sender(),
        {**(slots or {}), **(candidates or {})},
        parse,
        events,
        False,
        None,
        {"name": form} if form else {},
        "action_listen",
    )


def run(action: Action, tracker: Tracker) -> tuple[list[dict], list[dict]]:
    """Run the action's ``run()``; return its events and the dispatched messages."""
    dispatcher = CollectingDispatcher()
    events = asyncio.run(action.run(dispatcher, tracker, DOMAIN))
    return events, dispatcher.messages


def responses(messages: list[dict]) -> list[str]:
    """The response names of the dispatched messages, in order."""
    return [m["response"] for m in messages]


def slots_of(events: list[dict]) -> dict[str, Any]:
    """The slot values the events set (last one wins)."""
    return {e["name"]: e["value"] for e in events if e.get("event") == "slot"}


def user_event(intent: str, text: str = "x") -> dict:
    """A past user message with ``intent``."""
    return {"event": "user", "text": text, "parse_data": {"intent": {"name": intent}}}


def pick_order(factory: Any, *where: Any, offset: int = 0) -> tuple[str, str]:
    """Return ``(order id, customer id)`` of a fixture order matching ``where``."""
    from sqlalchemy import select

    from crm_store.models import Order

    with factory() as session:
        row = session.execute(
            select(Order.id, Order.customer_id)
            .where(*where)
            .order_by(Order.id)
            .offset(offset)
            .limit(1)
        ).first()
    assert row is not None, f"fixture has no order for {where}"
    return row.id, row.customer_id


def order_with_return(factory: Any, *, eligible: bool, reason: str | None = None):
    """Return a delivered order whose return eligibility matches, newest first."""
    from sqlalchemy import select

    from crm_store.models import Order
    from crm_store.services.returns import return_eligibility

    with factory() as session:
        orders = session.execute(
            select(Order)
            .where(Order.status == "delivered")
            .order_by(Order.delivered_at.desc(), Order.id)
        ).scalars()
        for order in orders:
            check = return_eligibility(session, order=order)
            if check.eligible == eligible and (
                reason is None or check.reason == reason
            ):
                return order.id, order.customer_id, check
    raise AssertionError(f"fixture has no delivered order with eligible={eligible}")
