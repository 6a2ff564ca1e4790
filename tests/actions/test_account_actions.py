"""Contact-detail change: form validators and the update (trackers, seeded store)."""

from __future__ import annotations

from action_support import responses, run, slots_of, tracker, verified
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from actions.account import ActionUpdateContact, ValidateContactUpdateForm
from actions.common import TASK_SLOTS
from crm_store.models import AuditLog, Customer


def assert_reset(events: list[dict], resolved: bool | None = None) -> None:
    slots = slots_of(events)
    assert all(slots[name] is None for name in TASK_SLOTS)
    assert slots.get("task_resolved") is resolved


def customer(store: sessionmaker, customer_id: str) -> Customer:
    with store() as session:
        return session.get(Customer, customer_id)


def validate(slots: dict, **candidates: object) -> tuple[dict, list[str]]:
    t = tracker(slots=slots, candidates=candidates, form="contact_update_form")
    events, messages = run(ValidateContactUpdateForm(), t)
    return slots_of(events), responses(messages)


def test_contact_form_understands_the_field(store) -> None:
    assert validate({}, contact_field="my mobile number") == (
        {"contact_field": "phone"},
        [],
    )
    assert validate({}, contact_field="email") == ({"contact_field": "email"}, [])
    assert validate({}, contact_field="my shoe size") == (
        {"contact_field": None},
        ["utter_ask_contact_field"],
    )


def test_contact_form_normalizes_or_rejects_the_value(store) -> None:
    slots, said = validate(
        {"contact_field": "phone"}, contact_field="phone", contact_value="06 1234 5678"
    )
    assert slots == {"contact_field": "phone", "contact_value": "+31612345678"}
    assert said == []
    slots, said = validate(
        {"contact_field": "email"},
        contact_field="email",
        contact_value="it is New.Me@Example.com.",
    )
    assert slots["contact_value"] == "new.me@example.com"
    slots, said = validate(
        {"contact_field": "email"}, contact_field="email", contact_value="not an email"
    )
    assert slots["contact_value"] is None
    assert said == ["utter_invalid_email"]


def test_update_contact_refuses_unverified_or_incomplete(store) -> None:
    before = customer(store, "C0001").email
    for slots in (
        {"customer_id": "C0001", "contact_field": "email", "contact_value": "a@b.nl"},
        verified("C0001", contact_field="email"),
    ):
        events, messages = run(ActionUpdateContact(), tracker(slots=slots))
        assert messages == []
        assert_reset(events)
    assert customer(store, "C0001").email == before


def test_update_email_of_verified_customer(store) -> None:
    t = tracker(
        slots=verified("C0001", contact_field="email", contact_value="new@example.com"),
        sender="s-upd",
    )
    events, messages = run(ActionUpdateContact(), t)
    assert responses(messages) == ["utter_contact_updated", "utter_anything_else"]
    assert messages[0]["field"] == "email address"
    assert "new@example.com" not in messages[0]["value"]  # masked
    assert_reset(events, resolved=True)
    assert customer(store, "C0001").email == "new@example.com"
    with store() as session:
        actors = session.execute(
            select(AuditLog.actor).where(AuditLog.entity_id == "C0001")
        ).scalars()
        assert "bot:s-upd" in set(actors)


def test_update_phone_needs_step_up_after_caller_id(store) -> None:
    before = customer(store, "C0001").phone
    t = tracker(
        slots=verified(
            "C0001",
            method="identity:phone",
            contact_field="phone",
            contact_value="+31612345678",
        )
    )
    events, messages = run(ActionUpdateContact(), t)
    assert responses(messages) == ["utter_contact_step_up"]
    slots = slots_of(events)
    assert slots["human_offered"] is True
    assert slots["handoff_reason"] == "step_up_required"
    assert_reset(events)
    assert customer(store, "C0001").phone == before


def test_update_to_an_email_someone_else_uses(store) -> None:
    taken = customer(store, "C0002").email
    t = tracker(slots=verified("C0001", contact_field="email", contact_value=taken))
    events, messages = run(ActionUpdateContact(), t)
    assert responses(messages) == ["utter_contact_in_use"]
    assert_reset(events)
    assert customer(store, "C0001").email != taken
