"""Inbound mail bytes -> ``InboundMail``: the MIME side, pure, no network.

``parse_inbound`` reads raw RFC 5322 bytes with ``email`` (``policy.default``)
and returns an ``InboundMail``: threading ids, the sender, the subject, the
customer's *new* text, the attachments (listed, never kept) and, when the mail
must not be answered, why (``auto_reason``). It never raises for bytes that are
not empty: malformed headers fall back to their raw text, broken transfer
encodings and charsets are decoded as well as they can be, and what was odd is
named in ``notes`` (never with content):

- ``html-only``: the text came from the HTML part (``html_to_text``);
- ``no-text-part``: no text/plain or text/html body part (text is "");
- ``empty``: there was a body part but no text in it;
- ``charset-replaced``: the declared charset was unknown or did not fit;
- ``bad-encoding``: broken base64 (decoded as far as it goes);
- ``bad-header``: a header that could not be parsed (its raw text was used;
  a mail ``policy.default`` cannot parse at all is read with ``compat32``);
- ``bad-structure``: not even that worked: the headers only, no body;
- ``too-many-parts`` (more than ``max_parts``), ``too-deep`` (multiparts nested
  deeper than ``max_depth``): the rest of the tree is not looked at;
- ``truncated``: the text was cut at ``max_text_chars``.

MIME bombs: the parts are counted in the raw bytes before parsing (boundary
lines of declared boundaries and ``message/*`` parts) and the mail is cut after
``max_parts`` of them, so 10,000 parts or deep nesting never reach the parser;
the tree is then walked without recursion. Nothing is ever decompressed. The
size limit of a whole mail is the SMTP listener's.

Text: the first text/plain part that is not an attachment (``format=flowed``
joined), else the first text/html part (``html_to_text``), goes through
``clean_reply_text``, ``channels.text.clean_text`` and the length limit; those
text functions live in ``channels.email_text``, the reasons not to answer in
``channels.email_auto``. ``html_to_text`` and ``clean_reply_text`` are
re-exported here.
"""

from __future__ import annotations

import base64
import codecs
import email
import email.errors
import email.policy
import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.headerregistry import BaseHeader
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses

from channels.email_auto import BOUNCE_TYPES, auto_reason
from channels.email_compose import MAX_ADDRESS, MESSAGE_ID, checked_message_id
from channels.email_text import clean_reply_text, html_to_text, unflow
from channels.text import clean_text

__all__ = [
    "Attachment",
    "InboundMail",
    "UnreadableMail",
    "clean_reply_text",
    "html_to_text",
    "normalize_message_id",
    "parse_inbound",
]

MAX_REFERENCES = 50
MAX_SUBJECT = 200
MAX_NAME = 200
MAX_FIELD = 255  # attachment filename and content type
MAX_HEADER_SCAN = 65536  # characters of an id header searched for Message-IDs
TEXT_INPUT_FACTOR = 20  # body characters read per text character kept
HTML_INPUT_FACTOR = 50  # HTML characters read per text character kept
BASE64_DEFECTS = (
    email.errors.InvalidBase64PaddingDefect,
    email.errors.InvalidBase64CharactersDefect,
    email.errors.InvalidBase64LengthDefect,
)

# -- MIME bomb pre-scan (bytes) ------------------------------------------------
BOUNDARY_PARAM = re.compile(
    rb'boundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))', re.IGNORECASE
)
DELIMITER_LINE = re.compile(rb"^--([^\r\n]*)", re.MULTILINE)
MESSAGE_PART = re.compile(
    rb"^content-type:[ \t]*message/", re.IGNORECASE | re.MULTILINE
)

ANGLE_ADDRESS = re.compile(r"<([^<>\s@]+@[^<>\s@]+)>")
BASE64_NOISE = re.compile(rb"[^A-Za-z0-9+/]")


@dataclass(frozen=True)
class Attachment:
    """An attachment: listed, never stored."""

    filename: str | None
    content_type: str
    size: int  # bytes of the decoded payload (the encoded length if undecodable)


