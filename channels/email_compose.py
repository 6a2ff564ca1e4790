"""Mail we send: bot and agent replies in a thread, one-time codes and notices.

Pure functions, no network: the outbox worker (``channels.email_worker``) hands
the ``EmailMessage`` built here to the relay.

- **Replies** (``compose_reply``): one mail per inbound mail, collecting the
  bot's messages; ``In-Reply-To`` the customer's mail, ``References`` the
  thread's chain plus that mail (deduplicated, at most ``MAX_REFERENCES``: the
  first one and the newest ones), ``Re:`` once in the subject. Bot answers carry
  ``Auto-Submitted: auto-replied`` (RFC 3834), agent replies do not. Buttons
  become a numbered list (``numbered_choices``) the customer answers with the
  number; ``button_choice`` maps that answer back to the button's payload.
- **Notices** (``compose_notice``): codes and change notices, single mails with
  ``Auto-Submitted: auto-generated``.

Every mail is ``multipart/alternative`` (UTF-8 text/plain, then a simple
text/html with every text escaped; 7-bit clean, see ``POLICY``) and carries
``LOOP_HEADER`` (our From domain) so that a mail of ours coming back in is
recognised (``channels.email_parse``); automatic mail also asks Exchange not
to answer it (``X-Auto-Response-Suppress: All``).

Message-ID headers (``Message-ID``, ``In-Reply-To``, ``References``) are
folded between ids and never turned into RFC 2047 encoded words, which
``policy.default`` does to ids longer than a line. No header injection: CR/LF
in a subject or a button title become spaces; an address with CR/LF,
whitespace, non-ASCII or no ``local@domain`` shape raises ``ValueError``.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Iterable
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import Policy, default
from email.utils import format_datetime, make_msgid

LOOP_HEADER = "X-Northwind-Loop"
# 7-bit clean on the wire: non-ASCII bodies are quoted-printable or base64,
# so any relay takes them (no 8BITMIME needed).
POLICY = default.clone(cte_type="7bit")
BRAND = "Northwind Goods"
FROM_NAME = f"{BRAND} support"
EMPTY_SUBJECT_REPLY = f"Re: Your message to {BRAND}"
NOTICE_SUBJECT = f"A message from {BRAND}"
CHOICES_INTRO = "Reply with the number of your choice:"
MAX_SUBJECT = 200
MAX_REFERENCES = 20
MAX_ADDRESS = 254
MAX_MESSAGE_ID = 255
# A Message-ID in its "<...>" form: "<left@right>", both sides printable ASCII
# without space, "<", ">" or "@" (RFC 5322 msg-id, relaxed to what real mailers
# send; one "@" keeps the search linear).
ID_CHARS = r"[\x21-\x3b\x3d\x3f\x41-\x7e]+"
MESSAGE_ID = re.compile(f"<{ID_CHARS}@{ID_CHARS}>")
REPLY_PREFIX = re.compile(
    r"^\s*(?:re|aw|sv|vs|antw|antwoord|antwort|odp|rif)\s*(?:\[\d+\]|\(\d+\))?\s*:\s*",
    re.IGNORECASE,
)
CHOICE_NUMBER = re.compile(r"#?\s*(\d{1,3})\s*[.):]?")
WHITESPACE = re.compile(r"\s+")
ADDRESS_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f<>,;\"]")


class _IdHeader(str):
    """A header of Message-IDs: folded between ids, never encoded.

    ``policy.default`` takes an object with a ``name`` as a ready header and
    calls its ``fold``; its unstructured folding would turn an id longer than a
    line into encoded words that no mail client matches.
    """

    name: str
    ids: tuple[str, ...]

    def __new__(cls, name: str, ids: Iterable[str]) -> _IdHeader:
        ids = tuple(ids)
        self = super().__new__(cls, " ".join(ids))
        self.name = name
        self.ids = ids
        return self

    def __getnewargs__(self) -> tuple[str, tuple[str, ...]]:
        """Copies and pickles are made from the name and the ids."""
        return self.name, self.ids

    def fold(self, *, policy: Policy) -> str:
        """``Name: <id> <id>`` with a line break before an id that does not fit."""
        limit = policy.max_line_length or 78
        lines: list[str] = []
        line = f"{self.name}:"
        for message_id in self.ids:
            if len(line) + 1 + len(message_id) > limit and line != f"{self.name}:":
                lines.append(line)
                line = ""
            line = f"{line} {message_id}"
        lines.append(line)
        return policy.linesep.join(lines) + policy.linesep


def checked_message_id(value: str | None) -> str | None:
    """``value`` if it is exactly one ``<local@domain>`` Message-ID, else None."""
    if not isinstance(value, str) or len(value) > MAX_MESSAGE_ID:
        return None
    value = value.strip()
    return value if MESSAGE_ID.fullmatch(value) else None


def _one_line(text: str | None) -> str:
    """``text`` with every run of whitespace (CR/LF included) as one space."""
    return WHITESPACE.sub(" ", text or "").strip()


def checked_address(value: str, what: str = "address") -> str:
    """A bare ``local@domain`` address, stripped, for a header.

    Raises:
        ValueError: not a string, longer than 254 characters, containing CR/LF,
            whitespace, control characters, ``<>,;"`` or non-ASCII (we do not
            send SMTPUTF8 mail), or not ``local@domain``.
    """
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    value = value.strip()
    local, at, domain = value.rpartition("@")
    if (
        not at
        or not local
        or not domain
        or len(value) > MAX_ADDRESS
        or not value.isascii()
        or ADDRESS_FORBIDDEN.search(value)
    ):
        raise ValueError(f"{what} is not a usable e-mail address")
    return value


def reply_subject(subject: str | None) -> str:
    """``Re: <subject>`` with earlier Re:/AW:/SV:/Antw: prefixes removed.

    Whitespace (CR/LF included) is collapsed; an empty subject gives
    ``EMPTY_SUBJECT_REPLY``; the result has at most ``MAX_SUBJECT`` characters.
    """
    base = _one_line(subject)
    while True:
        stripped = REPLY_PREFIX.sub("", base, count=1)
        if stripped == base:
            break
        base = stripped
    if not base:
        return EMPTY_SUBJECT_REPLY
    return f"Re: {base}"[:MAX_SUBJECT].rstrip()


def usable_buttons(buttons: Iterable[object] | None) -> list[dict[str, str]]:
    """The buttons that can be offered: dicts with a non-empty title and a payload.

    ``numbered_choices`` and ``button_choice`` number this list, so the number a
    customer answers with always means the button that was shown under it.
    Titles are put on one line.
    """
    kept = []
    for button in buttons or ():
        if not isinstance(button, dict):
            continue
        title, payload = button.get("title"), button.get("payload")
        if not isinstance(title, str) or not isinstance(payload, str):
            continue
        title = _one_line(title)
        if title:
            kept.append({"title": title, "payload": payload})
    return kept


def numbered_choices(buttons: list[dict] | None) -> str:
    """The buttons as a numbered list under ``CHOICES_INTRO``, one per line.

    ``Reply with the number of your choice:``, then ``1. Yes``, ``2. No``, ...
    Returns "" when no button is usable (see ``usable_buttons``).
    """
    usable = usable_buttons(buttons)
    if not usable:
        return ""
    lines = [f"{number}. {b['title']}" for number, b in enumerate(usable, start=1)]
    return "\n".join([CHOICES_INTRO, *lines])


def button_choice(text: str, buttons: list[dict] | None) -> str | None:
    """The payload the customer chose with a reply, or None.

    ``text`` (already quote-stripped) chooses when it is just a number from 1 to
    the number of usable buttons, with an optional ``#`` before and ``.``,
    ``)`` or ``:`` after it (``"2"``, ``" 2. "``, ``"#2"``, ``"2)"``), or
    exactly a button's title (case and surrounding whitespace ignored).
    Anything else (``"option 2"``, ``"2 please"``, ``"0"``) is not a choice.
    """
    usable = usable_buttons(buttons)
    if not usable or not isinstance(text, str):
        return None
    answer = _one_line(text)
    number = CHOICE_NUMBER.fullmatch(answer)
    if number:
        index = int(number.group(1))
        return usable[index - 1]["payload"] if 1 <= index <= len(usable) else None
    folded = answer.casefold()
    for button in usable:
        if button["title"].casefold() == folded:
            return button["payload"]
    return None


def _references(chain: Iterable[str], in_reply_to: str | None) -> list[str]:
    """Valid, distinct ids of ``chain`` then ``in_reply_to``: the first and newest."""
    ids: list[str] = []
    for value in [*chain, in_reply_to]:
        checked = checked_message_id(value)
        if checked and checked not in ids:
            ids.append(checked)
    if len(ids) > MAX_REFERENCES:
        ids = [ids[0], *ids[-(MAX_REFERENCES - 1) :]]
    return ids


def _html(paragraphs: list[str], choices: list[str]) -> str:
    body = [
        "<p>" + html.escape(text).replace("\n", "<br>\n") + "</p>"
        for text in paragraphs
    ]
    if choices:
        body.append(f"<p>{html.escape(CHOICES_INTRO)}</p>")
        items = "".join(f"<li>{html.escape(title)}</li>" for title in choices)
        body.append(f"<ol>{items}</ol>")
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>\n'
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _alternatives(mail: EmailMessage, plain: str, markup: str) -> None:
    """The body: UTF-8 text/plain, then text/html, as multipart/alternative."""
    mail.set_content(plain + "\n", charset="utf-8")
    mail.add_alternative(markup, subtype="html", charset="utf-8")
    for part in mail.iter_parts():
        del part["MIME-Version"]  # add_alternative leaves one on the parts


def _base(
    *,
    from_address: str,
    to_address: str,
    subject: str,
    message_id: str | None,
    auto_submitted: str | None,
) -> EmailMessage:
    sender = checked_address(from_address, "from_address")
    recipient = checked_address(to_address, "to_address")
    domain = sender.rpartition("@")[2]
    if message_id is None:
        message_id = make_msgid(domain=domain)
    checked_id = checked_message_id(message_id)
    if checked_id is None:
        raise ValueError("message_id must be one <local@domain> Message-ID")
    mail = EmailMessage(policy=POLICY)
    mail["Message-ID"] = _IdHeader("Message-ID", [checked_id])
    mail["Date"] = format_datetime(dt.datetime.now(dt.timezone.utc))
    mail["From"] = Address(display_name=FROM_NAME, addr_spec=sender)
    mail["To"] = Address(addr_spec=recipient)
    mail["Subject"] = subject
    if auto_submitted:
        mail["Auto-Submitted"] = auto_submitted
        mail["X-Auto-Response-Suppress"] = "All"
    mail[LOOP_HEADER] = domain
    return mail


def compose_reply(
    *,
    from_address: str,
    to_address: str,
    subject: str | None,
    texts: list[str],
    buttons: list[dict] | None = None,
    in_reply_to: str | None = None,
    references: Iterable[str] = (),
    auto_submitted: bool = True,
    message_id: str | None = None,
) -> EmailMessage:
    """One reply in a thread, collecting ``texts`` and the ``buttons`` (see module).

    Args:
        from_address: our address (its domain names the Message-ID and the loop
            header).
        to_address: the customer's address.
        subject: the thread's subject (``reply_subject`` makes it ``Re: ...``).
        texts: the messages, one paragraph each (blank ones are skipped).
        buttons: Rasa buttons ``{"title", "payload"}``, shown numbered.
        in_reply_to: the Message-ID of the mail answered (invalid -> left out).
        references: the thread's Message-IDs, oldest first (invalid ones left out).
        auto_submitted: True for bot answers (``Auto-Submitted: auto-replied``);
            False for a person's reply.
        message_id: our Message-ID (default: a new one under our domain).

    Raises:
        ValueError: an unusable address or ``message_id``, or nothing to send
            (no text and no usable button).
    """
    paragraphs = [text.strip() for text in texts if isinstance(text, str)]
    paragraphs = [text for text in paragraphs if text]
    choices = [button["title"] for button in usable_buttons(buttons)]
    if not paragraphs and not choices:
        raise ValueError("a reply needs a text or a button")
    mail = _base(
        from_address=from_address,
        to_address=to_address,
        subject=reply_subject(subject),
        message_id=message_id,
        auto_submitted="auto-replied" if auto_submitted else None,
    )
    answered = checked_message_id(in_reply_to)
    if answered:
        mail["In-Reply-To"] = _IdHeader("In-Reply-To", [answered])
    chain = _references(references or (), answered)
    if chain:
        mail["References"] = _IdHeader("References", chain)
    plain = "\n\n".join([*paragraphs, numbered_choices(buttons)]).strip()
    _alternatives(mail, plain, _html(paragraphs, choices))
    return mail


def compose_notice(
    *,
    from_address: str,
    to_address: str,
    subject: str,
    body: str,
    message_id: str | None = None,
) -> EmailMessage:
    """A single automatic mail (a one-time code, a change notice).

    ``Auto-Submitted: auto-generated``; the body as plain text and as escaped
    HTML paragraphs (split at blank lines). An empty subject becomes
    ``NOTICE_SUBJECT``; CR/LF in it become spaces.

    Raises:
        ValueError: an unusable address or ``message_id``, or an empty body.
    """
    text = body.strip() if isinstance(body, str) else ""
    if not text:
        raise ValueError("a notice needs a body")
    mail = _base(
        from_address=from_address,
        to_address=to_address,
        subject=_one_line(subject)[:MAX_SUBJECT] or NOTICE_SUBJECT,
        message_id=message_id,
        auto_submitted="auto-generated",
    )
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    _alternatives(mail, text, _html(paragraphs, []))
    return mail
