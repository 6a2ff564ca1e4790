"""Outgoing mail: composed, serialised to bytes, and read back as a client would.

Every check parses the composed bytes again with ``email.message_from_bytes``
(``policy.default``); the round trip answers a composed reply the way a mail
client does and reads the answer with ``channels.email_parse``.
"""

from __future__ import annotations

import copy
import email
import email.policy
import re
from email.message import EmailMessage

import pytest

from channels.email_compose import (
    LOOP_HEADER,
    button_choice,
    compose_notice,
    compose_reply,
    numbered_choices,
    reply_subject,
)
from channels.email_parse import parse_inbound

OURS = "support@northwind.example"
CUSTOMER = "jan.devries@example.nl"
BUTTONS = [
    {"title": "Yes, cancel it", "payload": "/affirm"},
    {"title": "No, keep it", "payload": "/deny"},
    {"title": "Talk to a person", "payload": "/human_handoff"},
]


def wire(mail: EmailMessage) -> bytes:
    """The bytes smtplib would send (CRLF line ends)."""
    return mail.as_bytes(policy=mail.policy.clone(linesep="\r\n"))


def read_back(mail: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(wire(mail), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def bodies(parsed: EmailMessage) -> tuple[str, str]:
    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    plain, markup = (p.get_content().replace("\r\n", "\n") for p in parts)
    return plain, markup


def reply(**overrides: object) -> EmailMessage:
    arguments: dict[str, object] = {
        "from_address": OURS,
        "to_address": CUSTOMER,
        "subject": "Your order NW-10023",
        "texts": ["Your order NW-10023 was shipped on Friday."],
    }
    arguments.update(overrides)
    return compose_reply(**arguments)  # type: ignore[arg-type]


# -- subjects and choices ----------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Your order", "Re: Your order"),
        ("Re: Your order", "Re: Your order"),
        ("RE: Re: re: Your order", "Re: Your order"),
        ("AW: Rücksendung", "Re: Rücksendung"),
        ("SV: Ordre", "Re: Ordre"),
        ("Antw: Bestelling", "Re: Bestelling"),
        ("Re[2]: Your order", "Re: Your order"),
        ("Re : Votre commande", "Re: Votre commande"),
        ("Fwd: Invoice", "Re: Fwd: Invoice"),
        ("Regarding my order", "Re: Regarding my order"),
        ("Hi\r\nBcc: victim@example.com", "Re: Hi Bcc: victim@example.com"),
        ("", "Re: Your message to Northwind Goods"),
        ("   ", "Re: Your message to Northwind Goods"),
        ("Re:", "Re: Your message to Northwind Goods"),
        (None, "Re: Your message to Northwind Goods"),
    ],
)
def test_reply_subject(subject: str | None, expected: str) -> None:
    assert reply_subject(subject) == expected


def test_reply_subject_is_at_most_200_characters() -> None:
    subject = reply_subject("Re: " + "x" * 500)
    assert subject.startswith("Re: xxx")
    assert len(subject) == 200


def test_numbered_choices() -> None:
    assert numbered_choices(BUTTONS[:2]) == (
        "Reply with the number of your choice:\n1. Yes, cancel it\n2. No, keep it"
    )
    assert numbered_choices([]) == ""
    assert numbered_choices(None) == ""


def test_numbered_choices_skip_unusable_buttons_and_button_choice_agrees() -> None:
    buttons = [
        {"title": "  ", "payload": "/empty"},
        "not a button",
        {"title": "Track\r\nmy parcel", "payload": "/track"},
        {"payload": "/no_title"},
        {"title": "Cancel", "payload": "/cancel"},
    ]
    assert numbered_choices(buttons) == (
        "Reply with the number of your choice:\n1. Track my parcel\n2. Cancel"
    )
    assert button_choice("1", buttons) == "/track"
    assert button_choice("2", buttons) == "/cancel"
    assert button_choice("3", buttons) is None