@dataclass(frozen=True)
class InboundMail:
    """What the channel needs of one inbound mail (see the module docstring)."""

    message_id: str | None  # "<...>"; None if absent or garbage
    in_reply_to: str | None  # the first Message-ID of In-Reply-To
    references: list[str]  # References' Message-IDs in order, the newest 50
    from_address: str | None  # addr-spec, lower-cased; None if no usable From
    from_name: str | None
    subject: str  # decoded, on one line, "" if none, at most 200 characters
    text: str  # the customer's new text: quotes and signature stripped
    attachments: list[Attachment]
    auto_reason: str | None  # why it must not be answered, or None
    notes: list[str]  # what was odd, without content (see the module docstring)


class UnreadableMail(ValueError):
    """The input cannot be read as a mail at all (not bytes, or empty)."""


# -- small helpers -------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _as_text(value: object) -> str:
    """A header value as text: 8-bit bytes read as UTF-8, controls removed."""
    text = str(value)
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeError:
        pass
    return clean_text(text)


def _raw_values(msg: Message, name: str) -> list[str]:
    """The unparsed, unfolded values of header ``name`` (never raises)."""
    wanted = name.lower()
    try:
        items = list(msg.raw_items())
    except Exception:  # noqa: BLE001 - a broken model: no headers
        return []
    values = []
    for key, value in items:
        if isinstance(key, str) and key.lower() == wanted:
            values.append(_as_text(re.sub(r"[\r\n]", "", str(value))))
    return values


def _decoded_words(raw: str) -> str:
    """RFC 2047 encoded words of a raw header decoded; the raw text if that fails."""
    try:
        return _as_text(make_header(decode_header(raw)))
    except Exception:  # noqa: BLE001 - unknown charset, bad encoded word
        return _as_text(raw)


def _header(msg: Message, name: str, notes: set[str]) -> str | None:
    """Header ``name`` decoded by the policy; its raw text if parsing fails."""
    try:
        value = msg.get(name)
        if value is None:
            return None
        if isinstance(value, BaseHeader):
            return _as_text(value)
        return _decoded_words(_as_text(value))  # compat32: the raw text
    except Exception:  # noqa: BLE001 - policy.default header classes can raise
        notes.add("bad-header")
        raws = _raw_values(msg, name)
        return _decoded_words(raws[0]) if raws else None


# -- Message-IDs -----------------------------------------------------------------


def normalize_message_id(value: str | None) -> str | None:
    """The first valid ``<left@right>`` Message-ID in ``value``, or None.

    A bare ``left@right`` without brackets is accepted and bracketed. Ids longer
    than 255 characters, with spaces, non-ASCII or without one ``@`` are garbage.
    """
    if not isinstance(value, str):
        return None
    text = re.sub(r"[\r\n]", "", value[:MAX_HEADER_SCAN])
    for match in MESSAGE_ID.finditer(text):
        checked = checked_message_id(match.group(0))
        if checked:
            return checked
    bare = text.strip()
    if bare and "<" not in bare and ">" not in bare:
        return checked_message_id(f"<{bare}>")
    return None


def _references(raw: str | None) -> list[str]:
    """The distinct valid ids of a References value, in order, the newest 50."""
    if not raw:
        return []
    ids: list[str] = []
    for match in MESSAGE_ID.finditer(raw[-MAX_HEADER_SCAN:]):
        checked = checked_message_id(match.group(0))
        if checked and checked not in ids:
            ids.append(checked)
    return ids[-MAX_REFERENCES:]


# -- addresses -----------------------------------------------------------------


def _usable_address(addr: str) -> str | None:
    addr = clean_text(addr).strip() if isinstance(addr, str) else ""
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain or len(addr) > MAX_ADDRESS:
        return None
    if re.search(r"[\s<>]", addr):
        return None
    return addr.lower()


def _sender_pairs(msg: Message, notes: set[str]) -> list[tuple[str, str]]:
    """``(display name, address)`` of the From header, best effort.

    Addresses come from the raw header text, never from inside an encoded
    word (``=?utf-8?q?x=40evil?=`` is a name, not an address): first
    ``getaddresses``, then the policy's parse (only addresses written out in
    the raw text), then any ``<local@domain>`` in it.
    """
    raws = _raw_values(msg, "From")
    if not raws:
        return []
    raw = raws[0]
    pairs: list[tuple[str, str]] = []
    try:
        pairs = [(_decoded_words(n), a) for n, a in getaddresses([raw])]
    except Exception:  # noqa: BLE001 - getaddresses on garbage
        pairs = []
    if any(_usable_address(addr) for _, addr in pairs):
        return pairs
    try:
        header = msg.get("From")
        addresses = header.addresses if header is not None else ()
        written = raw.lower()
        pairs += [
            (a.display_name, a.addr_spec)
            for a in addresses
            if a.addr_spec and a.addr_spec.lower() in written
        ]
    except Exception:  # noqa: BLE001 - policy.default raises on some From values
        notes.add("bad-header")
    pairs += [("", addr) for addr in ANGLE_ADDRESS.findall(raw)]
    return pairs


