"""SMS and voice over Twilio end to end: signed webhooks, TwiML, one store.

Real processes (Rasa server with the Twilio routes, action server, console,
e-mail process with the SMS worker) on one SQLite store; the fake Twilio API
(``tests.fakes.twilio_api``) records what is sent. Requests are signed exactly
as Twilio signs them, for the public URL the stack was told (``TWILIO_PUBLIC_URL``).
"""

from __future__ import annotations

import secrets
import time
import xml.etree.ElementTree as ET

import pytest
from sqlalchemy import select

from crm_store.models import Conversation, Interaction, Order, OutboxMessage
from crm_store.services.notifier import Notifier
from tests.e2e.dialogue_support import pick_order
from tests.e2e.webchat_support import ConsoleAgent
from tests.fakes.twilio_api import signed_post

pytestmark = pytest.mark.slow

SMS_PATH = "/webhooks/twilio_sms/webhook"
VOICE_PATH = "/webhooks/twilio_voice/webhook"
SPOKEN = "zero one two three four five six seven eight nine".split()


def new_number() -> str:
    return "+316" + f"{secrets.randbelow(10**8):08d}"


def spoken(order_id: str) -> str:
    """An order number as a caller says it: "a one zero zero four seven"."""
    return "a " + " ".join(SPOKEN[int(d)] for d in order_id[1:])


class Texter:
    """A phone texting the bot through Twilio."""

    def __init__(self, stack, number: str) -> None:
        self.stack, self.number = stack, number

    def post(self, body: str, *, sid: str | None = None, signature: str | None = None):
        params = {
            "MessageSid": sid or "SM" + secrets.token_hex(16),
            "AccountSid": self.stack.twilio.account_sid,
            "From": self.number,
            "To": "+3197010000000",
            "Body": body,
            "NumMedia": "0",
        }
        return signed_post(
            self.stack.rasa_url,
            SMS_PATH,
            params,
            self.stack.twilio.auth_token,
            public_base=self.stack.twilio_public_url,
            signature=signature,
        )

    def say(self, body: str, **kw) -> str:
        reply = self.post(body, **kw)
        assert reply.status == 200, reply.text
        root = ET.fromstring(reply.text)
        assert root.tag == "Response"
        return "\n".join(m.text or "" for m in root.iter("Message"))


class PhoneCall:
    """One call to the voice webhook, driven as Twilio drives it."""

    def __init__(self, stack, number: str) -> None:
        self.stack, self.number = stack, number
        self.sid = "CA" + secrets.token_hex(16)

    def post(self, path: str = VOICE_PATH, **params: str) -> ET.Element:
        form = {
            "CallSid": self.sid,
            "AccountSid": self.stack.twilio.account_sid,
            "From": self.number,
            "To": "+3197010000000",
            "CallStatus": "in-progress",
            **params,
        }
        reply = signed_post(
            self.stack.rasa_url,
            path,
            form,
            self.stack.twilio.auth_token,
            public_base=self.stack.twilio_public_url,
        )
        assert reply.status == 200, reply.text
        root = ET.fromstring(reply.text)
        assert root.tag == "Response"
        return self.follow(root)

    def follow(self, root: ET.Element) -> ET.Element:
        """Follow a holding phrase's redirect (a slow turn) to the real answer."""
        for _ in range(5):
            redirect = root.find("Redirect")
            gather = root.find("Gather")
            if (
                gather is not None
                or redirect is None
                or "stage=wait" not in (redirect.text or "")
            ):
                return root
            path = (redirect.text or "").split(self.stack.twilio_public_url, 1)[-1]
            root = self.post(path)
        return root

    @staticmethod
    def said(root: ET.Element) -> str:
        return " ".join(s.text or "" for s in root.iter("Say"))


def rows_of(stack, key: str) -> list[Interaction]:
    with stack.factory() as session:
        ids = select(Conversation.id).where(Conversation.tracker_key == key)
        return list(
            session.execute(
                select(Interaction)
                .where(Interaction.conversation_id.in_(ids))
                .order_by(Interaction.id)
            ).scalars()
        )


# --- SMS --------------------------------------------------------------------------


