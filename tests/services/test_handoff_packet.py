"""The handoff packet's store side and its templated summary (seeded demo store)."""

from __future__ import annotations

import json
from dataclasses import asdict
from decimal import Decimal

import pytest
from sqlalchemy.orm import Session

from crm_store.models import CustomerScore, Handoff, Ticket
from crm_store.seeding import DEFAULT_AS_OF
from crm_store.services.handoff import (
    HandoffPacket,
    current_conversation_id,
    request_handoff,
)
from crm_store.services.handoff_packet import enrich_packet, packet_slots, summarize

NOW = DEFAULT_AS_OF


def packet(**fields: object) -> HandoffPacket:
    base: dict[str, object] = {
        "customer_id": None,
        "verified": False,
        "verification_method": None,
        "channel": "chat",
        "reason": "customer_request",
    }
    return HandoffPacket(**(base | fields))  # type: ignore[arg-type]


def test_summary_names_customer_task_complaint_verification_and_reason() -> None:
    text = summarize(
        reason="complaint",
        intents=["greet", "check_order_status", "complain"],
        slots={"order_number": "A10047", "complaint": "late_delivery"},
        actions=["action_greet", "verify_form", "action_order_status"],
        customer_name="Fenna de Vries",
        value_tier="gold",
        churn_band="high",
        verified=True,
        verification_method="order_postcode",
    )
    assert text == (
        "Customer Fenna de Vries (gold, churn risk high) asked about order A10047 "
        "(status), then complained about a late delivery; bot tried: order status; "
        "verified by order+postcode; hands off: complaint."
    )


def test_summary_of_an_unidentified_customer_not_understood_twice() -> None:
    text = summarize(
        reason="low_confidence",
        intents=["nlu_fallback", "nlu_fallback"],
        slots={},
        actions=[],
        customer_name=None,
    )
    assert text == (
        "An unidentified customer was not understood twice; not verified; "
        "hands off: bot did not understand."
    )
    # Nothing recognisable: still one sentence with the reason.
    assert (
        summarize(
            reason="made_up",
            intents=[None, "affirm"],
            slots={},
            actions=[],
            customer_name=None,
        )
        == "An unidentified customer contacted us; not verified; hands off: made_up."
    )


def test_a_complaint_found_in_another_intent_is_still_named() -> None:
    text = summarize(
        reason="business_rule",
        intents=["report_damage"],
        slots={"order_number": "A10002", "complaint": "damaged"},
        actions=["damage_form", "action_report_damage"],
        customer_name="Pavel Okafor",
        value_tier="platinum",
        verified=True,
        verification_method="identity:telegram",
    )
    assert text == (
        "Customer Pavel Okafor (platinum) reported a damaged item in order A10002, "
        "then complained about a damaged item; bot tried: damage report; verified "
        "by registered Telegram account; hands off: business rule."
    )


def test_summary_and_slots_never_carry_personal_values() -> None:
    slots = {
        "postcode": "5500 LE",
        "contact_value": "jane@example.com",
        "contact_code": "123456",
        "login_code": "654321",
        "damage_description": "my phone is +31612345678",
        "return_reason": "call me on +31612345678",
        "contact_field": "phone",
        "order_number": "my order is 10047",
        "ticket_number": "not a ticket",
        "complaint": "something else",
        "pending_task": "update_contact",
        "invalid_answers": 2.0,
        "verified": True,
    }
    assert packet_slots(slots) == {
        "pending_task": "update_contact",
        "order_number": "A10047",
        "contact_field": "phone",
        "invalid_answers": 2,
    }
    text = summarize(
        reason="form_stuck",
        intents=["update_contact"],
        slots=slots,
        actions=[],
        customer_name="Jane Doe",
    )
    assert text == (
        "Customer Jane Doe asked to change their phone number; not verified; "
        "hands off: stuck answering a question."
    )
    for personal in ("5500", "jane@", "123456", "654321", "+316"):
        assert personal not in text


def test_ticket_numbers_are_normalised_and_empty_slots_dropped() -> None:
    assert packet_slots({"ticket_number": "t-abc234", "order_number": None}) == {
        "ticket_number": "T-ABC234"
    }
    assert packet_slots({"invalid_answers": 0, "confirmed_order": ""}) == {}


def add_scores(session: Session, customer_id: str) -> None:
    session.add(
        CustomerScore(
            customer_id=customer_id,
            as_of=NOW,
            frequency=1,
            monetary=Decimal("52.95"),
            clv=Decimal("812.40"),
            value_tier="gold",
            churn_risk=0.71,
            churn_band="high",
            explanation={
                "top_churn_features": [
                    ["complaints", 0.8],
                    ["days since last purchase", 0.3],
                    ["total spend", -0.2],
                ]
            },
        )
    )