# -- the MIME tree ---------------------------------------------------------------


def _part_starts(raw: bytes) -> Iterator[int]:
    """Offsets where a MIME part starts in ``raw``: delimiter lines, message/*."""
    boundaries = {m.group(1) or m.group(2) for m in BOUNDARY_PARAM.finditer(raw)}
    message_parts = (m.start() for m in MESSAGE_PART.finditer(raw))
    if not boundaries:
        return message_parts
    delimiters = (
        m.start()
        for m in DELIMITER_LINE.finditer(raw)
        if m.group(1).rstrip(b" \t") in boundaries
    )
    return heapq.merge(delimiters, message_parts)


def _cut_parts(raw: bytes, max_parts: int) -> bytes | None:
    """``raw`` cut before its ``max_parts + 1``-th part; None if it has fewer."""
    for count, offset in enumerate(_part_starts(raw), start=1):
        if count > max_parts:
            return raw[:offset]
    return None


def _headers_only(raw: bytes, notes: set[str]) -> Message:
    try:
        return BytesParser(policy=email.policy.compat32).parsebytes(
            raw, headersonly=True
        )
    except Exception:  # noqa: BLE001 - not even headers: an empty message
        notes.add("bad-structure")
        return Message()


def _read(raw: bytes, notes: set[str]) -> Message:
    """The parsed message, best effort.

    ``policy.default`` first; where its header parser raises (it does on some
    malformed Content-Type parameters), the legacy ``compat32`` parser, which
    keeps headers as text; if that fails too, the headers alone.
    """
    try:
        return email.message_from_bytes(raw, policy=email.policy.default)
    except RecursionError:
        notes.add("too-deep")
        return _headers_only(raw, notes)
    except Exception:  # noqa: BLE001 - the parser is best effort; so are we
        notes.add("bad-header")
    try:
        return email.message_from_bytes(raw, policy=email.policy.compat32)
    except RecursionError:
        notes.add("too-deep")
    except Exception:  # noqa: BLE001
        notes.add("bad-structure")
    return _headers_only(raw, notes)


def _content_type(part: Message) -> str:
    try:
        return str(part.get_content_type()).lower()[:MAX_FIELD]
    except Exception:  # noqa: BLE001 - a broken Content-Type header
        return "application/octet-stream"


def _disposition(part: Message) -> str | None:
    try:
        value = part.get_content_disposition()
    except Exception:  # noqa: BLE001
        return None
    return value.lower() if isinstance(value, str) else None


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:  # noqa: BLE001 - broken RFC 2231 parameters
        return None
    if not isinstance(name, str):
        return None
    if "=?" in name:
        name = _decoded_words(name)
    name = _one_line(clean_text(_as_text(name)))
    name = re.split(r"[\\/]", name)[-1].strip()
    return name[:MAX_FIELD] or None


def _children(part: Message) -> list[Message]:
    try:
        payload = part.get_payload()
    except Exception:  # noqa: BLE001
        return []
    if not isinstance(payload, list):
        return []
    return [child for child in payload if isinstance(child, Message)]


def _payload_bytes(part: Message, notes: set[str]) -> bytes:
    """The decoded payload of a leaf part (best effort, never raises)."""
    defects = len(part.defects)
    try:
        data = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001 - a broken Content-Transfer-Encoding
        notes.add("bad-encoding")
        try:
            data = part.get_payload()
        except Exception:  # noqa: BLE001
            data = b""
    added = part.defects[defects:]
    if any(isinstance(d, BASE64_DEFECTS) for d in added):
        notes.add("bad-encoding")
    if any(isinstance(d, email.errors.InvalidBase64LengthDefect) for d in added):
        data = _lenient_base64(part)
    if isinstance(data, str):
        try:
            data = data.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            data = data.encode("utf-8", "replace")
    return data if isinstance(data, bytes) else b""


