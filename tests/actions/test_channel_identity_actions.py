"""A channel's own identity: Telegram verifies a registered user, e-mail does not."""

from __future__ import annotations

from action_support import responses, run, slots_of, tracker
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from actions.verification import ActionGreet, ActionStartTask
from crm_store.models import ChannelIdentity, Customer


def telegram_id(store: sessionmaker, customer_id: str) -> str:
    with store() as session:
        return session.execute(
            select(ChannelIdentity.value).where(
                ChannelIdentity.kind == "telegram",
                ChannelIdentity.customer_id == customer_id,
            )
        ).scalar_one()


def test_a_registered_telegram_user_is_greeted_by_name_and_verified(
    store: sessionmaker,
) -> None:
    key = f"telegram:{telegram_id(store, 'C0007')}"
    events, messages = run(ActionGreet(), tracker(intent="greet", sender=key))
    slots = slots_of(events)
    slots.pop("verified_at")
    assert slots == {
        "customer_id": "C0007",
        "verified": True,
        "verification_method": "identity:telegram",
    }
    assert responses(messages) == ["utter_greet_known"]


def test_a_registered_telegram_user_starts_a_task_without_questions(
    store: sessionmaker,
) -> None:
    key = f"telegram:{telegram_id(store, 'C0006')}"
    t = tracker(intent="list_orders", text="show my orders", sender=key)
    events, messages = run(ActionStartTask(), t)
    assert slots_of(events)["customer_id"] == "C0006"
    assert "utter_need_verification" not in responses(messages)


def test_unknown_telegram_users_rest_lookalikes_and_email_senders_must_verify(
    store: sessionmaker,
) -> None:
    with store() as session:
        address = session.get(Customer, "C0001").email
    registered = telegram_id(store, "C0007")
    for key in (
        "telegram:123456789012",  # nobody's
        f"rest:telegram:{registered}",  # a REST client naming itself like one
        f"email:{address}#0123456789abcdef",  # identified, not verified
        f"email:{address}",
    ):
        t = tracker(intent="check_order_status", text="where is my order", sender=key)
        events, messages = run(ActionStartTask(), t)
        assert "customer_id" not in slots_of(events), key
        assert responses(messages) == ["utter_need_verification"], key


def test_a_registered_phone_verifies_for_answers_but_not_for_changes(
    store: sessionmaker,
) -> None:
    from action_support import tracker as make_tracker

    from actions.common import has_recent_strong_verification

    with store() as session:
        phone = session.get(Customer, "C0004").phone
    for key in (f"sms:{phone}", f"voice:{phone}"):
        events, messages = run(ActionGreet(), tracker(intent="greet", sender=key))
        slots = slots_of(events)
        assert slots["customer_id"] == "C0004"
        assert slots["verification_method"] == "identity:phone"
        assert responses(messages) == ["utter_greet_known"]
        after = make_tracker(
            sender=key,
            slots={
                "customer_id": "C0004",
                "verified": True,
                "verified_at": slots["verified_at"],
                "verification_method": "identity:phone",
            },
        )
        assert not has_recent_strong_verification(after)
    # An unknown number is nobody.
    events, _ = run(ActionGreet(), tracker(intent="greet", sender="sms:+31655500999"))
    assert events == []
