"""The Notifier and its outbox on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from crm_store.errors import InvalidInput
from crm_store.services.notifier import Notifier, OutboxEntry, list_outbox

MESSAGE = {
    "customer_id": "C0001",
    "channel": "email",
    "recipient": "someone@example.org",
    "purpose": "contact_change_notice",
    "subject": "Hello",
    "body": "Your details are being changed.",
}


class RecordingSender:
    """A stand-in for a future channel: records what it is handed."""

    def __init__(self, sent: bool) -> None:
        self.sent = sent
        self.handed: list[OutboxEntry] = []

    def deliver(self, message: OutboxEntry) -> bool:
        self.handed.append(message)
        return self.sent


def test_default_sender_leaves_the_message_pending_in_the_outbox(session) -> None:
    entry = Notifier().notify(session, **MESSAGE)
    assert entry.status == "pending" and entry.sent_at is None
    [row] = list_outbox(session, recipient="someone@example.org")
    assert row == entry
    assert (row.channel, row.purpose, row.body) == (
        "email",
        "contact_change_notice",
        MESSAGE["body"],
    )
    assert entry in list_outbox(session, status="pending", limit=1000)
    assert entry not in list_outbox(session, status="sent")


@pytest.mark.parametrize("sent", [True, False])
def test_a_sender_plugs_in_and_decides_the_status(session, sent) -> None:
    sender = RecordingSender(sent)
    entry = Notifier(sender).notify(
        session, **{**MESSAGE, "channel": "sms", "recipient": "+31600000001"}
    )
    assert [m.id for m in sender.handed] == [entry.id]
    assert sender.handed[0].status == "pending"
    assert entry.status == ("sent" if sent else "pending")
    assert (entry.sent_at is not None) is sent


def test_newest_first_and_filters(session) -> None:
    notifier = Notifier()
    first = notifier.notify(session, **{**MESSAGE, "purpose": "a_first"})
    second = notifier.notify(session, **{**MESSAGE, "purpose": "b_second"})
    mine = list_outbox(session, recipient=MESSAGE["recipient"])
    assert [m.id for m in mine] == [second.id, first.id]
    assert list_outbox(session, purpose="a_first") == [first]


@pytest.mark.parametrize(
    "change",
    [
        {"channel": "fax"},
        {"channel": None},
        {"recipient": ""},
        {"recipient": "x" * 255},
        {"purpose": " "},
        {"subject": "s" * 201},
        {"body": ""},
        {"body": 12},
    ],
)
def test_bad_messages_are_refused(session, change) -> None:
    with pytest.raises(InvalidInput):
        Notifier().notify(session, **{**MESSAGE, **change})


@pytest.mark.parametrize(
    "args", [{"status": "lost"}, {"limit": 0}, {"limit": 1001}, {"limit": "5"}]
)
def test_bad_listing_arguments_are_refused(session, args) -> None:
    with pytest.raises(InvalidInput):
        list_outbox(session, **args)
