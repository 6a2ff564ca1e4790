"""Inbound mail parsing: real-world shaped raw mails, bad input, MIME bombs.

Every mail here is raw RFC 5322 bytes as a mail client or a mail server would
send them; nothing of ``channels.email_parse`` is mocked.
"""

from __future__ import annotations

import base64
import random
import time

import pytest

from channels.email_compose import LOOP_HEADER
from channels.email_parse import (
    Attachment,
    InboundMail,
    UnreadableMail,
    clean_reply_text,
    html_to_text,
    normalize_message_id,
    parse_inbound,
)

HANG_GUARD = 5.0  # seconds; the work itself takes well under one


def raw_mail(headers: list[str], body: str | bytes = b"") -> bytes:
    """Headers and a body joined with CRLF line ends, as they travel over SMTP."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    head = "\r\n".join(headers).encode("utf-8")
    return head + b"\r\n\r\n" + body


CUSTOMER = [
    "From: Jan de Vries <Jan.deVries@Example.NL>",
    "To: support@northwind.example",
    "Subject: Re: Your order NW-10023",
    "Date: Mon, 4 Mar 2024 09:12:44 +0100",
    "Message-ID: <CAK7xYz1@mail.gmail.com>",
    "In-Reply-To: <bot-1@northwind.example>",
    "References: <first@example.nl> <bot-1@northwind.example>",
    "MIME-Version: 1.0",
]


def plain(text: str, charset: str = "utf-8", headers: list[str] | None = None) -> bytes:
    return raw_mail(
        [
            *(headers if headers is not None else CUSTOMER),
            f'Content-Type: text/plain; charset="{charset}"',
            "Content-Transfer-Encoding: 8bit",
        ],
        text,
    )


# -- realistic replies ----------------------------------------------------------


GMAIL_REPLY = raw_mail(
    [
        *CUSTOMER,
        'Content-Type: multipart/alternative; boundary="000000000000a1b2c3"',
    ],
    """--000000000000a1b2c3
Content-Type: text/plain; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable

Hi, the parcel still has not arrived. Can you check where it is?

Thanks,
Jan

On Mon, 4 Mar 2024 at 08:55, Northwind Goods support <
support@northwind.example> wrote:

> Your order NW-10023 was shipped on Friday.
> Track it here: https://track.example/NW-10023
>

--000000000000a1b2c3
Content-Type: text/html; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable

<div dir=3D"ltr">Hi, the parcel still has not arrived. Can you check where =
it is?<div><br></div><div>Thanks,</div><div>Jan</div></div><br><div class=3D=
"gmail_quote"><div dir=3D"ltr" class=3D"gmail_attr">On Mon, 4 Mar 2024 at 0=
8:55, Northwind Goods support &lt;<a href=3D"mailto:support@northwind.exampl=
e">support@northwind.example</a>&gt; wrote:<br></div><blockquote class=3D"gm=
ail_quote">Your order NW-10023 was shipped on Friday.</blockquote></div>

--000000000000a1b2c3--
""",
)


def test_gmail_reply_gives_the_new_text_and_the_thread_ids() -> None:
    mail = parse_inbound(GMAIL_REPLY)
    assert isinstance(mail, InboundMail)
    assert mail.text == (
        "Hi, the parcel still has not arrived. Can you check where it is?"
        "\n\nThanks,\nJan"
    )
    assert mail.message_id == "<CAK7xYz1@mail.gmail.com>"
    assert mail.in_reply_to == "<bot-1@northwind.example>"
    assert mail.references == ["<first@example.nl>", "<bot-1@northwind.example>"]
    assert mail.from_address == "jan.devries@example.nl"
    assert mail.from_name == "Jan de Vries"
    assert mail.subject == "Re: Your order NW-10023"
    assert mail.attachments == []
    assert mail.auto_reason is None
    assert mail.notes == []


OUTLOOK_REPLY = raw_mail(
    [
        "From: Sarah Miller <sarah.miller@contoso.example>",
        "To: Northwind Goods support <support@northwind.example>",
        "Subject: RE: Return label",
        "Message-ID: <AM6PR01MB12340E2@AM6PR01MB1234.eurprd01.prod.outlook.com>",
        "In-Reply-To: <bot-7@northwind.example>",
        "MIME-Version: 1.0",
        'Content-Type: text/plain; charset="us-ascii"',
        "Content-Transfer-Encoding: 7bit",
    ],
    """I printed the label, but the drop-off point is closed. What now?

Kind regards,
Sarah Miller

________________________________
From: Northwind Goods support <support@northwind.example>
Sent: Tuesday, March 5, 2024 10:02 AM
To: Sarah Miller <sarah.miller@contoso.example>
Subject: Return label

