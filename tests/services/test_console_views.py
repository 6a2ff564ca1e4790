"""Console reads: watch queries, transcripts, tickets, search, staff list."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput, NotFound
from crm_store.models import (
    Conversation,
    Handoff,
    StaffSession,
    StaffUser,
    Ticket,
)
from crm_store.seeding import DEFAULT_AS_OF
from crm_store.services import console_views
from crm_store.services.interactions import NewInteraction, append_interactions

NOW = DEFAULT_AS_OF


def conversation(session: Session) -> str:
    conv_id = f"cv_{uuid.uuid4().hex}"
    session.add(
        Conversation(
            id=conv_id,
            tracker_key=f"web:{uuid.uuid4().hex[:22]}",
            channel="chat",
            customer_id="C0002",
            started_at=NOW,
            last_activity_at=NOW,
        )
    )
    session.flush()
    return conv_id


def say(session: Session, conv_id: str, text: str, author: str = "customer") -> None:
    append_interactions(
        session,
        items=[
            NewInteraction(
                event_id=f"t:{uuid.uuid4().hex}",
                channel="chat",
                direction="in" if author == "customer" else "out",
                author=author,
                text=text,
                customer_id="C0002",
                conversation_id=conv_id,
                occurred_at=NOW,
                meta={"purpose": "agent_reply", "staff": "sam"}
                if author == "agent"
                else {},
            )
        ],
    )


def test_ping(session: Session) -> None:
    console_views.ping(session)


def test_messages_after_and_conversation_view(session: Session) -> None:
    conv_id = conversation(session)
    say(session, conv_id, "first")
    say(session, conv_id, "second", "bot")
    view = console_views.conversation_view(session, conversation_id=conv_id)
    assert [m.text for m in view.messages] == ["first", "second"]
    assert view.channel == "chat" and view.customer_id == "C0002"
    first_id = view.messages[0].id
    later = console_views.messages_after(
        session, conversation_id=conv_id, after_id=first_id
    )
    assert [m.text for m in later] == ["second"]
    say(session, conv_id, "third", "agent")
    newest = console_views.messages_after(
        session, conversation_id=conv_id, after_id=later[-1].id
    )
    assert [(m.text, m.purpose, m.staff) for m in newest] == [
        ("third", "agent_reply", "sam")
    ]
    assert newest[0].as_dict()["occurred_at"].endswith("Z")
    with pytest.raises(NotFound):
        console_views.conversation_view(session, conversation_id="cv_missing")
    with pytest.raises(InvalidInput):
        console_views.messages_after(session, conversation_id=conv_id, limit=0)


def test_queue_fingerprint_changes_on_arrival_claim_and_resolution(
    session: Session,
) -> None:
    staff = StaffUser(
        username=f"fp{uuid.uuid4().hex[:8]}", password_hash="x", role="agent"
    )
    session.add(staff)
    session.flush()
    before = console_views.queue_fingerprint(session)
    handoff = Handoff(
        conversation_id=conversation(session),
        channel="chat",
        reason="other",
        status="waiting",
        packet={},
        created_at=NOW,
    )
    session.add(handoff)
    session.flush()
    arrived = console_views.queue_fingerprint(session)
    assert arrived != before and arrived.waiting == before.waiting + 1
    handoff.status, handoff.claimed_by, handoff.claimed_at = "claimed", staff.id, NOW
    session.flush()
    claimed = console_views.queue_fingerprint(session)
    assert claimed != arrived and claimed.claimed == arrived.claimed + 1
    handoff.status = "resolved"
    session.flush()
    assert console_views.queue_fingerprint(session) != claimed
    state = console_views.handoff_state(session, handoff_id=handoff.id)
    assert (state.status, state.claimed_by) == ("resolved", staff.id)
    assert console_views.handoff_state(session, handoff_id=10**9) is None


def test_tickets_and_handoffs_of_a_customer(session: Session) -> None:
    session.add_all(
        [
            Ticket(
                number=f"T-{uuid.uuid4().hex[:6].upper()}",
                customer_id="C0002",
                subject=subject,
                status="open",
                created_at=NOW + dt.timedelta(minutes=n),
                updated_at=NOW,
            )
            for n, subject in enumerate(("older", "newer"))
        ]
    )
    session.flush()
    tickets = console_views.tickets_for_customer(session, customer_id="C0002")
    subjects = [t.subject for t in tickets]
    assert subjects.index("newer") < subjects.index("older")
    with pytest.raises(InvalidInput):
        console_views.tickets_for_customer(session, customer_id="C0002", limit=0)
    assert console_views.tickets_for_customer(session, customer_id="C-none") == []
    assert console_views.handoffs_of_customer(session, customer_id="C-none") == []


def test_find_customers(session: Session) -> None:
    found = console_views.find_customers(session, query="okafor")
    assert any(c.id == "C0002" and c.name == "Pavel Okafor" for c in found)
    with pytest.raises(InvalidInput, match="type part of a name"):
        console_views.find_customers(session, query="  ")
    with pytest.raises(InvalidInput):
        console_views.find_customers(session, query="a", limit=1000)


def test_staff_list_counts_open_sessions_only(session: Session) -> None:
    name = f"list{uuid.uuid4().hex[:8]}"
    staff = StaffUser(username=name, password_hash="secret-hash", role="manager")
    session.add(staff)
    session.flush()
    for hours in (1, -1):
        session.add(
            StaffSession(
                token_hash=uuid.uuid4().hex,
                staff_id=staff.id,
                csrf_token="c",
                created_at=NOW,
                expires_at=NOW + dt.timedelta(hours=hours),
                last_seen_at=NOW,
            )
        )
    session.flush()
    listed = {u.username: u for u in console_views.staff_list(session, now=NOW)}
    assert listed[name].role == "manager" and listed[name].open_sessions == 1
    assert "secret-hash" not in repr(listed[name])
