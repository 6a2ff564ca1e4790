"""Contact-detail change: form validators and the update (trackers, seeded store)."""

from __future__ import annotations

import re
import time

import pytest
from action_support import responses, run, slots_of, tracker, verified
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from actions.account import (
    ActionContactCodeResult,
    ActionUpdateContact,
    ValidateContactCodeForm,
    ValidateContactUpdateForm,
    parse_code,
)
from actions.common import TASK_SLOTS
from crm_store.models import AuditLog, Customer
from crm_store.services.identities import find_customer_by_identity
from crm_store.services.notifier import list_outbox


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
        {"contact_field": None, "invalid_answers": 1.0},
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


def outbox_code(store: sessionmaker, recipient: str) -> str:
    """The code in the latest message to ``recipient`` (read via the services)."""
    with store() as session:
        latest = list_outbox(
            session, recipient=recipient, purpose="contact_change_code"
        )[0]
    return re.search(r"\b(\d{6})\b", latest.body).group(1)


def type_code(slots: dict, text: str) -> tuple[dict, list[dict]]:
    t = tracker(
        slots=slots, candidates={"contact_code": text}, form="contact_code_form"
    )
    events, messages = run(ValidateContactCodeForm(), t)
    return slots_of(events), messages


def test_new_email_needs_the_code_sent_to_it(store) -> None:
    old = customer(store, "C0001").email
    slots = verified("C0001", contact_field="email", contact_value="new@example.com")
    events, messages = run(ActionUpdateContact(), tracker(slots=slots, sender="s-upd"))
    assert responses(messages) == [
        "utter_contact_code_sent",
        "utter_contact_old_notified",
    ]
    assert "new@example.com" not in messages[0]["value"]  # masked
    assert {"event": "followup", "name": "contact_code_form"} in [
        {k: e.get(k) for k in ("event", "name")} for e in events
    ]
    assert customer(store, "C0001").email == old
    with store() as session:
        assert (
            find_customer_by_identity(session, kind="email", value="new@example.com")
            is None
        )
        [notice] = list_outbox(session, recipient=old)
        assert notice.purpose == "contact_change_notice"

    code = outbox_code(store, "new@example.com")
    filled, messages = type_code(slots, f"the code is {code[:3]} {code[3:]}")
    assert filled == {"contact_code": "confirmed", "contact_value": "new@example.com"}
    events, messages = run(
        ActionContactCodeResult(),
        tracker(slots={**slots, **filled}, sender="s-upd"),
    )
    assert responses(messages) == ["utter_contact_updated", "utter_anything_else"]
    assert messages[0]["field"] == "email address"
    assert "new@example.com" not in messages[0]["value"]
    assert_reset(events, resolved=True)
    assert customer(store, "C0001").email == "new@example.com"
    with store() as session:
        match = find_customer_by_identity(
            session, kind="email", value="new@example.com"
        )
        assert match.customer_id == "C0001" and match.verified
        actors = session.execute(
            select(AuditLog.actor).where(AuditLog.entity_id == "C0001")
        ).scalars()
        assert "bot:s-upd" in set(actors)


def test_five_wrong_codes_abandon_the_change_and_offer_a_human(store) -> None:
    old = customer(store, "C0001").email
    slots = verified("C0001", contact_field="email", contact_value="new2@example.com")
    run(ActionUpdateContact(), tracker(slots=slots))
    code = outbox_code(store, "new2@example.com")
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    filled, messages = type_code(slots, "not a code")
    assert filled == {"contact_code": None}
    assert responses(messages) == ["utter_invalid_code"]
    for left in (4, 3, 2, 1):
        filled, messages = type_code(slots, wrong)
        assert filled == {"contact_code": None}
        assert responses(messages) == ["utter_code_wrong"]
        assert messages[0]["tries_left"] == left
    filled, _ = type_code(slots, wrong)
    assert filled == {"contact_code": "exhausted"}
    events, messages = run(
        ActionContactCodeResult(), tracker(slots={**slots, **filled})
    )
    assert responses(messages) == ["utter_code_exhausted"]
    assert slots_of(events)["human_offered"] is True
    assert_reset(events)
    # the right code is void now
    filled, _ = type_code(slots, code)
    assert filled == {"contact_code": "expired"}
    assert customer(store, "C0001").email == old


def test_code_form_needs_a_verified_sender(store) -> None:
    slots = verified("C0001", contact_field="email", contact_value="new3@example.com")
    run(ActionUpdateContact(), tracker(slots=slots))
    code = outbox_code(store, "new3@example.com")
    filled, _ = type_code({**slots, "verified": False}, code)
    assert filled == {"contact_code": "expired"}
    assert customer(store, "C0001").email != "new3@example.com"


def test_parse_code() -> None:
    assert parse_code("123456") == "123456"
    assert parse_code("code: 123-456.") == "123456"
    assert parse_code("12345") is None
    assert parse_code("1234567") is None
    assert parse_code("123456 or 654321") is None
    assert parse_code("１２３４５６") is None
    assert parse_code(123456) is None
    assert parse_code({"code": "123456"}) is None


@pytest.mark.parametrize(
    "slots",
    [
        verified("C0001", method="identity:phone"),
        verified("C0001", verified_at=time.time() - 16 * 60),
    ],
)
def test_contact_change_needs_a_strong_recent_verification(store, slots) -> None:
    before = customer(store, "C0001").phone
    t = tracker(
        slots={**slots, "contact_field": "phone", "contact_value": "+31612345678"}
    )
    events, messages = run(ActionUpdateContact(), t)
    assert responses(messages) == ["utter_step_up_expired"]
    assert slots_of(events)["verified"] is False
    assert_reset(events)
    assert customer(store, "C0001").phone == before
    with store() as session:
        assert list_outbox(session, recipient="+31612345678") == []


def test_update_to_an_email_someone_else_uses(store) -> None:
    taken = customer(store, "C0002").email
    t = tracker(slots=verified("C0001", contact_field="email", contact_value=taken))
    events, messages = run(ActionUpdateContact(), t)
    assert responses(messages) == ["utter_contact_in_use"]
    assert_reset(events)
    assert customer(store, "C0001").email != taken


def test_update_to_the_current_email(store) -> None:
    own = customer(store, "C0001").email
    t = tracker(slots=verified("C0001", contact_field="email", contact_value=own))
    events, messages = run(ActionUpdateContact(), t)
    assert responses(messages) == ["utter_contact_unchanged"]
    assert_reset(events)


def test_a_new_number_that_replied_stop_gets_no_code_and_the_customer_hears_why(
    store,
) -> None:
    from crm_store.services.consents import set_sms_consent

    new = "+31655577991"
    with store.begin() as session:
        set_sms_consent(session, phone=new, granted=False, source="sms_stop")
    slots = verified("C0002", contact_field="phone", contact_value=new)
    events, messages = run(ActionUpdateContact(), tracker(slots=slots, sender="s-stop"))
    [message] = messages
    assert "replied STOP" in message["text"] and "START" in message["text"]
    assert_reset(events)
    with store() as session:
        assert list_outbox(session, recipient=new) == []