def _lenient_base64(part: Message) -> bytes:
    """Base64 the decoder gave up on: noise dropped, the last partial group too."""
    try:
        encoded = str(part.get_payload()).encode("ascii", "ignore")
    except Exception:  # noqa: BLE001
        return b""
    data = BASE64_NOISE.sub(b"", encoded)
    try:
        return base64.b64decode(data[: len(data) - len(data) % 4])
    except ValueError:
        return b""


def _size(part: Message, notes: set[str]) -> int:
    if _content_type(part).startswith("message/"):
        try:
            return len(part.as_bytes())
        except Exception:  # noqa: BLE001 - unserialisable: size unknown
            return 0
    return len(_payload_bytes(part, notes))


def _fallback_decode(data: bytes) -> str:
    """Bytes in an unknown charset: UTF-8, or Latin-1 if no UTF-8 sequence fits.

    "UTF-8 fails badly" means the bytes have non-ASCII bytes but not one valid
    UTF-8 multi-byte character: a single-byte charset, read losslessly as
    Latin-1. Otherwise UTF-8 with U+FFFD for what does not fit.
    """
    text = data.decode("utf-8", "replace")
    if "\ufffd" in text and not any(ch > "\x7f" and ch != "\ufffd" for ch in text):
        return data.decode("latin-1")
    return text


def _decode(data: bytes, charset: str | None, notes: set[str]) -> str:
    """``data`` decoded with its declared charset (see the module docstring).

    No charset or US-ASCII: UTF-8 (a superset). A known charset that does not fit:
    UTF-8 if that fits, else the charset with U+FFFD for the bad bytes. An
    unknown charset name: ``_fallback_decode``. The last two note
    ``charset-replaced``.
    """
    codec = None
    if charset:
        try:
            codec = codecs.lookup(charset).name
        except (LookupError, ValueError, TypeError):
            codec = None
    if charset is None or codec in ("ascii", "utf-8"):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            notes.add("charset-replaced")
            return _fallback_decode(data)
    if codec is not None:
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            notes.add("charset-replaced")
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                return data.decode(codec, "replace")
        except (LookupError, ValueError, TypeError):
            pass  # not a text codec ("base64", "rot13") or a broken one
    notes.add("charset-replaced")
    return _fallback_decode(data)


def _param(part: Message, name: str) -> str | None:
    """A Content-Type parameter, lower-cased; None if absent or unreadable."""
    try:
        value = part.get_param(name)
    except Exception:  # noqa: BLE001 - a broken Content-Type parameter list
        return None
    if isinstance(value, tuple):  # RFC 2231: (charset, language, value)
        value = value[2]
    if not isinstance(value, str):
        return None
    return value.strip().strip("\"'").lower() or None


def _part_text(part: Message, notes: set[str]) -> str:
    text = _decode(_payload_bytes(part, notes), _param(part, "charset"), notes)
    if _param(part, "format") == "flowed":
        text = unflow(text, delsp=_param(part, "delsp") == "yes")
    return text


@dataclass
class _Tree:
    """What the walk found: body candidates, attachments, the content types."""

    plain: Message | None
    html: Message | None
    attachments: list[Attachment]
    content_types: list[str]


def _walk(msg: Message, max_parts: int, max_depth: int, notes: set[str]) -> _Tree:
    """Walk the MIME tree in document order, iteratively, within the limits."""
    tree = _Tree(None, None, [], [])
    stack: list[tuple[Message, int]] = [(msg, 0)]
    seen = 0
    while stack:
        part, depth = stack.pop()
        seen += 1
        if seen > max_parts:
            notes.add("too-many-parts")
            break
        content_type = _content_type(part)
        tree.content_types.append(content_type)
        maintype = content_type.partition("/")[0]
        if maintype == "multipart":
            children = _children(part)
            if children and depth >= max_depth:
                notes.add("too-deep")
            elif children:
                stack.extend((child, depth + 1) for child in reversed(children))
            continue
        disposition = _disposition(part)
        attached = disposition == "attachment"
        if content_type == "text/plain" and not attached and tree.plain is None:
            tree.plain = part
            continue
        if content_type == "text/html" and not attached and tree.html is None:
            tree.html = part
            continue
        if content_type in BOUNCE_TYPES:
            continue
        filename = _filename(part)
        if (
            filename
            or attached
            or (disposition == "inline" and maintype != "text")
            or content_type == "message/rfc822"
        ):
            tree.attachments.append(
                Attachment(filename, content_type, _size(part, notes))
            )
    return tree