Here is your return label for order NW-10031.
""",
)


def test_outlook_reply_is_cut_at_its_header_block() -> None:
    mail = parse_inbound(OUTLOOK_REPLY)
    assert mail.text == (
        "I printed the label, but the drop-off point is closed. What now?"
        "\n\nKind regards,\nSarah Miller"
    )
    assert (
        mail.message_id == "<AM6PR01MB12340E2@AM6PR01MB1234.eurprd01.prod.outlook.com>"
    )
    assert mail.references == []


def test_apple_mail_reply_from_an_iphone() -> None:
    raw = plain(
        "Yes, please cancel it.\n\nSent from my iPhone\n\n"
        "On 5 Mar 2024, at 10:15, Northwind Goods support "
        "<support@northwind.example> wrote:\n\n"
        "> Do you want to cancel order NW-10040?\n"
        "> \n"
        "> Reply with the number of your choice:\n"
        "> 1. Yes\n"
        "> 2. No\n"
    )
    assert parse_inbound(raw).text == "Yes, please cancel it."


def test_dutch_reply_header_wrapped_over_two_lines() -> None:
    raw = plain(
        "Mijn nieuwe adres is Keizersgracht 12, Amsterdam.\n\n"
        "Verstuurd vanaf mijn iPhone\n\n"
        "Op ma 4 mrt. 2024 om 09:12 schreef Northwind Goods support <\n"
        "support@northwind.example>:\n\n"
        "> Wat is uw nieuwe adres?\n"
    )
    assert parse_inbound(raw).text == (
        "Mijn nieuwe adres is Keizersgracht 12, Amsterdam."
    )


GERMAN_LATIN1 = raw_mail(
    [
        "From: =?iso-8859-1?q?Hans_M=FCller?= <hans.mueller@example.de>",
        "To: support@northwind.example",
        "Subject: =?iso-8859-1?q?AW=3A_R=FCcksendung?=",
        "Message-ID: <5f2a.hans@example.de>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=ISO-8859-1",
        "Content-Transfer-Encoding: quoted-printable",
    ],
    b"""Gr=FC=DF Gott, die Gr=F6=DFe passt nicht. Ich m=F6chte umtauschen.

--=20
Hans M=FCller
Tel. 0049 89 1234567

Am 04.03.2024 um 09:12 schrieb Northwind Goods support:
> Wie k=F6nnen wir helfen?
""",
)


def test_german_latin1_quoted_printable_with_signature() -> None:
    mail = parse_inbound(GERMAN_LATIN1)
    assert mail.text == "Grüß Gott, die Größe passt nicht. Ich möchte umtauschen."
    assert mail.from_name == "Hans Müller"
    assert mail.subject == "AW: Rücksendung"
    assert mail.notes == []


def test_german_reply_header() -> None:
    raw = plain(
        "Danke, das hat geklappt.\n\n"
        "Am Mo., 4. März 2024 um 09:12 Uhr schrieb Northwind Goods support "
        "<support@northwind.example>:\n> Bitte versuchen Sie es erneut.\n"
    )
    assert parse_inbound(raw).text == "Danke, das hat geklappt."


def test_shift_jis_base64_body() -> None:
    text = "注文番号NW-10050の配送状況を教えてください。"
    raw = raw_mail(
        [
            *CUSTOMER,
            "Content-Type: text/plain; charset=Shift_JIS",
            "Content-Transfer-Encoding: base64",
        ],
        base64.encodebytes(text.encode("shift_jis")),
    )
    mail = parse_inbound(raw)
    assert mail.text == text
    assert mail.notes == []


def test_windows_1252_body() -> None:
    text = "The invoice says €49 – “shipping included” – but I paid €54."
    raw = raw_mail(
        [*CUSTOMER, "Content-Type: text/plain; charset=windows-1252"],
        text.encode("cp1252"),
    )
    mail = parse_inbound(raw)
    assert mail.text == text
    assert mail.notes == []


def test_rfc2047_subject_in_several_encoded_words_on_one_line() -> None:
    headers = [h for h in CUSTOMER if not h.startswith("Subject")]
    raw = plain(
        "Hello",
        headers=[
            *headers,
            "Subject: =?UTF-8?B?QmVzdGVsbGluZyB2ZXJ6b25kZW4/?=\r\n"
            " =?UTF-8?Q?_=E2=80=93_w=C3=A1nneer?=",
        ],
    )
    assert parse_inbound(raw).subject == "Bestelling verzonden? – wánneer"


def test_subject_with_encoded_newlines_is_one_line_and_at_most_200_chars() -> None:
    headers = [h for h in CUSTOMER if not h.startswith("Subject")]
    long_word = "x" * 300
    raw = plain(
        "Hello",
        headers=[*headers, f"Subject: =?UTF-8?Q?Hi=0D=0ABcc=3A_evil?= {long_word}"],
    )
    subject = parse_inbound(raw).subject
    assert subject.startswith("Hi Bcc: evil x")
    assert "\r" not in subject and "\n" not in subject
    assert len(subject) == 200


# -- charsets and encodings -----------------------------------------------------


def test_unknown_charset_with_utf8_bytes_is_read_as_utf8() -> None:
    mail = parse_inbound(plain("Où est mon colis ?", charset="x-klingon"))
    assert mail.text == "Où est mon colis ?"
    assert mail.notes == ["charset-replaced"]


def test_unknown_charset_with_single_byte_text_is_read_as_latin1() -> None:
    raw = raw_mail(
        [*CUSTOMER, "Content-Type: text/plain; charset=x-klingon"],
        "Où est mon colis ?".encode("latin-1"),
    )
    mail = parse_inbound(raw)
    assert mail.text == "Où est mon colis ?"
    assert mail.notes == ["charset-replaced"]


def test_a_codec_that_is_not_a_text_charset_is_not_used() -> None:
    raw = raw_mail([*CUSTOMER, "Content-Type: text/plain; charset=rot13"], "Uryyb")
    mail = parse_inbound(raw)
    assert mail.text == "Uryyb"
    assert mail.notes == ["charset-replaced"]


def test_utf8_label_on_latin1_bytes_is_replaced_not_fatal() -> None:
    raw = raw_mail(
        [*CUSTOMER, "Content-Type: text/plain; charset=utf-8"],
        "Größe 42 bitte".encode("latin-1"),
    )
    mail = parse_inbound(raw)
    assert mail.text == "Größe 42 bitte"
    assert mail.notes == ["charset-replaced"]


def test_shift_jis_with_a_bad_byte_keeps_the_rest() -> None:
    data = "配送".encode("shift_jis") + b"\xff" + "状況".encode("shift_jis")
    raw = raw_mail([*CUSTOMER, "Content-Type: text/plain; charset=shift_jis"], data)
    mail = parse_inbound(raw)
    assert mail.text == "配送\ufffd状況"
    assert mail.notes == ["charset-replaced"]


def test_no_charset_with_8bit_utf8_is_utf8() -> None:
    raw = raw_mail([*CUSTOMER, "Content-Type: text/plain"], "Café au lait")
    assert parse_inbound(raw).text == "Café au lait"


def test_broken_base64_is_decoded_as_far_as_possible() -> None:
    good = base64.b64encode(b"Please call me back tomorrow morning.").decode()
    raw = raw_mail(
        [
            *CUSTOMER,
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: base64",
        ],
        good[:-3] + "!!*\n",
    )
    mail = parse_inbound(raw)
    assert mail.text.startswith("Please call me back tomorrow")
    assert "bad-encoding" in mail.notes


def test_control_characters_are_removed_from_the_text() -> None:
    raw = plain("Order\x00 NW-1\x07 please\x1b[31m")
    assert parse_inbound(raw).text == "Order NW-1 please[31m"


# -- HTML -------------------------------------------------------------------------


HTML_ONLY = raw_mail(
    [*CUSTOMER, "Content-Type: text/html; charset=utf-8"],
    """<html><head><title>Secret title</title>