@pytest.mark.parametrize(
    ("text", "payload"),
    [
        ("2", "/deny"),
        (" 2. ", "/deny"),
        ("2)", "/deny"),
        ("#2", "/deny"),
        ("2:", "/deny"),
        ("\n3\n", "/human_handoff"),
        ("1", "/affirm"),
        ("no, KEEP it", "/deny"),
        ("  Talk to a person ", "/human_handoff"),
        ("0", None),
        ("4", None),
        ("-1", None),
        ("22", None),
        ("option 2", None),
        ("2 please", None),
        ("1 or 2", None),
        ("²", None),
        ("", None),
        ("no", None),
    ],
)
def test_button_choice(text: str, payload: str | None) -> None:
    assert button_choice(text, BUTTONS) == payload


def test_button_choice_without_buttons() -> None:
    assert button_choice("1", []) is None
    assert button_choice("1", None) is None


# -- replies -----------------------------------------------------------------------


def test_reply_headers_and_threading() -> None:
    mail = reply(
        subject="RE: AW: Your order NW-10023",
        in_reply_to="<CAK7xYz1@mail.gmail.com>",
        references=["<first@example.nl>", "<bot-1@northwind.example>"],
    )
    parsed = read_back(mail)
    assert parsed["Subject"] == "Re: Your order NW-10023"
    assert parsed["In-Reply-To"] == "<CAK7xYz1@mail.gmail.com>"
    assert parsed["References"].split() == [
        "<first@example.nl>",
        "<bot-1@northwind.example>",
        "<CAK7xYz1@mail.gmail.com>",
    ]
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed["X-Auto-Response-Suppress"] == "All"
    assert parsed[LOOP_HEADER] == "northwind.example"
    assert parsed["To"].addresses[0].addr_spec == CUSTOMER
    sender = parsed["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == ("Northwind Goods support", OURS)
    assert re.fullmatch(r"<[^<>@\s]+@northwind\.example>", parsed["Message-ID"])
    assert parsed["Date"].datetime.utcoffset() is not None
    assert str(mail["Message-ID"]) == parsed["Message-ID"]


def test_agent_replies_are_not_auto_submitted() -> None:
    parsed = read_back(reply(auto_submitted=False))
    assert parsed["Auto-Submitted"] is None
    assert parsed["X-Auto-Response-Suppress"] is None
    assert parsed[LOOP_HEADER] == "northwind.example"


def test_reply_without_thread_has_no_threading_headers() -> None:
    parsed = read_back(reply(subject=None))
    assert parsed["In-Reply-To"] is None
    assert parsed["References"] is None
    assert parsed["Subject"] == "Re: Your message to Northwind Goods"


def test_reply_body_has_text_and_html_with_the_numbered_choices() -> None:
    texts = ["Do you want to cancel order NW-10040?", "It ships tomorrow.\nAt 9:00."]
    plain, markup = bodies(read_back(reply(texts=texts, buttons=BUTTONS)))
    assert plain == (
        "Do you want to cancel order NW-10040?\n\n"
        "It ships tomorrow.\nAt 9:00.\n\n"
        "Reply with the number of your choice:\n"
        "1. Yes, cancel it\n2. No, keep it\n3. Talk to a person\n"
    )
    assert "<p>Do you want to cancel order NW-10040?</p>" in markup
    assert "<p>It ships tomorrow.<br>\nAt 9:00.</p>" in markup
    assert (
        "<ol><li>Yes, cancel it</li><li>No, keep it</li><li>Talk to a person</li></ol>"
    ) in markup


def test_reply_html_escapes_every_text() -> None:
    texts = ['<script>alert("x")</script> & <b>bold</b>']
    buttons = [{"title": "<img src=x onerror=alert(1)>", "payload": "/x"}]
    plain, markup = bodies(read_back(reply(texts=texts, buttons=buttons)))
    assert '<script>alert("x")</script> & <b>bold</b>' in plain
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; " in markup
    assert "&lt;b&gt;bold&lt;/b&gt;" in markup
    assert "<li>&lt;img src=x onerror=alert(1)&gt;</li>" in markup
    assert "<script" not in markup and "<img" not in markup and "<b>" not in markup


def test_reply_with_non_ascii_text_and_subject() -> None:
    mail = reply(subject="Größe 42 – wann?", texts=["Grüß Gott! €49 für 注文"])
    parsed = read_back(mail)
    assert parsed["Subject"] == "Re: Größe 42 – wann?"
    plain, markup = bodies(parsed)
    assert plain == "Grüß Gott! €49 für 注文\n"
    assert "<p>Grüß Gott! €49 für 注文</p>" in markup
    assert wire(mail).isascii()


def test_reply_with_only_buttons_and_blank_texts() -> None:
    plain, _ = bodies(read_back(reply(texts=["", "  "], buttons=BUTTONS[:1])))
    assert plain == "Reply with the number of your choice:\n1. Yes, cancel it\n"


def test_reply_with_nothing_to_send_is_refused() -> None:
    with pytest.raises(ValueError, match="text or a button"):
        reply(texts=["  "], buttons=[{"title": "", "payload": "/x"}])


def test_references_are_deduplicated_and_at_most_20() -> None:
    chain = [f"<m{i}@example.nl>" for i in range(30)]
    parsed = read_back(
        reply(
            references=[*chain, chain[3], "not an id"], in_reply_to="<m29@example.nl>"
        )
    )
    assert parsed["References"].split() == [chain[0], *chain[-19:]]


def test_long_message_ids_are_folded_between_ids_not_encoded() -> None:
    long_id = f"<{'x' * 200}@mail.example.com>"
    chain = [long_id, *[f"<CAF{i}.abcdefghijk@mail.gmail.com>" for i in range(15)]]
    mail = reply(references=chain, in_reply_to=long_id, message_id=long_id)
    data = wire(mail)
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    assert "=?" not in head  # no RFC 2047 encoded words anywhere in the header
    lines = head.split("\r\n")
    assert all(len(line) <= 998 for line in lines)
    references = [i for i, line in enumerate(lines) if line.startswith("References:")]
    assert len(references) == 1
    block = [lines[references[0]]]
    for line in lines[references[0] + 1 :]:
        if not line.startswith(" "):
            break
        block.append(line)
    assert len(block) > 2  # folded over several lines
    assert all(len(line) <= 78 or len(line.split()) <= 2 for line in block)
    assert f"In-Reply-To: {long_id}" in lines
    assert f"Message-ID: {long_id}" in lines
    parsed = read_back(mail)
    assert parsed["References"].split() == chain


def test_invalid_threading_ids_are_left_out() -> None:
    parsed = read_back(
        reply(
            in_reply_to="<a@b>\r\nBcc: victim@example.com",
            references=["junk", "<ok@example.nl>", "<x@y>\nBcc: z@v", None],
        )
    )
    assert parsed["In-Reply-To"] is None
    assert parsed["References"] == "<ok@example.nl>"
    assert parsed["Bcc"] is None
    parsed = read_back(reply(in_reply_to="no id", references=[]))
    assert parsed["In-Reply-To"] is None and parsed["References"] is None


def test_header_injection_in_the_subject_stays_in_the_subject() -> None:
    parsed = read_back(reply(subject="Hello\r\nBcc: victim@example.com\r\n\r\nbody"))
    assert parsed["Bcc"] is None
    assert parsed["Subject"] == "Re: Hello Bcc: victim@example.com body"


@pytest.mark.parametrize(
    "address",
    [
        "jan@example.nl\r\nBcc: victim@example.com",
        "jan@example.nl\nBcc: victim@example.com",
        "Jan <jan@example.nl>",
        "jan@example.nl, victim@example.com",
        "jan example.nl",
        "@example.nl",
        "jan@",
        "",
        f"{'a' * 250}@example.nl",
        "jürgen@example.de",
        None,
    ],
)
def test_unusable_addresses_are_refused(address: str | None) -> None:
    with pytest.raises(ValueError):
        reply(to_address=address)
    with pytest.raises(ValueError):
        reply(from_address=address)
    with pytest.raises(ValueError):
        compose_notice(from_address=OURS, to_address=address, subject="s", body="b")


@pytest.mark.parametrize("message_id", ["not-an-id", "<a b@c>", "<x@y>\r\nBcc: z"])
def test_a_given_message_id_must_be_valid(message_id: str) -> None:
    with pytest.raises(ValueError, match="message_id"):
        reply(message_id=message_id)


def test_a_given_message_id_is_used() -> None:
    assert read_back(reply(message_id="<bot-42@northwind.example>"))["Message-ID"] == (
        "<bot-42@northwind.example>"
    )


def test_copies_of_a_composed_mail_serialise_the_same() -> None:
    mail = reply(in_reply_to="<a@b.nl>", references=["<c@d.nl>"])
    sent = wire(mail)  # the first serialisation fixes the MIME boundary
    assert wire(copy.deepcopy(mail)) == sent


# -- notices -----------------------------------------------------------------------


def test_notice() -> None:
    mail = compose_notice(
        from_address=OURS,
        to_address=CUSTOMER,
        subject="Your Northwind Goods login code",
        body="Your code is 123456.\n\nIt is valid for 10 minutes. <Do not share>",
    )
    parsed = read_back(mail)
    assert parsed["Subject"] == "Your Northwind Goods login code"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed[LOOP_HEADER] == "northwind.example"
    assert parsed["In-Reply-To"] is None
    plain, markup = bodies(parsed)
    assert plain == (
        "Your code is 123456.\n\nIt is valid for 10 minutes. <Do not share>\n"
    )
    assert "<p>Your code is 123456.</p>" in markup
    assert "<p>It is valid for 10 minutes. &lt;Do not share&gt;</p>" in markup


def test_notice_subject_is_one_line_and_never_empty() -> None:
    mail = compose_notice(
        from_address=OURS, to_address=CUSTOMER, subject="a\r\nBcc: x@y", body="b"
    )
    assert read_back(mail)["Subject"] == "a Bcc: x@y"
    mail = compose_notice(from_address=OURS, to_address=CUSTOMER, subject="", body="b")
    assert read_back(mail)["Subject"] == "A message from Northwind Goods"


def test_notice_without_body_is_refused() -> None:
    with pytest.raises(ValueError, match="body"):
        compose_notice(from_address=OURS, to_address=CUSTOMER, subject="s", body=" ")


# -- round trip ----------------------------------------------------------------------


def customer_answer(ours: EmailMessage, answer: str) -> bytes:
    """The customer's client answers ``ours``: text above the quoted mail."""
    parsed = read_back(ours)
    plain, _ = bodies(parsed)
    quoted = "\n".join(f"> {line}".rstrip() for line in plain.splitlines())
    body = (
        f"{answer}\n\nOn Tue, 5 Mar 2024 at 10:15, Northwind Goods support <\n"
        f"{OURS}> wrote:\n\n{quoted}\n"
    )
    return (
        "\r\n".join(
            [
                "From: Jan de Vries <jan.devries@example.nl>",
                f"To: {OURS}",
                f"Subject: Re: {parsed['Subject']}",
                "Message-ID: <CAK7answer@mail.gmail.com>",
                f"In-Reply-To: {parsed['Message-ID']}",
                f"References: {parsed['References']} {parsed['Message-ID']}",
                "MIME-Version: 1.0",
                "Content-Type: text/plain; charset=UTF-8",
                "",
                body.replace("\n", "\r\n"),
            ]
        )
    ).encode("utf-8")


def test_round_trip_a_numbered_answer_chooses_the_button() -> None:
    ours = reply(
        texts=["Do you want to cancel order NW-10040?"],
        buttons=BUTTONS,
        in_reply_to="<CAK7first@mail.gmail.com>",
        references=["<CAK7first@mail.gmail.com>"],
    )
    answer = parse_inbound(customer_answer(ours, "2"))
    assert answer.auto_reason is None
    assert answer.text == "2"
    assert answer.in_reply_to == str(ours["Message-ID"])
    assert answer.references == ["<CAK7first@mail.gmail.com>", str(ours["Message-ID"])]
    assert answer.subject == "Re: Re: Your order NW-10023"
    assert reply_subject(answer.subject) == "Re: Your order NW-10023"
    assert button_choice(answer.text, BUTTONS) == "/deny"


def test_round_trip_a_free_text_answer_is_not_a_choice() -> None:
    ours = reply(buttons=BUTTONS)
    answer = parse_inbound(customer_answer(ours, "Actually, I want a refund."))
    assert answer.text == "Actually, I want a refund."
    assert button_choice(answer.text, BUTTONS) is None


def test_our_own_reply_coming_back_is_never_answered() -> None:
    for mail in (
        reply(buttons=BUTTONS),
        reply(auto_submitted=False),
        compose_notice(from_address=OURS, to_address=OURS, subject="s", body="b"),
    ):
        assert parse_inbound(wire(mail)).auto_reason in ("loop",)