def test_order_status_by_sms_with_verification(stack) -> None:
    order = pick_order(stack, Order.status == "shipped", offset=11)
    phone = Texter(stack, new_number())  # not the customer's registered number
    first = phone.say(f"where is my order {order.id}?")
    assert "postcode" in first.lower() and order.tracking_number not in first
    second = phone.say(order.customer.postcode)
    assert order.tracking_number in second, second
    rows = stack.eventually(lambda: rows_of(stack, f"sms:{phone.number}"))
    assert {r.channel for r in rows} == {"sms"}

    def linked() -> bool:
        with stack.factory() as session:
            conversation = session.execute(
                select(Conversation).where(
                    Conversation.tracker_key == f"sms:{phone.number}"
                )
            ).scalar_one()
            return conversation.customer_id == order.customer_id

    # First the number's prospect, then the customer who proved it is them.
    stack.eventually(linked)


def test_a_registered_number_is_told_without_questions(stack) -> None:
    order = pick_order(stack, Order.status == "shipped", offset=13)
    phone = Texter(stack, order.customer.phone)
    answer = phone.say(f"status of order {order.id} please")
    assert order.tracking_number in answer, answer


def test_forged_signatures_and_replayed_message_sids(stack) -> None:
    phone = Texter(stack, new_number())
    for signature in ("", "bm90IHRoZSBzaWduYXR1cmU="):
        reply = phone.post("hello there", signature=signature)
        assert reply.status == 403
    assert rows_of(stack, f"sms:{phone.number}") == []
    sid = "SM" + secrets.token_hex(16)
    first = phone.say("hello", sid=sid)
    assert first
    again = phone.post("hello", sid=sid)
    assert again.status == 200
    assert ET.fromstring(again.text).find("Message") is None
    time.sleep(0.5)
    customer_lines = [
        r for r in rows_of(stack, f"sms:{phone.number}") if r.author == "customer"
    ]
    assert len(customer_lines) == 1


def test_stop_blocks_every_text_until_start(stack) -> None:
    phone = Texter(stack, new_number())
    assert "START" in phone.say("STOP")
    assert phone.say("where is my order A10001?") == ""
    # A code queued for that number is not sent; the row says why.
    with stack.factory.begin() as session:
        entry = Notifier().notify(
            session,
            customer_id=None,
            channel="sms",
            recipient=phone.number,
            purpose="login_code",
            subject=None,
            body="Your code is 123456.",
        )

    def given_up() -> OutboxMessage | None:
        with stack.factory() as session:
            row = session.get(OutboxMessage, entry.id)
            return row if row.status == "failed" else None

    row = stack.eventually(given_up, timeout=15)
    assert "opted out" in (row.last_error or "")
    assert stack.twilio.messages(to=phone.number) == []
    assert "subscribed" in phone.say("START").lower()
    assert phone.say("hello")


def test_an_agent_reply_reaches_the_phone_by_sms_and_failures_are_shown(
    stack,
) -> None:
    phone = Texter(stack, new_number())
    told = phone.say("I want to talk to a human please")
    assert "in line" in told, told
    agent = ConsoleAgent(stack.console_url, "agent", stack.demo_password)
    key = f"sms:{phone.number}"
    entry = stack.eventually(lambda: agent.waiting_for(key))
    assert agent.post(f"/handoffs/{entry['handoff_id']}/claim").status_code == 200
    sent = agent.post(
        f"/handoffs/{entry['handoff_id']}/messages",
        {"text": "Hi, this is Sam from Northwind (agent)."},
    )
    assert sent.status_code == 201, sent.text
    [message] = stack.twilio.wait_for(1, timeout=15, to=phone.number)
    assert "this is Sam" in message["Body"]
    # The API fails every try: retried with back-off (the stack gives up after
    # 3 tries), then the message is failed and shown to the agent.
    stack.twilio.fail_next(500, times=100)
    try:
        agent.post(
            f"/handoffs/{entry['handoff_id']}/messages", {"text": "Are you there?"}
        )

        def shown() -> list:
            view = agent.get(f"/conversations/{entry['conversation_id']}")
            return view["undelivered"]

        [undelivered] = stack.eventually(shown, timeout=60)
    finally:
        stack.twilio.reset()
    assert undelivered["text"] == "Are you there?"
    assert undelivered["attempts"] == 3 and "500" in (undelivered["error"] or "")


# --- voice ------------------------------------------------------------------------