<style>p { color: red; } .x::before { content: "styled"; }</style>
<script>alert("script text")</script></head>
<body><p>Where is my order&nbsp;NW-10023?</p>
<p>I paid &euro;49 &amp; got a mail with <a href="https://track.example/x">this link</a>
and <a href="https://track.example/bare"></a>.</p>
<ul><li>Blue mug</li><li>Red plate</li></ul>
<script type="text/javascript">document.write("more script")</script>
<blockquote type="cite">Quoted mail from you</blockquote>
</body></html>""",
)


def test_html_only_mail_becomes_clean_text() -> None:
    mail = parse_inbound(HTML_ONLY)
    assert mail.text == (
        "Where is my order NW-10023?\n\n"
        "I paid €49 & got a mail with this link and https://track.example/bare.\n\n"
        "Blue mug\nRed plate"
    )
    assert mail.notes == ["html-only"]


def test_html_only_mail_entirely_in_a_blockquote_keeps_its_text() -> None:
    raw = raw_mail(
        [*CUSTOMER, "Content-Type: text/html; charset=utf-8"],
        "<blockquote>I typed my question in here</blockquote>",
    )
    assert parse_inbound(raw).text == "I typed my question in here"


def test_outlook_html_reply_drops_everything_from_divrplyfwdmsg() -> None:
    markup = (
        '<div>Please send a new one.</div><div id="appendonsend"></div>'
        '<hr><div id="divRplyFwdMsg"><b>From:</b> Northwind Goods support</div>'
        "<div>Your parcel was returned to us.</div>"
    )
    assert html_to_text(markup) == "Please send a new one."


def test_html_to_text_drops_gmail_quote_and_signature() -> None:
    markup = (
        '<div dir="ltr">Thanks!<br><div class="gmail_signature">Jan | ACME</div>'
        '</div><div class="gmail_quote gmail_quote_container">On Mon ... wrote:'
        "<blockquote>old</blockquote></div><p>after the quote</p>"
    )
    assert html_to_text(markup) == "Thanks!"


def test_html_to_text_without_closing_head_keeps_the_body() -> None:
    assert html_to_text("<html><head><title>t</title><body>Hello</body>") == "Hello"


def test_html_to_text_unsafe_links_are_not_shown() -> None:
    assert html_to_text('<p>x <a href="javascript:alert(1)"></a></p>') == "x"


def test_html_to_text_tables_and_breaks() -> None:
    markup = "<table><tr><td>Order</td><td>NW-1</td></tr><tr><td>Total</td>"
    markup += "<td>&lt;b&gt;12&lt;/b&gt;</td></tr></table>a<br>b<br/>c"
    assert html_to_text(markup) == "Order NW-1\nTotal <b>12</b>\n\na\nb\nc"


@pytest.mark.parametrize(
    "markup",
    [
        "<" * 400_000,
        "<a " * 200_000,
        "<!-- >" * 100_000,
        "<![if x >" * 100_000,
        "<b>" * 100_000,
        "<a href='https://x'>" * 50_000 + "</a>" * 50_000,
        "<p " + "x='" * 100_000,
    ],
    ids=["lt", "open-tags", "comments", "marked", "bold", "links", "attrs"],
)
def test_html_to_text_pathological_markup_is_fast(markup: str) -> None:
    started = time.monotonic()
    html_to_text(markup)
    assert time.monotonic() - started < HANG_GUARD


# -- quote and signature stripping -----------------------------------------------


def test_clean_reply_text_removes_quote_lines_and_crlf() -> None:
    text = "First line\r\n> quoted\r\n>> deeper\r\nSecond line\r\n"
    assert clean_reply_text(text) == "First line\nSecond line"


def test_clean_reply_text_cuts_at_original_message() -> None:
    text = "Fine by me.\n\n-----Original Message-----\nFrom: x\nhello"
    assert clean_reply_text(text) == "Fine by me."


def test_clean_reply_text_cuts_at_signature_delimiter() -> None:
    assert clean_reply_text("Call me.\n--\nJan\n06-12345678") == "Call me."
    assert clean_reply_text("Call me.\n-- \nJan") == "Call me."
    # "---" or "-- x" are not delimiters
    assert clean_reply_text("a\n---\nb\n-- x") == "a\n---\nb\n-- x"


def test_clean_reply_text_keeps_forwarded_content() -> None:
    text = (
        "See the mail below, I never got this parcel.\n\n"
        "---------- Forwarded message ---------\n"
        "From: Carrier <noreply@carrier.example>\n"
        "Date: Fri, 1 Mar 2024 at 17:00\n"
        "Subject: Delivered\n"
        "To: <jan@example.nl>\n\n"
        "Your parcel was delivered to your neighbour.\n"
    )
    assert clean_reply_text(text) == text.strip()


def test_clean_reply_text_reply_written_below_the_quote() -> None:
    text = "On Mon, 4 Mar 2024, support wrote:\n> Which size?\n\nSize 42, please."
    assert clean_reply_text(text) == "Size 42, please."


def test_clean_reply_text_whole_mail_quoted_keeps_the_text_without_markers() -> None:
    text = "> Which size?\n>\n> 42 please"
    assert clean_reply_text(text) == "Which size?\n\n42 please"


def test_clean_reply_text_collapses_blank_lines_and_drops_mobile_footers() -> None:
    text = "a\n\n\n\n\nb\n\nGet Outlook for Android<https://aka.ms/ghei36>\n"
    assert clean_reply_text(text) == "a\n\nb"
    assert clean_reply_text("Ok\nGesendet von meinem iPhone") == "Ok"


def test_clean_reply_text_a_line_starting_with_on_is_not_a_header() -> None:
    text = "On Monday I ordered two mugs.\nOne wrote: broken."
    assert clean_reply_text(text) == text


# -- attachments -----------------------------------------------------------------


PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8
ZIP = b"PK\x03\x04" + bytes(2000)


def test_attachments_only_mail_lists_them_and_has_no_text() -> None:
    raw = raw_mail(
        [*CUSTOMER, 'Content-Type: multipart/mixed; boundary="mix"'],
        b"--mix\n"
        b"Content-Type: application/pdf; name=invoice.pdf\n"
        b'Content-Disposition: attachment; filename="invoice.pdf"\n'
        b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(PDF) + b"--mix\n"
        b"Content-Type: application/zip\n"
        b"Content-Disposition: attachment; filename*=UTF-8''foto%27s%20kapot.zip\n"
        b"Content-Transfer-Encoding: base64\n\n"
        + base64.encodebytes(ZIP)
        + b"--mix--\n",
    )
    mail = parse_inbound(raw)
    assert mail.text == ""
    assert mail.notes == ["no-text-part"]
    assert mail.attachments == [
        Attachment("invoice.pdf", "application/pdf", len(PDF)),
        Attachment("foto's kapot.zip", "application/zip", len(ZIP)),
    ]


def test_body_with_attachments_encoded_names_and_inline_image() -> None:
    raw = raw_mail(
        [*CUSTOMER, 'Content-Type: multipart/mixed; boundary="outer"'],
        b"--outer\n"
        b'Content-Type: multipart/related; boundary="rel"\n\n'
        b"--rel\n"
        b"Content-Type: text/plain; charset=utf-8\n\n"
        b"The mug arrived broken, photo attached.\n"
        b"--rel\n"
        b"Content-Type: image/jpeg\n"
        b"Content-Disposition: inline\n"
        b"Content-Transfer-Encoding: base64\n\n"
        + base64.encodebytes(b"\xff\xd8" + bytes(98))
        + b"--rel--\n"
        b"--outer\n"
        b"Content-Type: text/plain; name=notes.txt\n"
        b'Content-Disposition: attachment; filename="=?UTF-8?Q?n=C3=B6tes.txt?="\n\n'
        b"not the body\n"
        b"--outer\n"
        b"Content-Type: application/octet-stream\n"
        b'Content-Disposition: attachment; filename="../../etc/passwd"\n\n'
        b"root:x:0:0\n"
        b"--outer--\n",
    )
    mail = parse_inbound(raw)
    assert mail.text == "The mug arrived broken, photo attached."
    assert mail.attachments == [
        Attachment(None, "image/jpeg", 100),
        # the line end before a boundary belongs to the boundary (RFC 2046)
        Attachment("nötes.txt", "text/plain", len(b"not the body")),
        Attachment("passwd", "application/octet-stream", len(b"root:x:0:0")),
    ]


def test_a_zip_attachment_is_never_opened() -> None:
    # A zip bomb's compressed bytes: the size listed is the size sent.
    bomb = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\x00" * 100
    raw = raw_mail(
        [*CUSTOMER, 'Content-Type: multipart/mixed; boundary="b"'],
        b"--b\nContent-Type: text/plain\n\nsee zip\n--b\n"
        b"Content-Type: application/zip; name=bomb.zip\n"
        b"Content-Transfer-Encoding: base64\n\n"
        + base64.encodebytes(bomb)
        + b"--b--\n",
    )
    assert parse_inbound(raw).attachments == [
        Attachment("bomb.zip", "application/zip", len(bomb))
    ]


# -- mail that must not be answered ------------------------------------------------


BOUNCE = raw_mail(
    [
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.nl>",
        "To: support@northwind.example",
        "Subject: Undelivered Mail Returned to Sender",
        "Message-ID: <20240304091300.ABC@mx.example.nl>",
        "MIME-Version: 1.0",
        'Content-Type: multipart/report; report-type=delivery-status; boundary="rep"',
    ],
    """--rep
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.nl.
I'm sorry to have to inform you that your message could not be delivered.

