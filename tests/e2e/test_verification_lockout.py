"""Postcode guessing from fresh sender ids locks the order in the store (real stack).

Each sender id is new, so nothing lives in a conversation that could be reset:
the failures are counted per order in the store. The orders used belong to
customers with a single order, so the customer lock this causes touches no
other test's orders.
"""

from __future__ import annotations

import re

import pytest
from dialogue_support import _TAKEN_CUSTOMERS, _TAKEN_ORDERS, Chat
from sqlalchemy import func, select

from bot.server import APOLOGY
from crm_store.models import Customer, Order, VerificationAttempt
from crm_store.services.notifier import list_outbox

pytestmark = pytest.mark.slow

SENDERS = 30


def single_order_customers(stack, count: int) -> list[tuple[Order, Customer]]:
    """Delivered orders (newest ids first) of customers who have no other order."""
    with stack.factory() as session:
        singles = (
            select(Order.customer_id)
            .group_by(Order.customer_id)
            .having(func.count() == 1)
            .subquery()
        )
        orders = session.execute(
            select(Order)
            .where(Order.customer_id.in_(select(singles.c.customer_id)))
            .where(Order.status == "delivered")
            .where(Order.id.not_in(sorted(_TAKEN_ORDERS) or [""]))
            .order_by(Order.id.desc())
            .limit(count)
        ).scalars()
        found = [(order, order.customer) for order in orders]
        _TAKEN_ORDERS.update(order.id for order, _ in found)
        _TAKEN_CUSTOMERS.update(order.customer_id for order, _ in found)
        session.expunge_all()
    assert len(found) == count
    return found


def secrets_of(order: Order, customer: Customer) -> list[str]:
    facts = [
        customer.first_name,
        customer.last_name,
        customer.email,
        customer.phone,
        order.delivery_postcode,
        order.tracking_number,
        order.carrier,
        str(order.total),
    ]
    return [f for f in facts if f]


def attempts_on(stack, order_id: str) -> list[VerificationAttempt]:
    with stack.factory() as session:
        rows = list(
            session.execute(
                select(VerificationAttempt).where(
                    VerificationAttempt.order_id == order_id
                )
            ).scalars()
        )
        session.expunge_all()
        return rows


def test_thirty_fresh_senders_lock_the_order_and_the_31st_learns_nothing(
    stack,
) -> None:
    (order, owner), (other, other_owner) = single_order_customers(stack, 2)
    secrets = secrets_of(order, owner)
    replies: list[str] = []
    for index in range(SENDERS):
        wrong = f"{1000 + index} ZZ"
        assert wrong != order.delivery_postcode
        chat = Chat(stack)
        named = chat.say(f"where is my order {order.id}?")
        answer = chat.say(wrong)
        replies += chat.replies
        if index < 4:
            assert f"{4 - index} attempt" in answer, (index, answer)
        elif index == 4:
            assert "paused" in answer and "human agent" in answer, answer
        else:
            # Locked before any postcode is asked for, whoever asks.
            assert "paused" in named and "human agent" in named, named
            assert "postcode of the delivery address" not in named
    rows = attempts_on(stack, order.id)
    assert len(rows) >= 5 and not any(r.succeeded for r in rows)
    assert len({r.sender_key for r in rows}) == len(rows)

    # A 31st sender with the right postcode: no details, the offer of a human.
    chat = Chat(stack)
    named = chat.say(f"where is my order {order.id}?")
    answer = chat.say(order.delivery_postcode)
    assert "paused" in named and "human agent" in named
    assert "verified" not in answer.lower()
    for fact in secrets:
        assert all(fact not in reply for reply in replies + chat.replies), fact
    handed = chat.say("yes please")
    assert "human agent" in handed or "colleague" in handed
    assert not any(r.succeeded for r in attempts_on(stack, order.id))
    chat.assert_history()

    # Another customer's order still verifies, from the same client address.
    chat = Chat(stack)
    chat.say(f"where is my order {other.id}?")
    answer = chat.say(other.delivery_postcode)
    assert "verified" in answer and other.id in answer, answer
    assert [r.succeeded for r in attempts_on(stack, other.id)] == [True]
    assert other_owner.id != owner.id


def login_mails_to(stack, recipient: str) -> list:
    with stack.factory() as session:
        return list_outbox(session, recipient=recipient, purpose="login_code")


def test_a_locked_order_is_reached_with_a_code_to_the_registered_email(
    stack,
) -> None:
    [(order, owner)] = single_order_customers(stack, 1)
    assert owner.email
    for index in range(5):
        chat = Chat(stack)
        chat.say(f"where is my order {order.id}?")
        locked = chat.say(f"{2000 + index} ZZ")
    assert "paused" in locked and "human agent" in locked
    assert "one-time code to the e-mail address on the account" in locked
    assert login_mails_to(stack, owner.email) == []

    # The "Send a code to my e-mail" button of the lock-out message.
    sent = chat.say("/request_login_code")
    assert "If this order is yours, we have sent a 6-digit code" in sent, sent
    assert "Please type it here." in sent and owner.email not in sent
    [mail] = login_mails_to(stack, owner.email)
    code = re.search(r"\b(\d{6})\b", mail.body).group(1)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    assert "4 more" in chat.say(wrong)
    done = chat.say(code)
    assert "verified" in done and order.id in done and "delivered" in done, done
    # The lock stays for everyone else; the postcode still proves nothing.
    other = Chat(stack)
    assert "paused" in other.say(f"where is my order {order.id}?")
    # Asking in words works too, and is answered the same.
    typed = other.say("could you email me a code please")
    assert "If this order is yours, we have sent a 6-digit code" in typed, typed
    assert len(login_mails_to(stack, owner.email)) == 2
    assert not any(r.succeeded for r in attempts_on(stack, order.id))
    chat.assert_history()
    other.assert_history()


@pytest.mark.parametrize(
    "payload",
    [
        '/check_order_status{"order_number": {}}',
        '/check_order_status{"order_number": 5, "postcode": [1]}',
        '/check_order_status{"order_number": ["A10001"], "postcode": {"a": 1}}',
        '/inform{"postcode": {}}',
    ],
)
def test_malformed_entity_values_get_an_answer_not_an_error(stack, payload) -> None:
    chat = Chat(stack)
    answer = chat.say(payload)
    assert answer and APOLOGY not in answer, answer
    assert "verified" not in answer.lower()
    follow = chat.say("hello")
    assert follow and APOLOGY not in follow
    chat.assert_history()
