"""A code to the registered e-mail when postcode checks pause (trackers, store)."""

from __future__ import annotations

import re
import time

from action_support import responses, run, slots_of, tracker, verified
from sqlalchemy.orm import sessionmaker

from actions.common import TASK_SLOTS, is_verified
from actions.login_code import (
    ActionLoginCodeResult,
    ActionSendLoginCode,
    ValidateLoginCodeForm,
)
from crm_store.models import Customer
from crm_store.services.login_codes import OUTBOX_PURPOSE
from crm_store.services.notifier import list_outbox

ORDER, OWNER = "A10001", "C0001"
MISSING = "A99999"


def login_mail(store: sessionmaker) -> list:
    with store() as session:
        return list_outbox(session, purpose=OUTBOX_PURPOSE)


def registered(store: sessionmaker, customer_id: str) -> str:
    with store() as session:
        return session.get(Customer, customer_id).email


def ask_for_code(order: str) -> tuple[list[dict], list[dict], dict]:
    """Press "Send a code to my e-mail" after checks paused for ``order``."""
    slots = {"login_order": order, "pending_task": "order_status"}
    events, messages = run(
        ActionSendLoginCode(), tracker(slots=slots, intent="request_login_code")
    )
    return events, messages, {**slots, **slots_of(events)}


def type_code(slots: dict, text: str) -> tuple[dict, list[dict]]:
    t = tracker(slots=slots, candidates={"login_code": text}, form="login_code_form")
    events, messages = run(ValidateLoginCodeForm(), t)
    return slots_of(events), messages


def followups(events: list[dict]) -> list[str]:
    return [e["name"] for e in events if e.get("event") == "followup"]


def wrong_for(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def without_times(events: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in e.items() if k not in ("timestamp", "value")}
        if e.get("name") == "login_code_at"
        else e
        for e in events
    ]


def test_code_goes_to_the_registered_email_and_the_answer_tells_nothing(
    store,
) -> None:
    sent_events, sent_said, _ = ask_for_code(ORDER)
    [mail] = login_mail(store)
    assert mail.recipient == registered(store, OWNER) and mail.customer_id == OWNER
    assert re.search(r"\b\d{6}\b", mail.body)
    # An order that does not exist: no mail, the very same answer and events.
    none_events, none_said, _ = ask_for_code(MISSING)
    assert len(login_mail(store)) == 1
    assert none_said == sent_said
    assert [m["response"] for m in sent_said] == ["utter_login_code_sent"]
    assert without_times(none_events) == without_times(sent_events)
    assert followups(sent_events) == ["login_code_form"]
    assert slots_of(sent_events)["human_offered"] is False
    text = str(sent_said)
    assert mail.recipient not in text and OWNER not in text


def test_no_code_without_a_paused_order_or_when_verified(store) -> None:
    for slots in ({}, {"login_order": "nonsense"}, verified(OWNER, login_order=ORDER)):
        events, messages = run(
            ActionSendLoginCode(), tracker(slots=slots, intent="request_login_code")
        )
        assert responses(messages) == ["utter_login_code_unavailable"]
        assert events == []
    assert login_mail(store) == []


def test_right_code_verifies_and_the_task_goes_on(store) -> None:
    _, _, slots = ask_for_code(ORDER)
    code = re.search(r"\b(\d{6})\b", login_mail(store)[0].body).group(1)
    filled, messages = type_code(slots, f"the code is {code[:3]} {code[3:]}")
    assert messages == []
    assert filled["login_code"] == "confirmed"
    assert filled["customer_id"] == OWNER and filled["verified"] is True
    assert filled["verification_method"] == "code:login"
    assert abs(filled["verified_at"] - time.time()) < 60
    after = {**slots, **filled}
    t = tracker(slots=after)
    assert is_verified(t)
    events, messages = run(ActionLoginCodeResult(), t)
    assert responses(messages) == ["utter_verified"]
    result = slots_of(events)
    assert result["order_number"] == ORDER and result["login_order"] is None
    assert followups(events) == ["action_check_task"]


def test_wrong_codes_count_down_then_a_person_is_offered(store) -> None:
    _, _, slots = ask_for_code(ORDER)
    code = re.search(r"\b(\d{6})\b", login_mail(store)[0].body).group(1)
    filled, messages = type_code(slots, "no idea")
    assert filled == {"login_code": None}
    assert responses(messages) == ["utter_invalid_code"]
    for left in (4, 3, 2, 1):
        filled, messages = type_code(slots, wrong_for(code))
        assert responses(messages) == ["utter_code_wrong"]
        assert messages[0]["tries_left"] == left
        assert filled["login_code"] is None and "verified" not in filled
        slots = {**slots, **filled}
    filled, _ = type_code(slots, wrong_for(code))
    assert filled == {"login_code": "exhausted"}
    events, messages = run(ActionLoginCodeResult(), tracker(slots={**slots, **filled}))
    assert responses(messages) == ["utter_login_code_failed"]
    result = slots_of(events)
    assert result["human_offered"] is True and result["login_order"] is None
    assert all(result[name] is None for name in TASK_SLOTS)
    assert followups(events) == []
    # The right code is void now.
    filled, _ = type_code(slots, code)
    assert filled["login_code"] != "confirmed" and "verified" not in filled


def test_a_missing_order_reads_like_a_wrong_code(store) -> None:
    _, _, real = ask_for_code(ORDER)
    _, _, fake = ask_for_code(MISSING)
    code = re.search(r"\b(\d{6})\b", login_mail(store)[0].body).group(1)
    for left in (4, 3, 2, 1):
        got_real, said_real = type_code(real, wrong_for(code))
        got_fake, said_fake = type_code(fake, wrong_for(code))
        assert (got_real, said_real) == (got_fake, said_fake)
        assert said_fake[0]["tries_left"] == left
        real, fake = {**real, **got_real}, {**fake, **got_fake}
    assert type_code(fake, code)[0] == {"login_code": "exhausted"}


def test_a_code_past_its_time_is_expired(store) -> None:
    _, _, slots = ask_for_code(MISSING)
    slots["login_code_at"] = time.time() - 11 * 60
    assert type_code(slots, "123456")[0] == {"login_code": "expired"}
    assert type_code({**slots, "login_order": None}, "123456")[0] == {
        "login_code": "expired"
    }