--rep
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.nl

Final-Recipient: rfc822; gone@example.nl
Action: failed
Status: 5.1.1

--rep
Content-Type: text/rfc822-headers

From: Northwind Goods support <support@northwind.example>
Message-ID: <bot-9@northwind.example>

--rep--
""",
)


def test_multipart_report_bounce() -> None:
    mail = parse_inbound(BOUNCE, envelope_sender="<>")
    assert mail.auto_reason == "bounce"
    mail = parse_inbound(BOUNCE)
    assert mail.auto_reason == "bounce"


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (["Auto-Submitted: auto-replied"], "auto-submitted"),
        (["Auto-Submitted: auto-generated; owner-email=x@y.z"], "auto-submitted"),
        (["Precedence: bulk"], "precedence:bulk"),
        (["Precedence: junk"], "precedence:junk"),
        (["Precedence: auto_reply"], "precedence:auto_reply"),
        (["X-Autoreply: yes"], "autoreply-header"),
        (["X-Autorespond: Out of office"], "autoreply-header"),
        (["List-Id: <customers.lists.example>"], "list"),
        (["List-Unsubscribe: <mailto:leave@lists.example>"], "list"),
        ([f"{LOOP_HEADER}: northwind.example"], "loop"),
        (["Auto-Submitted: no"], None),
        (["Precedence: first-class"], None),
        (["X-Auto-Response-Suppress: All"], None),
    ],
)
def test_automatic_mail_headers(extra: list[str], reason: str | None) -> None:
    assert parse_inbound(plain("Hello", headers=[*CUSTOMER, *extra])).auto_reason == (
        reason
    )


def test_out_of_office_with_auto_submitted() -> None:
    raw = raw_mail(
        [
            "From: Piet Jansen <piet@example.nl>",
            "To: support@northwind.example",
            "Subject: Automatisch antwoord: Your order NW-10023",
            "Auto-Submitted: auto-replied",
            "X-Auto-Response-Suppress: All",
            "Content-Type: text/plain; charset=utf-8",
        ],
        "Ik ben afwezig tot 11 maart.",
    )
    assert parse_inbound(raw).auto_reason == "auto-submitted"


@pytest.mark.parametrize(
    "subject",
    [
        "Automatic reply: Your order",
        "Out of Office: back Monday",
        "Auto: Re: question",
        "Autosvar: Ordre",
        "Automatisch antwoord: Uw bestelling",
        "Delivery Status Notification (Failure)",
        "Undelivered Mail Returned to Sender",
    ],
)
def test_auto_reply_subjects(subject: str) -> None:
    headers = [h for h in CUSTOMER if not h.startswith("Subject")]
    raw = plain("I am away", headers=[*headers, f"Subject: {subject}"])
    assert parse_inbound(raw).auto_reason == "autoreply-header"


@pytest.mark.parametrize(
    ("sender", "envelope", "reason"),
    [
        ("MAILER-DAEMON@mx.example.nl", None, "mailer-daemon"),
        ("Mail Delivery System <MAILER-DAEMON>", None, "mailer-daemon"),
        ("postmaster@example.nl", None, "mailer-daemon"),
        ("Shop <no-reply@shop.example>", None, "mailer-daemon"),
        ("noreply+abc@shop.example", None, "mailer-daemon"),
        ("do-not-reply@shop.example", None, "mailer-daemon"),
        ("jan@example.nl", "noreply@bounces.example", "mailer-daemon"),
        ("jan@example.nl", "", "bounce"),
        ("jan@example.nl", "<>", "bounce"),
        ("jan@example.nl", "jan@example.nl", None),
        ("Noreply Fan <jan@example.nl>", None, None),
    ],
)
def test_robot_senders(sender: str, envelope: str | None, reason: str | None) -> None:
    headers = [h for h in CUSTOMER if not h.startswith("From")]
    raw = plain("Hello", headers=[*headers, f"From: {sender}"])
    assert parse_inbound(raw, envelope_sender=envelope).auto_reason == reason


def test_our_own_mail_coming_back_is_a_loop_even_as_a_reply() -> None:
    raw = plain(
        "Thanks for your message.",
        headers=[
            "From: Northwind Goods support <support@northwind.example>",
            "To: support@northwind.example",
            "Subject: Re: Re: Re: hello",
            f"{LOOP_HEADER}: northwind.example",
            "Message-ID: <bot-10@northwind.example>",
        ],
    )
    mail = parse_inbound(raw)
    assert mail.auto_reason == "loop"
    assert mail.text == "Thanks for your message."


# -- senders -----------------------------------------------------------------------


def test_mail_without_from() -> None:
    headers = [h for h in CUSTOMER if not h.startswith("From")]
    mail = parse_inbound(plain("Hello", headers=headers))
    assert mail.from_address is None
    assert mail.from_name is None
    assert mail.text == "Hello"


def test_from_with_encoded_crlf_in_the_name() -> None:
    headers = [h for h in CUSTOMER if not h.startswith("From")]
    raw = plain(
        "Hello",
        headers=[
            *headers,
            "From: =?utf-8?q?Jan=0D=0ABcc=3A_x=40evil?= <jan@example.nl>",
        ],
    )
    mail = parse_inbound(raw)
    assert mail.from_address == "jan@example.nl"
    assert mail.from_name == "Jan Bcc: x@evil"


def test_from_with_a_bare_cr_cannot_smuggle_a_header_into_the_address() -> None:
    raw = b"From: jan@example.nl\rBcc: victim@example.com\r\nSubject: x\r\n\r\nHi\r\n"
    mail = parse_inbound(raw)
    assert mail.from_address == "jan@example.nl"
    assert mail.text == "Hi"


@pytest.mark.parametrize(
    "sender",
    [
        "undisclosed-recipients:;",
        "Jan de Vries",
        "<>",
        "@example.nl",
        "jan@",
        f"{'a' * 250}@example.nl",
    ],
)
def test_unusable_from_gives_no_address(sender: str) -> None:
    headers = [h for h in CUSTOMER if not h.startswith("From")]
    assert (
        parse_inbound(plain("Hi", headers=[*headers, f"From: {sender}"])).from_address
        is None
    )


def test_from_header_the_parser_crashes_on_falls_back_to_the_raw_text() -> None:
    # policy.default raises UnboundLocalError on this display name (3.10).
    headers = [h for h in CUSTOMER if not h.startswith("From")]
    raw = plain("Hi", headers=[*headers, "From: =?utf-8?q?=?@[ <jan@example.nl>"])
    mail = parse_inbound(raw)
    assert mail.from_address == "jan@example.nl"
    assert "bad-header" in mail.notes


def test_content_type_the_parser_crashes_on_is_read_the_legacy_way() -> None:
    # email.message_from_bytes raises IndexError on this Content-Type (3.10).
    raw = raw_mail(
        [*CUSTOMER, "Content-Type: text/plain; charset=utf-8; a*"],
        "Where is my parcel?",
    )
    mail = parse_inbound(raw)
    assert mail.from_address == "jan.devries@example.nl"
    assert mail.message_id == "<CAK7xYz1@mail.gmail.com>"
    assert mail.notes == ["bad-header"]
    assert mail.text == "Where is my parcel?"
    assert mail.subject == "Re: Your order NW-10023"


# -- Message-IDs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<abc@example.nl>", "<abc@example.nl>"),
        ("  <abc@example.nl>  ", "<abc@example.nl>"),
        ("abc@example.nl", "<abc@example.nl>"),
        ("<abc@example.nl> (Jan's message of Monday)", "<abc@example.nl>"),
        ("<bad id@x> <good@x>", "<good@x>"),
        ("<abc@exa\r\n mple.nl>", None),
        ("<noatsign>", None),
        ("<>", None),
        ("garbage with spaces", None),
        ("<ïd@example.nl>", None),
        (f"<{'a' * 260}@x>", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_message_id(value: str | None, expected: str | None) -> None:
    assert normalize_message_id(value) == expected


def test_missing_message_id_and_garbage_threading_headers() -> None:
    raw = plain(
        "Hi",
        headers=[
            "From: jan@example.nl",
            "In-Reply-To: not an id",
            "References: junk <x@y> more junk <x@y> <z@y>",
        ],
    )
    mail = parse_inbound(raw)
    assert mail.message_id is None
    assert mail.in_reply_to is None
    assert mail.references == ["<x@y>", "<z@y>"]


def test_references_keep_the_newest_50_in_order() -> None:
    ids = [f"<m{i}@example.nl>" for i in range(60)]
    folded = "\r\n ".join(ids)
    mail = parse_inbound(plain("Hi", headers=["From: a@b.nl", f"References: {folded}"]))
    assert mail.references == ids[10:]


def test_in_reply_to_takes_the_first_id() -> None:
    raw = plain("Hi", headers=["From: a@b.nl", "In-Reply-To: <one@x.nl> <two@x.nl>"])
    assert parse_inbound(raw).in_reply_to == "<one@x.nl>"


# -- bad input ---------------------------------------------------------------------


def test_empty_body() -> None:
    mail = parse_inbound(plain(""))
    assert mail.text == ""
    assert mail.notes == ["empty"]
    assert mail.from_address == "jan.devries@example.nl"


def test_headers_only_without_body() -> None:
    mail = parse_inbound(b"From: jan@example.nl\r\nSubject: ping\r\n")
    assert mail.text == ""
    assert mail.subject == "ping"


@pytest.mark.parametrize("raw", [b"", b"  \r\n\r\n", "From: a@b.nl", None, 42])
def test_unreadable_input_raises_unreadable_mail(raw: object) -> None:
    with pytest.raises(UnreadableMail):
        parse_inbound(raw)  # type: ignore[arg-type]


@pytest.mark.parametrize("limit", ["max_parts", "max_depth", "max_text_chars"])
def test_limits_must_be_positive(limit: str) -> None:
    with pytest.raises(ValueError, match=limit):
        parse_inbound(GMAIL_REPLY, **{limit: 0})


def test_a_2_mb_text_body_is_truncated() -> None:
    line = "I would like to return these items, please. " * 2 + "\n"
    body = line * (2_000_000 // len(line))
    started = time.monotonic()
    mail = parse_inbound(plain(body))
    assert time.monotonic() - started < HANG_GUARD
    assert len(mail.text) == 20000
    assert mail.text.startswith("I would like to return")
    assert mail.notes == ["truncated"]
    assert len(parse_inbound(plain(body), max_text_chars=100).text) <= 100


def mime_bomb(parts: int) -> bytes:
    chunks = [
        b"--bomb\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i
        for i in range(parts)
    ]
    return raw_mail(
        [*CUSTOMER, 'Content-Type: multipart/mixed; boundary="bomb"'],
        b"".join(chunks) + b"--bomb--\r\n",
    )


def test_mime_bomb_of_10000_parts() -> None:
    raw = mime_bomb(10_000)
    started = time.monotonic()
    mail = parse_inbound(raw)
    assert time.monotonic() - started < HANG_GUARD
    assert mail.text == "part 0"
    assert mail.notes == ["too-many-parts"]
    assert mail.from_address == "jan.devries@example.nl"


def test_parts_beyond_the_limit_never_reach_the_parser() -> None:
    # 60,000 parts (2.9 MB, under the listener's size limit) take the email
    # parser itself over 10 s; counted and cut before parsing they cost nothing.
    raw = mime_bomb(60_000)
    started = time.monotonic()
    mail = parse_inbound(raw)
    assert time.monotonic() - started < HANG_GUARD
    assert mail.notes == ["too-many-parts"]


def test_a_mail_at_the_part_limit_is_not_cut() -> None:
    mail = parse_inbound(mime_bomb(5), max_parts=6)
    assert mail.notes == []


def nested(levels: int) -> bytes:
    body = b""
    for level in range(1, levels):
        body += b"--n%d\r\nContent-Type: multipart/mixed; boundary=n%d\r\n\r\n" % (
            level - 1,
            level,
        )
    body += b"--n%d\r\nContent-Type: text/plain\r\n\r\ndeep text\r\n" % (levels - 1)
    for level in range(levels - 1, -1, -1):
        body += b"--n%d--\r\n" % level
    return raw_mail([*CUSTOMER, "Content-Type: multipart/mixed; boundary=n0"], body)


def test_50_level_nested_multipart() -> None:
    raw = nested(50)
    started = time.monotonic()
    mail = parse_inbound(raw)
    assert time.monotonic() - started < HANG_GUARD
    assert mail.text == ""
    assert mail.notes == ["no-text-part", "too-deep"]


def test_nesting_within_the_depth_limit_is_followed() -> None:
    assert parse_inbound(nested(5)).text == "deep text"
    assert parse_inbound(nested(50), max_depth=60).text == "deep text"


def test_thousands_of_nested_forwarded_messages() -> None:
    raw = b"From: a@b.nl\r\nContent-Type: message/rfc822\r\n\r\n" * 5000 + b"x"
    started = time.monotonic()
    mail = parse_inbound(raw)
    assert time.monotonic() - started < HANG_GUARD
    assert mail.notes == ["no-text-part", "too-many-parts"]
    assert [a.content_type for a in mail.attachments] == ["message/rfc822"]


def test_random_damage_never_raises() -> None:
    rng = random.Random(1404)
    samples = [GMAIL_REPLY, OUTLOOK_REPLY, GERMAN_LATIN1, HTML_ONLY, BOUNCE]
    pieces = [b"\r\n", b"--", b"=?utf-8?q?", b"?=", b"<", b">", b"\xff", b"\x00"]
    pieces += [b"boundary=", b"Content-Type: message/rfc822\r\n", b";", b'"', b"@"]
    for _ in range(400):
        data = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(data))
            if rng.random() < 0.5:
                data[at : at + rng.randint(1, 5)] = rng.choice(pieces)
            else:
                del data[at : at + rng.randint(1, 40)]
        if not bytes(data).strip():
            continue
        mail = parse_inbound(bytes(data))
        assert isinstance(mail, InboundMail)
        assert all("\n" not in s for s in (mail.subject, mail.from_name or ""))
    for _ in range(100):
        noise = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3000)))
        if noise.strip():
            assert isinstance(parse_inbound(noise), InboundMail)


# -- more reply shapes -------------------------------------------------------------


def test_format_flowed_soft_breaks_are_joined() -> None:
    raw = raw_mail(
        [*CUSTOMER, "Content-Type: text/plain; charset=utf-8; format=flowed"],
        "Hi, the parcel still has not arrived. Can you check \n"
        "where it is?\n"
        " From now on I am at home.\n"
        "\n"
        "-- \n"
        "Jan\n",
    )
    assert parse_inbound(raw).text == (
        "Hi, the parcel still has not arrived. Can you check where it is?\n"
        "From now on I am at home."
    )


def test_format_flowed_delsp_joins_without_the_space() -> None:
    raw = raw_mail(
        [
            *CUSTOMER,
            "Content-Type: text/plain; charset=utf-8; format=flowed; delsp=yes",
        ],
        "注文番号は \nNW-10050です。\n",
    )
    assert parse_inbound(raw).text == "注文番号はNW-10050です。"


def test_empty_text_part_beside_html_uses_the_html() -> None:
    raw = raw_mail(
        [*CUSTOMER, 'Content-Type: multipart/alternative; boundary="alt"'],
        "--alt\nContent-Type: text/plain; charset=utf-8\n\n\n"
        "--alt\nContent-Type: text/html; charset=utf-8\n\n"
        "<p>Is the blue mug back in stock?</p>\n"
        "--alt--\n",
    )
    mail = parse_inbound(raw)
    assert mail.text == "Is the blue mug back in stock?"
    assert mail.notes == ["html-only"]


@pytest.mark.parametrize(
    "block",
    [
        "Van: Northwind Goods support <support@northwind.example>\n"
        "Verzonden: dinsdag 5 maart 2024 10:02\n"
        "Aan: Jan <jan@example.nl>\n"
        "Onderwerp: Retourlabel\n",
        "Von: Northwind Goods support <support@northwind.example>\n"
        "Gesendet: Dienstag, 5. März 2024 10:02\n"
        "An: Hans <hans@example.de>\n"
        "Betreff: Rücksendeetikett\n",
        "From: Northwind Goods support <support@northwind.example>\n"
        "Date: Tuesday, 5 March 2024 at 10:02\n"
        "To: Sarah <sarah@contoso.example>\n"
        "Subject: Return label\n",
        "Le mar. 5 mars 2024 à 10:02, Northwind Goods support "
        "<support@northwind.example> a écrit :\n",
    ],
    ids=["outlook-nl", "outlook-de", "outlook-mac", "gmail-fr"],
)
def test_localised_reply_headers(block: str) -> None:
    text = f"Bedankt / Danke / Merci.\n\n{block}\nHere is your return label.\n"
    assert clean_reply_text(text) == "Bedankt / Danke / Merci."


def test_outlook_block_alone_is_kept_as_forwarded_content() -> None:
    text = (
        "From: Carrier <info@carrier.example>\n"
        "Sent: Friday, 1 March 2024 17:00\n"
        "To: jan@example.nl\n"
        "Subject: Delivered\n\n"
        "Your parcel was delivered to your neighbour.\n"
        "-- \n"
        "Carrier customer service"
    )
    assert clean_reply_text(text) == text.replace("-- \n", "--\n")  # rstripped