def add_ticket(session: Session, customer_id: str, number: str, status: str) -> None:
    session.add(
        Ticket(
            number=number,
            customer_id=customer_id,
            kind="general",
            subject=f"Question {number}",
            status=status,
            created_at=NOW,
            updated_at=NOW,
        )
    )


def test_enrich_packet_adds_what_the_store_knows(session: Session) -> None:
    add_scores(session, "C0001")
    add_ticket(session, "C0001", "T-PKT001", "open")
    add_ticket(session, "C0001", "T-PKT002", "resolved")
    session.flush()
    given = packet(
        customer_id="C0001",
        verified=True,
        verification_method="order_postcode",
        reason="complaint",
        last_intents=["check_order_status", "complain"],
        slots={"order_number": "A10001", "complaint": "late_delivery", "postcode": "x"},
        actions=["action_order_status"],
    )
    enriched = enrich_packet(session, given)
    assert enriched.customer_name == "Farah Dijkstra"
    kinds = {i["kind"]: i for i in enriched.identities}
    assert kinds["email"]["value"] == "f***@example.com"
    assert kinds["phone"]["value"].endswith("0001") and "*" in kinds["phone"]["value"]
    assert "farah.dijkstra1" not in json.dumps(asdict(enriched))
    assert enriched.clv == "812.40" and enriched.churn_risk == pytest.approx(0.71)
    assert enriched.churn_drivers == ["complaints", "days since last purchase"]
    assert (enriched.value_tier, enriched.churn_band) == ("gold", "high")
    assert enriched.open_orders == [
        {
            "order_id": "A10001",
            "status": "shipped",
            "placed_at": "2026-10-29T17:58:00",
            "total": "52.95 EUR",
        }
    ]
    numbers = [t["number"] for t in enriched.open_tickets]
    assert "T-PKT001" in numbers and "T-PKT002" not in numbers
    assert enriched.slots == {"order_number": "A10001", "complaint": "late_delivery"}
    assert enriched.summary == (
        "Customer Farah Dijkstra (gold, churn risk high) asked about order A10001 "
        "(status), then complained about a late delivery; bot tried: order status; "
        "verified by order+postcode; hands off: complaint."
    )


def test_delivered_cancelled_and_returned_orders_are_not_open(session: Session) -> None:
    enriched = enrich_packet(session, packet(customer_id="C0002"))
    statuses = {o["status"] for o in enriched.open_orders}
    assert statuses.isdisjoint({"delivered", "cancelled", "returned"})
    assert len(enriched.open_orders) <= 5


def test_packet_tier_wins_over_scores_and_a_given_summary_is_kept(
    session: Session,
) -> None:
    add_scores(session, "C0001")
    session.flush()
    enriched = enrich_packet(
        session,
        packet(customer_id="C0001", value_tier="platinum", summary="Agent note."),
    )
    assert (enriched.value_tier, enriched.churn_band) == ("platinum", "high")
    assert enriched.summary == "Agent note."


def test_anonymous_or_unknown_customer_gets_only_a_summary(session: Session) -> None:
    for customer_id in (None, "NO-SUCH-CUSTOMER"):
        enriched = enrich_packet(
            session, packet(customer_id=customer_id, last_intents=["request_human"])
        )
        assert enriched.customer_name is None
        assert enriched.identities == [] and enriched.open_orders == []
        assert enriched.summary == (
            "An unidentified customer asked for a person; not verified; "
            "hands off: customer request."
        )


def test_an_unscored_customer_has_no_scores(session: Session) -> None:
    enriched = enrich_packet(session, packet(customer_id="C0003"))
    assert enriched.customer_name == "Dario Peters"
    assert (enriched.clv, enriched.churn_risk, enriched.churn_drivers) == (
        None,
        None,
        [],
    )


def test_the_enriched_packet_is_stored_with_the_handoff(session: Session) -> None:
    add_scores(session, "C0001")
    key = "rest:svc-packet-1"
    conversation_id = current_conversation_id(
        session, tracker_key=key, channel="chat", at=NOW
    )
    enriched = enrich_packet(
        session,
        packet(
            customer_id="C0001",
            verified=True,
            verification_method="order_postcode",
            reason="low_confidence",
            last_intents=["nlu_fallback", "nlu_fallback"],
            tracker_key=key,
            conversation_id=conversation_id,
        ),
    )
    result = request_handoff(
        session, conversation_id=conversation_id, packet=enriched, at=NOW
    )
    stored = session.get(Handoff, result.handoff_id)
    assert stored.reason == "low_confidence"
    assert stored.packet["version"] == 2
    assert stored.packet["customer_name"] == "Farah Dijkstra"
    assert stored.packet["tracker_key"] == key
    assert stored.packet["conversation_id"] == conversation_id
    assert stored.packet["summary"].startswith("Customer Farah Dijkstra (gold")
    assert isinstance(stored.packet["open_orders"][0]["placed_at"], str)
    assert stored.created_at == NOW
