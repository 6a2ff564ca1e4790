"""Returns, damage reports and tickets on trackers (seeded store)."""

from __future__ import annotations

from pathlib import Path

import pytest
from action_support import (
    order_with_return,
    pick_order,
    responses,
    run,
    slots_of,
    tracker,
    verified,
)
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from actions.common import TASK_SLOTS
from actions.returns import ActionStartReturn
from actions.tickets import (
    ActionOpenTicket,
    ActionReportDamage,
    ActionTicketStatus,
    ValidateDamageForm,
    ValidateTicketForms,
    ValidateTicketStatusForm,
)
from crm_settings import get_settings
from crm_store.models import Order, Ticket
from crm_store.services.tickets import open_ticket


def assert_reset(events: list[dict], resolved: bool | None = None) -> None:
    slots = slots_of(events)
    assert all(slots[name] is None for name in TASK_SLOTS)
    assert slots.get("task_resolved") is resolved


def tickets_of(store: sessionmaker, **where: object) -> list[Ticket]:
    with store() as session:
        return list(session.execute(select(Ticket).filter_by(**where)).scalars())


@pytest.mark.parametrize(
    ("action", "slots"),
    [
        (ActionStartReturn(), {"order_number": "A10002"}),
        (ActionReportDamage(), {"order_number": "A10002"}),
        (ActionOpenTicket(), {"ticket_description": "my parcel is wet"}),
        (ActionTicketStatus(), {"ticket_number": "T-ABC234"}),
    ],
)
def test_ticket_actions_refuse_unverified_sender(store, action, slots) -> None:
    before = len(tickets_of(store, customer_id="C0002"))
    events, messages = run(action, tracker(slots={"customer_id": "C0002", **slots}))
    assert messages == []
    assert_reset(events)
    assert len(tickets_of(store, customer_id="C0002")) == before


@pytest.mark.parametrize(
    "action", [ActionStartReturn(), ActionReportDamage(), ActionOpenTicket()]
)
def test_ticket_actions_refuse_missing_answers(store, action) -> None:
    events, messages = run(action, tracker(slots=verified("C0002")))
    assert messages == []
    assert_reset(events)


# --- returns ----------------------------------------------------------------------


def test_start_return_creates_an_rma(store) -> None:
    number, owner, _ = order_with_return(store, eligible=True)
    t = tracker(
        slots=verified(
            owner,
            order_number=number,
            confirmed_order=number,
            return_reason="too small",
        ),
        sender="s-ret",
    )
    events, messages = run(ActionStartReturn(), t)
    assert responses(messages) == ["utter_return_started", "utter_anything_else"]
    [ticket] = tickets_of(store, order_id=number, kind="return")
    assert messages[0]["rma"] == ticket.rma_number and ticket.rma_number
    assert_reset(events, resolved=True)
    events, messages = run(ActionStartReturn(), t)
    assert responses(messages) == ["utter_return_already_requested"]
    assert messages[0]["rma"] == ticket.rma_number
    assert_reset(events)


def test_start_return_refused_for_closed_window_or_other_owner(store) -> None:
    number, owner, eligibility = order_with_return(
        store, eligible=False, reason="window_closed"
    )
    events, messages = run(
        ActionStartReturn(),
        tracker(slots=verified(owner, order_number=number, confirmed_order=number)),
    )
    assert responses(messages) == ["utter_return_window_closed"]
    assert messages[0]["window_days"] == eligibility.window_days
    assert_reset(events)
    number, owner, _ = order_with_return(store, eligible=True)
    other = "C0001" if owner != "C0001" else "C0002"
    events, messages = run(
        ActionStartReturn(),
        tracker(slots=verified(other, order_number=number, confirmed_order=number)),
    )
    assert responses(messages) == ["utter_order_not_found"]
    assert tickets_of(store, order_id=number, kind="return") == []


# --- damage -----------------------------------------------------------------------


def test_report_damage_opens_a_ticket(store) -> None:
    number, owner, _ = order_with_return(store, eligible=True)
    t = tracker(
        slots=verified(owner, order_number=number, damage_description="cracked lid")
    )
    events, messages = run(ActionReportDamage(), t)
    assert responses(messages) == ["utter_damage_reported", "utter_anything_else"]
    [ticket] = tickets_of(store, order_id=number, kind="damage")
    assert messages[0]["ticket"] == ticket.number
    assert ticket.description == "cracked lid"
    assert_reset(events, resolved=True)