# -- the whole mail ----------------------------------------------------------------


def _body_text(tree: _Tree, max_text_chars: int, notes: set[str]) -> str:
    if tree.plain is not None:
        body = _part_text(tree.plain, notes)
        limit = max_text_chars * TEXT_INPUT_FACTOR
        if len(body) > limit:
            body = body[:limit]
            notes.add("truncated")
        text = clean_reply_text(body)
        if text or tree.html is None:
            return text
    if tree.html is not None:  # HTML only, or an empty text/plain beside it
        notes.add("html-only")
        markup = _part_text(tree.html, notes)
        limit = max_text_chars * HTML_INPUT_FACTOR
        if len(markup) > limit:
            markup = markup[:limit]
            notes.add("truncated")
        text = clean_reply_text(html_to_text(markup))
        return text or clean_reply_text(html_to_text(markup, drop_quotes=False))
    notes.add("no-text-part")
    return ""


def parse_inbound(
    raw: bytes,
    *,
    envelope_sender: str | None = None,
    max_parts: int = 200,
    max_depth: int = 10,
    max_text_chars: int = 20000,
) -> InboundMail:
    """Read one inbound mail (see the module docstring).

    Args:
        raw: the mail as received (RFC 5322 bytes).
        envelope_sender: the SMTP ``MAIL FROM`` ("" or "<>" for a bounce's null
            reverse path); None when unknown.
        max_parts: MIME parts looked at; more -> note ``too-many-parts``.
        max_depth: multipart nesting followed; deeper -> note ``too-deep``.
        max_text_chars: length of ``text``; longer -> cut, note ``truncated``.

    Raises:
        UnreadableMail: ``raw`` is not bytes, or empty (whitespace only).
        ValueError: a limit is not a positive integer.
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise UnreadableMail("a mail must be bytes")
    raw = bytes(raw)
    if not raw.strip():
        raise UnreadableMail("the mail is empty")
    for name, limit in (
        ("max_parts", max_parts),
        ("max_depth", max_depth),
        ("max_text_chars", max_text_chars),
    ):
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"{name} must be a positive integer")
    notes: set[str] = set()
    cut = _cut_parts(raw, max_parts)
    if cut is not None:
        raw = cut
        notes.add("too-many-parts")
    msg = _read(raw, notes)
    tree = _walk(msg, max_parts, max_depth, notes)
    text = clean_text(_body_text(tree, max_text_chars, notes))
    if len(text) > max_text_chars:
        text = text[:max_text_chars].rstrip()
        notes.add("truncated")
    if not text and "no-text-part" not in notes:
        notes.add("empty")

    senders = _sender_pairs(msg, notes)
    from_name = from_address = None
    for name, addr in senders:
        from_address = _usable_address(addr)
        if from_address:
            from_name = _one_line(clean_text(_as_text(name or "")))[:MAX_NAME] or None
            break
    subject = _one_line(_header(msg, "Subject", notes) or "")[:MAX_SUBJECT]
    message_ids = _raw_values(msg, "Message-ID")
    replies_to = _raw_values(msg, "In-Reply-To")
    references = _raw_values(msg, "References")
    return InboundMail(
        message_id=normalize_message_id(message_ids[0]) if message_ids else None,
        in_reply_to=normalize_message_id(replies_to[0]) if replies_to else None,
        references=_references(" ".join(references)),
        from_address=from_address,
        from_name=from_name,
        subject=subject,
        text=text,
        attachments=tree.attachments,
        auto_reason=auto_reason(
            lambda name: _raw_values(msg, name),
            envelope_sender=envelope_sender,
            sender_addresses=[addr for _, addr in senders],
            subject=subject,
            content_types=tree.content_types,
        ),
        notes=sorted(notes),
    )
