"""Login codes to the registered e-mail, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput
from crm_store.models import ChannelIdentity, Customer, Order
from crm_store.services.login_codes import (
    OUTBOX_PURPOSE,
    check_login_code,
    registered_email,
    send_login_code,
)
from crm_store.services.notifier import list_outbox
from crm_store.services.one_time_codes import CODE_TTL, MAX_CODES_PER_HOUR, MAX_TRIES

T0 = dt.datetime(2026, 11, 20, 10, 0, 0)


def an_order(session: Session) -> Order:
    return session.execute(
        select(Order).join(Customer).where(Customer.email.isnot(None)).limit(1)
    ).scalar_one()


def login_mail(session: Session) -> list:
    return list_outbox(session, purpose=OUTBOX_PURPOSE)


def sent_code(session: Session, recipient: str) -> str:
    [latest, *_] = list_outbox(session, recipient=recipient, purpose=OUTBOX_PURPOSE)
    return re.search(r"\b(\d{6})\b", latest.body).group(1)


def check(session: Session, order: str, code: str, *, wrong_before=0, at=T0):
    return check_login_code(
        session,
        order_number=order,
        code=code,
        requested_at=T0,
        wrong_before=wrong_before,
        now=at,
    )


def test_code_goes_to_the_registered_email_and_verifies_its_owner(session) -> None:
    order = an_order(session)
    address = registered_email(session, order.customer)
    assert address
    assert send_login_code(session, order_number=order.id.lower(), now=T0)
    [mail] = login_mail(session)
    assert mail.recipient == address and mail.channel == "email"
    assert mail.customer_id == order.customer_id
    code = sent_code(session, address)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    assert check(session, order.id, wrong).tries_left == MAX_TRIES - 1
    result = check(session, order.id, code)
    assert (result.status, result.customer_id) == ("ok", order.customer_id)
    # Used up: typing it again is just wrong.
    assert check(session, order.id, code).status == "wrong"


def test_unknown_order_sends_nothing_and_every_code_is_wrong(session) -> None:
    for number in ("Z99999", "A1", "not an order", ""):
        assert send_login_code(session, order_number=number, now=T0) is False
    assert login_mail(session) == []
    result = check(session, "Z99999", "123456")
    assert (result.status, result.tries_left, result.customer_id) == (
        "wrong",
        MAX_TRIES - 1,
        None,
    )
    assert check(session, "Z99999", "123456", wrong_before=3).tries_left == 1
    assert check(session, "Z99999", "123456", wrong_before=4).status == "exhausted"
    late = T0 + CODE_TTL
    assert check(session, "Z99999", "123456", at=late).status == "expired"


def test_real_and_missing_codes_read_alike(session) -> None:
    order = an_order(session)
    send_login_code(session, order_number=order.id, now=T0)
    code = sent_code(session, registered_email(session, order.customer))
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for tries in range(MAX_TRIES - 1):
        real = check(session, order.id, wrong, wrong_before=tries)
        fake = check(session, "Z99999", wrong, wrong_before=tries)
        assert real == fake, tries
    assert check(session, order.id, wrong, wrong_before=4).status == "exhausted"
    assert check(session, "Z99999", wrong, wrong_before=4).status == "exhausted"
    assert check(session, order.id, code, wrong_before=5).status != "ok"


def test_expired_code_does_not_verify(session) -> None:
    order = an_order(session)
    send_login_code(session, order_number=order.id, now=T0)
    code = sent_code(session, registered_email(session, order.customer))
    assert check(session, order.id, code, at=T0 + CODE_TTL).status == "expired"


def test_customer_without_email_gets_nothing(session) -> None:
    order = an_order(session)
    order.customer.email = None
    for row in order.customer.identities:
        if row.kind == "email":
            row.verified = False
    session.flush()
    assert registered_email(session, order.customer) is None
    assert send_login_code(session, order_number=order.id, now=T0) is False
    assert login_mail(session) == []
    assert check(session, order.id, "123456").status == "wrong"


def test_verified_identity_is_used_when_the_email_field_differs(session) -> None:
    order = an_order(session)
    customer = order.customer
    session.add(
        ChannelIdentity(
            kind="email",
            value="registered.login@example.org",
            customer_id=customer.id,
            verified=True,
            created_at=T0,
        )
    )
    for row in customer.identities:
        if row.kind == "email" and row.value == customer.email:
            row.verified = False
    customer.email = "typed.later@example.org"
    session.flush()
    assert registered_email(session, customer) == "registered.login@example.org"


def test_codes_per_hour_are_capped(session) -> None:
    order = an_order(session)
    sent = [
        send_login_code(
            session, order_number=order.id, now=T0 + dt.timedelta(minutes=i)
        )
        for i in range(MAX_CODES_PER_HOUR + 1)
    ]
    assert sent == [True] * MAX_CODES_PER_HOUR + [False]
    assert len(login_mail(session)) == MAX_CODES_PER_HOUR


@pytest.mark.parametrize("code", ["12345", "1234567", "12 3456", 123456, None])
def test_malformed_codes_are_refused_without_a_try(session, code) -> None:
    with pytest.raises(InvalidInput):
        check(session, "A10001", code)