def test_report_damage_offers_goodwill_from_the_treatment_rules(
    store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "treatment.yml"
    rules.write_text(
        "default:\n  offer_human_after_fallbacks: 2\n"
        "  goodwill_on_damage: a test voucher\n  handoff_priority_boost: 0\n"
        "rules: []\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("CRM_TREATMENT_RULES", str(rules))
    get_settings.cache_clear()
    number, owner, _ = order_with_return(store, eligible=True)
    t = tracker(slots=verified(owner, order_number=number, damage_description="bent"))
    events, messages = run(ActionReportDamage(), t)
    assert responses(messages) == [
        "utter_damage_reported",
        "utter_damage_goodwill",
        "utter_anything_else",
    ]
    assert messages[1]["goodwill"] == "a test voucher"
    assert_reset(events, resolved=True)


def test_report_damage_refused_before_delivery_or_for_other_owner(store) -> None:
    shipped, owner = pick_order(store, Order.status == "shipped")
    events, messages = run(
        ActionReportDamage(),
        tracker(slots=verified(owner, order_number=shipped, damage_description="x!!")),
    )
    assert responses(messages) == ["utter_damage_not_delivered"]
    assert_reset(events)
    other = "C0001" if owner != "C0001" else "C0002"
    events, messages = run(
        ActionReportDamage(),
        tracker(slots=verified(other, order_number=shipped, damage_description="x!!")),
    )
    assert responses(messages) == ["utter_order_not_found"]
    assert tickets_of(store, order_id=shipped, kind="damage") == []


# --- tickets ----------------------------------------------------------------------


def test_open_ticket(store) -> None:
    t = tracker(
        slots=verified("C0002", ticket_description="Invoice is wrong\nplease fix"),
        sender="s-tic",
    )
    events, messages = run(ActionOpenTicket(), t)
    assert responses(messages) == ["utter_ticket_opened", "utter_anything_else"]
    [ticket] = tickets_of(store, number=messages[0]["ticket"])
    assert ticket.customer_id == "C0002"
    assert ticket.subject == "Invoice is wrong"
    assert_reset(events, resolved=True)


def test_ticket_status_for_the_owner_only(store) -> None:
    with store.begin() as session:
        number = open_ticket(
            session, customer_id="C0002", subject="Where is my refund?"
        ).number
    events, messages = run(
        ActionTicketStatus(), tracker(slots=verified("C0002", ticket_number=number))
    )
    assert responses(messages) == ["utter_ticket_status", "utter_anything_else"]
    assert messages[0]["ticket"] == number
    assert messages[0]["subject"] == "Where is my refund?"
    assert messages[0]["extra"] == ""
    assert_reset(events, resolved=True)
    for slots in (
        verified("C0001", ticket_number=number),
        verified("C0002", ticket_number="T-ZZZZZZ"),
    ):
        events, messages = run(ActionTicketStatus(), tracker(slots=slots))
        assert responses(messages) == ["utter_ticket_not_found"]
        assert "subject" not in messages[0]
        assert_reset(events)


@pytest.mark.parametrize(
    ("form", "slot", "name"),
    [
        (ValidateTicketForms(), "ticket_description", "ticket_form"),
        (ValidateDamageForm(), "damage_description", "damage_form"),
    ],
)
def test_descriptions_must_say_something(store, form, slot, name) -> None:
    events, messages = run(form, tracker(candidates={slot: "  it broke  "}, form=name))
    assert slots_of(events) == {slot: "it broke"}
    assert messages == []
    events, messages = run(form, tracker(candidates={slot: " ok "}, form=name))
    assert slots_of(events) == {slot: None, "invalid_answers": 1.0}
    assert responses(messages) == ["utter_need_more_detail"]


def test_ticket_number_form(store) -> None:
    form = ValidateTicketStatusForm()
    events, messages = run(
        form,
        tracker(
            candidates={"ticket_number": "it's t-abc234."}, form="ticket_status_form"
        ),
    )
    assert slots_of(events) == {"ticket_number": "T-ABC234"}
    assert messages == []
    events, messages = run(
        form,
        tracker(candidates={"ticket_number": "no idea"}, form="ticket_status_form"),
    )
    assert slots_of(events) == {"ticket_number": None, "invalid_answers": 1.0}
    assert responses(messages) == ["utter_invalid_ticket_number"]
