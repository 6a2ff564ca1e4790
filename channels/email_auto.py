"""Automatic mail: why an inbound mail must not be answered, if it must not.

``auto_reason`` looks at what ``channels.email_parse`` read of a mail (raw
header values, the envelope and header senders, the subject and the MIME content
types) and names the first reason it finds: a loop (our own ``LOOP_HEADER``), a
bounce, a mailer-daemon/no-reply sender, ``Auto-Submitted``, a bulk
``Precedence``, an autoreply header, a mailing list, or an autoreply subject.
Answering any of these would start a mail loop or write to nobody.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from channels.email_compose import LOOP_HEADER

__all__ = ["BOUNCE_TYPES", "auto_reason"]

NOREPLY_LOCAL_PARTS = frozenset(
    {
        "mailer-daemon",
        "postmaster",
        "noreply",
        "no-reply",
        "no_reply",
        "donotreply",
        "do-not-reply",
        "do_not_reply",
    }
)
BULK_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
BOUNCE_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
AUTO_SUBJECT = re.compile(
    r"^\s*(?:auto:|automatic reply|out of office|autosvar|automatisch antwoord|"
    r"delivery status notification|undelivered mail)",
    re.IGNORECASE,
)


def _local_part(addr: str | None) -> str:
    """``mailer-daemon`` of ``<MAILER-DAEMON@x>``, ``noreply`` of ``noreply+a@x``."""
    text = (addr or "").strip().strip("<>")
    local = text.rpartition("@")[0] or text
    return local.split("+", 1)[0].lower()


def auto_reason(
    header_values: Callable[[str], list[str]],
    *,
    envelope_sender: str | None,
    sender_addresses: list[str],
    subject: str,
    content_types: list[str],
) -> str | None:
    """Why the mail must not be answered, or None if it may be.

    Args:
        header_values: the raw (unfolded, undecoded) values of a header by name;
            ``[]`` if absent.
        envelope_sender: the SMTP ``MAIL FROM`` ("" or "<>" for a null reverse
            path); None when unknown.
        sender_addresses: the addresses of the From header.
        subject: the decoded subject.
        content_types: the content types of the MIME parts, in document order.

    Returns:
        ``loop``, ``bounce``, ``mailer-daemon``, ``auto-submitted``,
        ``precedence:<value>``, ``autoreply-header`` or ``list``; None if none.
    """

    def first(name: str) -> str | None:
        values = header_values(name)
        return values[0].strip().lower() if values else None

    if header_values(LOOP_HEADER):
        return "loop"
    if envelope_sender is not None and envelope_sender.strip() in ("", "<>"):
        return "bounce"
    if content_types and content_types[0] == "multipart/report":
        return "bounce"
    if any(t in BOUNCE_TYPES for t in content_types):
        return "bounce"
    locals_ = [_local_part(addr) for addr in sender_addresses]
    if envelope_sender:
        locals_.append(_local_part(envelope_sender))
    if any(local in NOREPLY_LOCAL_PARTS for local in locals_):
        return "mailer-daemon"
    auto_submitted = first("Auto-Submitted")
    if auto_submitted is not None and auto_submitted.split(";")[0].strip() != "no":
        return "auto-submitted"
    precedence = first("Precedence")
    if precedence in BULK_PRECEDENCE:
        return f"precedence:{precedence}"
    for name in ("X-Autoreply", "X-Autorespond"):
        value = first(name)
        if value is not None and value not in ("no", "false", "0"):
            return "autoreply-header"
    if first("List-Id") is not None or first("List-Unsubscribe") is not None:
        return "list"
    if AUTO_SUBJECT.match(subject):
        return "autoreply-header"
    return None
