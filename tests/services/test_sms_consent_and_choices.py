"""SMS opt-outs (STOP/START) and numbered choices on text-only channels."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput
from crm_store.models import Consent, Customer
from crm_store.services import choices
from crm_store.services.consents import set_sms_consent, sms_allowed
from crm_store.services.contact_details import (
    RecipientOptedOut,
    request_contact_change,
)
from crm_store.services.notifier import list_outbox

NOW = dt.datetime(2026, 11, 20, 10, 0, 0)
EPOCH = NOW.replace(tzinfo=dt.timezone.utc).timestamp()
BUTTONS = [{"title": "Yes", "payload": "/affirm"}, {"title": "No", "payload": "/deny"}]


def change_phone(session: Session, customer_id: str, value: str):
    return request_contact_change(
        session,
        customer_id=customer_id,
        field="phone",
        value=value,
        actor="bot:test",
        verification_method="order_postcode",
        verified_at=EPOCH - 60,
        step_up_minutes=15,
        now=NOW,
    )


def test_stop_and_start_of_a_known_number(session: Session) -> None:
    phone = session.get(Customer, "C0003").phone
    assert sms_allowed(session, phone=phone)
    assert set_sms_consent(session, phone=phone, granted=False, source="sms_stop") == (
        "C0003"
    )
    assert not sms_allowed(session, phone=phone)
    set_sms_consent(session, phone=phone, granted=True, source="sms_start")
    assert sms_allowed(session, phone=phone)
    [row] = session.execute(
        select(Consent).where(Consent.customer_id == "C0003", Consent.kind == "sms")
    ).scalars()
    assert row.granted and row.source == "sms_start"


def test_stop_from_an_unknown_number_makes_a_prospect_that_stays_opted_out(
    session: Session,
) -> None:
    phone = "+31655512345"
    assert sms_allowed(session, phone=phone)
    prospect = set_sms_consent(session, phone=phone, granted=False, source="sms_stop")
    assert session.get(Customer, prospect).is_prospect
    assert not sms_allowed(session, phone="+31 6 5551 2345")
    with pytest.raises(InvalidInput):
        sms_allowed(session, phone="not a number")


def test_no_code_goes_to_a_new_number_that_replied_stop(session: Session) -> None:
    new = "+31655577001"
    set_sms_consent(session, phone=new, granted=False, source="sms_stop")
    with pytest.raises(RecipientOptedOut):
        change_phone(session, "C0008", new)
    assert list_outbox(session, recipient=new) == []


def test_the_notice_for_an_opted_out_old_number_goes_by_mail(
    session: Session,
) -> None:
    customer = session.get(Customer, "C0009")
    set_sms_consent(session, phone=customer.phone, granted=False, source="sms_stop")
    change_phone(session, "C0009", "+31655577002")
    assert list_outbox(session, recipient=customer.phone) == []
    [notice] = list_outbox(session, recipient=customer.email)
    assert notice.channel == "email" and notice.purpose == "contact_change_notice"
    [code] = list_outbox(session, recipient="+31655577002")
    assert code.channel == "sms"


def test_a_number_answers_the_choice_offered_last(session: Session) -> None:
    key = "sms:+31655577003"
    assert (
        choices.remember_choices(session, tracker_key=key, buttons=BUTTONS) == BUTTONS
    )
    assert choices.choice_payload(session, tracker_key=key, text=" 2. ") == "/deny"
    assert choices.choice_payload(session, tracker_key=key, text="#1") == "/affirm"
    for text in ("3", "0", "two", "2 please", ""):
        assert choices.choice_payload(session, tracker_key=key, text=text) is None
    # New buttons replace the old ones; none forget them.
    choices.remember_choices(
        session, tracker_key=key, buttons=[{"title": "Cancel", "payload": "/stop"}]
    )
    assert choices.choice_payload(session, tracker_key=key, text="1") == "/stop"
    assert choices.choice_payload(session, tracker_key=key, text="2") is None
    choices.remember_choices(session, tracker_key=key, buttons=None)
    assert choices.choice_payload(session, tracker_key=key, text="1") is None
    # Another key has its own choices.
    assert (
        choices.choice_payload(session, tracker_key="sms:+31655577004", text="1")
        is None
    )


def test_numbered_lines_skip_unusable_buttons() -> None:
    buttons = [
        *BUTTONS,
        {"title": "x"},
        "nope",
        {"title": "Later", "payload": "/later"},
    ]
    assert choices.numbered(buttons) == "1. Yes\n2. No\n3. Later"
    assert choices.numbered(None) == ""
