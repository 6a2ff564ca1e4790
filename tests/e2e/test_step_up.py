"""Step-up for changes against the real servers: codes, notices, re-verification.

Codes are read from the outbox through the store services, or from the mail the
e-mail worker handed to the test relay, as a customer reads them in their mailbox.
"""

from __future__ import annotations

import json
import re

import pytest
from dialogue_support import Chat, email_of, pick_order

from crm_store.models import Customer, Order
from crm_store.services.identities import find_customer_by_identity
from crm_store.services.notifier import list_outbox

pytestmark = pytest.mark.slow


def refresh(stack, model, key):
    with stack.factory() as session:
        row = session.get(model, key)
        session.expunge_all()
        return row


def outbox_to(stack, recipient: str, purpose: str) -> list:
    with stack.factory() as session:
        return list_outbox(session, recipient=recipient, purpose=purpose)


def code_sent_to(stack, recipient: str) -> str:
    [latest, *_] = outbox_to(stack, recipient, "contact_change_code")
    return re.search(r"\b(\d{6})\b", latest.body).group(1)


def identity(stack, kind: str, value: str):
    with stack.factory() as session:
        return find_customer_by_identity(session, kind=kind, value=value)


def start_email_change(stack, customer_id: str, new: str) -> tuple[Chat, str]:
    old = email_of(stack, customer_id)
    chat = Chat(stack, identity=("email", old))
    chat.say("I want to change my email address")
    reply = chat.say(new)
    assert "6-digit code" in reply and new not in reply
    return chat, old


def test_new_email_is_unverified_until_the_code_from_the_outbox(stack) -> None:
    new = "step.up.c0021@example.org"
    chat, old = start_email_change(stack, "C0021", new)
    # Not changed, not a verified identity; the old address was told.
    assert refresh(stack, Customer, "C0021").email == old
    pending = identity(stack, "email", new)
    assert pending is None or not pending.verified
    [notice] = outbox_to(stack, old, "contact_change_notice")
    assert "wasn't you" in notice.body and new not in notice.body
    # Both went out by mail through the relay (the notifier's e-mail sender).
    notice_mail = stack.relay.wait_for(old)[-1]
    assert "wasn't you" in notice_mail.text and new not in notice_mail.text
    assert notice_mail.message["Auto-Submitted"] == "auto-generated"
    code_mail = stack.relay.wait_for(new)[-1]
    code = re.search(r"\b(\d{6})\b", code_mail.text).group(1)
    assert code == code_sent_to(stack, new)
    stack.eventually(
        lambda: outbox_to(stack, new, "contact_change_code")[0].status == "sent"
    )
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    assert "4 more" in chat.say(wrong)
    done = chat.say(code)
    assert "Done" in done
    assert refresh(stack, Customer, "C0021").email == new
    confirmed = identity(stack, "email", new)
    assert confirmed.customer_id == "C0021" and confirmed.verified
    chat.assert_history()


def test_five_wrong_codes_abandon_the_change(stack) -> None:
    new = "step.up.c0022@example.org"
    chat, old = start_email_change(stack, "C0022", new)
    code = code_sent_to(stack, new)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for _ in range(4):
        assert "isn't right" in chat.say(wrong)
    last = chat.say(wrong)
    assert "wrong too often" in last and "human agent" in last
    assert chat.say("no thanks")  # decline the human
    chat.say(code)  # too late: the code is void
    assert refresh(stack, Customer, "C0022").email == old
    pending = identity(stack, "email", new)
    assert pending is None or not pending.verified
    chat.assert_history()


def test_cancel_after_caller_id_asks_for_order_and_postcode_first(stack) -> None:
    order = pick_order(
        stack, Order.status == "paid", Order.customer_id.in_(phone_owners(stack))
    )
    phone = refresh(stack, Customer, order.customer_id).phone
    chat = Chat(stack, identity=("phone", phone))
    first = chat.say(f"I want to cancel order {order.id}")
    assert "postcode" in first and "Shall I cancel" not in first
    assert refresh(stack, Order, order.id).status == "paid"
    summary = chat.say(order.customer.postcode)
    assert "Shall I cancel" in summary
    assert refresh(stack, Order, order.id).status == "paid"
    assert "cancelled" in chat.say("yes")
    assert refresh(stack, Order, order.id).status == "cancelled"
    chat.assert_history()


def test_confirmation_cannot_be_redirected_to_another_order(stack) -> None:
    mine = pick_order(stack, Order.status == "paid", offset=6)
    other = pick_order(stack, Order.status == "placed", offset=6)
    chat = Chat(stack, identity=("email", email_of(stack, mine.customer_id)))
    ask = chat.say(f"please cancel order {mine.id}")
    assert "Shall I cancel" in ask and mine.id in ask
    chat.say("/affirm" + json.dumps({"order_number": other.id}))
    assert refresh(stack, Order, other.id).status == "placed"
    chat.assert_history()


def phone_owners(stack) -> list[str]:
    """Customers with a verified phone identity (caller id would recognise them)."""
    from sqlalchemy import select

    from crm_store.models import ChannelIdentity

    with stack.factory() as session:
        return list(
            session.execute(
                select(ChannelIdentity.customer_id).where(
                    ChannelIdentity.kind == "phone", ChannelIdentity.verified
                )
            ).scalars()
        )