LETTERS = {c: c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def spoken_postcode(postcode: str) -> str:
    """A Dutch postcode as a caller spells it: "eight three two five R F"."""
    digits, _, letters = postcode.partition(" ")
    return " ".join([*(SPOKEN[int(d)] for d in digits), *letters])


def test_order_status_by_voice_with_speech_and_digits(stack) -> None:
    order = pick_order(stack, Order.status == "shipped", offset=15)
    call = PhoneCall(stack, new_number())
    greeting = call.post()
    gather = greeting.find("Gather")
    assert gather is not None, ET.tostring(greeting)
    assert set(gather.get("input", "").split()) == {"speech", "dtmf"}
    assert gather.get("language") and gather.get("hints")
    assert PhoneCall.said(greeting)
    redirect = greeting.find("Redirect")
    assert redirect is not None and "silence" in (redirect.text or "")

    asked = call.post(
        SpeechResult=f"where is my order {spoken(order.id)}", Confidence="0.91"
    )
    assert "postcode" in PhoneCall.said(asked).lower(), ET.tostring(asked)
    told = call.post(
        SpeechResult=spoken_postcode(order.customer.postcode), Confidence="0.9"
    )
    said = PhoneCall.said(told)
    assert order.tracking_number in said.replace(" ", ""), said
    key = f"voice:{call.number}"
    rows = stack.eventually(lambda: rows_of(stack, key))
    assert {r.channel for r in rows} == {"voice"}
    assert any(
        r.text == f"where is my order {order.id}"
        for r in rows
        if r.author == "customer"
    )

    # Digits: the caller keys the order number in when asked for it.
    other = pick_order(stack, Order.status == "shipped", offset=17)
    keyed = PhoneCall(stack, new_number())
    keyed.post()
    prompt = keyed.post(SpeechResult="where is my order", Confidence="0.9")
    assert "order number" in PhoneCall.said(prompt).lower(), ET.tostring(prompt)
    asked = keyed.post(Digits=other.id[1:])
    assert "postcode" in PhoneCall.said(asked).lower(), ET.tostring(asked)
    answer = keyed.post(
        SpeechResult=spoken_postcode(other.customer.postcode), Confidence="0.9"
    )
    assert other.tracking_number in PhoneCall.said(answer).replace(" ", ""), (
        ET.tostring(answer)
    )


def test_voice_silence_reprompts_once_then_ends_the_call(stack) -> None:
    call = PhoneCall(stack, new_number())
    call.post()
    again = call.post(f"{VOICE_PATH}?stage=silence1")
    assert again.find("Gather") is not None
    bye = call.post(f"{VOICE_PATH}?stage=silence2")
    assert bye.find("Hangup") is not None and "goodbye" in PhoneCall.said(bye).lower()
    # Twilio reports the end of the call: the conversation is closed, once.
    for _ in range(2):
        reply = signed_post(
            stack.rasa_url,
            "/webhooks/twilio_voice/status",
            {
                "CallSid": call.sid,
                "AccountSid": stack.twilio.account_sid,
                "From": call.number,
                "To": "+3197010000000",
                "CallStatus": "completed",
            },
            stack.twilio.auth_token,
            public_base=stack.twilio_public_url,
        )
        assert reply.status in (200, 204)

    def closed() -> Conversation | None:
        with stack.factory() as session:
            found = session.execute(
                select(Conversation).where(
                    Conversation.tracker_key == f"voice:{call.number}"
                )
            ).scalar_one_or_none()
            return found if found is not None and found.status == "closed" else None

    found = stack.eventually(closed, timeout=15)
    assert found.outcome in ("self_served", "abandoned")


def test_a_caller_asking_for_a_person_is_put_through_with_the_packet_queued(
    stack,
) -> None:
    call = PhoneCall(stack, new_number())
    call.post()
    through = call.post(SpeechResult="I want to talk to a person", Confidence="0.9")
    dial = through.find("Dial")
    assert dial is not None, ET.tostring(through)
    assert (dial.text or "").strip() == "+3197010009999" or any(
        (n.text or "").strip() == "+3197010009999" for n in dial.iter("Number")
    )
    agent = ConsoleAgent(stack.console_url, "agent", stack.demo_password)
    entry = stack.eventually(lambda: agent.waiting_for(f"voice:{call.number}"))
    assert entry["channel"] == "voice"


def test_forged_voice_requests_are_refused(stack) -> None:
    for path in (VOICE_PATH, "/webhooks/twilio_voice/status"):
        reply = signed_post(
            stack.rasa_url,
            path,
            {
                "CallSid": "CA" + "0" * 32,
                "From": new_number(),
                "CallStatus": "completed",
            },
            stack.twilio.auth_token,
            public_base=stack.twilio_public_url,
            signature="Zm9yZ2Vk",
        )
        assert reply.status == 403
