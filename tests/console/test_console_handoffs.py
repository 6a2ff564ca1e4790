"""Working a handoff through the API and the pages, with Rasa unreachable."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from console_support import SCORED_CUSTOMER, Harness
from fastapi.testclient import TestClient
from sqlalchemy import select

from crm_store.models import AuditLog, Handoff, Interaction, OutboxMessage, Ticket
from crm_store.services.outbound import pending_messages
from crm_store.services.staff import create_staff

SCRIPT = "<script>alert('pwned')</script>"


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


def bearer(harness: Harness, client: TestClient, username: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {harness.token(client, username)}"}


def test_api_flow_claim_reply_resolve(harness: Harness) -> None:
    ref = harness.new_handoff(customer_id=SCORED_CUSTOMER, reason="complaint")
    with harness.client() as client:
        agent = bearer(harness, client, "agent")
        manager = bearer(harness, client, "manager")
        waiting = client.get("/api/handoffs", headers=agent).json()["items"]
        entry = next(e for e in waiting if e["handoff_id"] == ref.id)
        assert entry["position"] >= 1 and entry["status"] == "waiting"
        assert (
            entry["customer_id"] == SCORED_CUSTOMER and entry["reason"] == "complaint"
        )
        positions = [e["position"] for e in waiting]
        assert positions == sorted(positions) == list(range(1, len(waiting) + 1))

        claimed = client.post(f"/api/handoffs/{ref.id}/claim", headers=agent)
        assert claimed.status_code == 200, claimed.text
        assert claimed.json()["status"] == "claimed"
        assert claimed.json()["claimed_by_username"] == "agent"
        lost = client.post(f"/api/handoffs/{ref.id}/claim", headers=manager)
        assert lost.status_code == 409
        assert "already claimed by agent" in lost.json()["error"]

        sent = client.post(
            f"/api/handoffs/{ref.id}/messages",
            json={"text": "  Hello, I'm Sam from Northwind.  "},
            headers=agent,
        )
        assert sent.status_code == 201, sent.text
        message = sent.json()
        assert message["text"] == "Hello, I'm Sam from Northwind."
        assert (
            message["author"] == "agent" and message["tracker_key"] == ref.tracker_key
        )
        # Rasa is unreachable: the message waits in the outbox, nothing broke.
        with harness.factory() as session:
            pending = pending_messages(session, ref.tracker_key)
            assert [m.text for m in pending] == ["Hello, I'm Sam from Northwind."]
            assert session.get(Handoff, ref.id).first_response_at is not None
        transcript = client.get(
            f"/api/conversations/{ref.conversation_id}", headers=agent
        ).json()
        assert [m["author"] for m in transcript["messages"]] == [
            "customer",
            "bot",
            "agent",
        ]
        assert transcript["messages"][-1]["staff"] == "agent"

        assert (
            client.post(
                f"/api/handoffs/{ref.id}/messages", json={"text": "   "}, headers=agent
            ).status_code
            == 400
        )
        admin = bearer(harness, client, "admin")
        other = client.post(
            f"/api/handoffs/{ref.id}/resolve", json={"handback": True}, headers=admin
        )
        assert other.status_code == 200  # admins (manager+) may finish any handoff
    ref = harness.new_handoff(customer_id=SCORED_CUSTOMER)
    with harness.client() as client:
        agent = bearer(harness, client, "agent")
        assert (
            client.post(f"/api/handoffs/{ref.id}/claim", headers=agent).status_code
            == 200
        )
        note = client.post(
            f"/api/handoffs/{ref.id}/notes",
            json={"text": "Called the depot."},
            headers=agent,
        )
        assert note.status_code == 201 and note.json()["author"] == "agent"
        done = client.post(
            f"/api/handoffs/{ref.id}/resolve",
            json={"handback": True, "note": "Answered; back to the bot."},
            headers=agent,
        )
        assert done.status_code == 200
        assert done.json()["status"] == "handed_back"
        again = client.post(
            f"/api/handoffs/{ref.id}/resolve", json={"handback": False}, headers=agent
        )
        assert again.status_code == 409
        detail = client.get(f"/api/handoffs/{ref.id}", headers=agent).json()
        assert detail["resolution_note"] == "Answered; back to the bot."
        assert [n["text"] for n in detail["notes"]] == ["Called the depot."]
        resolved = client.get("/api/handoffs?status=handed_back", headers=agent).json()
        assert ref.id in [e["handoff_id"] for e in resolved["items"]]
        assert (
            client.get("/api/handoffs?status=bogus", headers=agent).status_code == 400
        )
        assert client.get("/api/handoffs/999999", headers=agent).status_code == 404
        assert (
            client.post("/api/handoffs/999999/claim", headers=agent).status_code == 404
        )


def test_only_the_claimer_replies(harness: Harness) -> None:
    ref = harness.new_handoff()
    with harness.client() as client:
        agent = bearer(harness, client, "agent")
        waiting = client.post(
            f"/api/handoffs/{ref.id}/messages",
            json={"text": "too early"},
            headers=agent,
        )
        assert waiting.status_code == 409
    with harness.factory.begin() as session:
        create_staff(
            session, username="agent2", password="agent2-password", role="agent"
        )
    with harness.client() as client:
        first = bearer(harness, client, "agent")
        second = {
            "Authorization": "Bearer "
            + client.post(
                "/api/auth/token",
                json={"username": "agent2", "password": "agent2-password"},
            ).json()["access_token"]
        }
        assert (
            client.post(f"/api/handoffs/{ref.id}/claim", headers=first).status_code
            == 200
        )
        reply = client.post(
            f"/api/handoffs/{ref.id}/messages", json={"text": "mine?"}, headers=second
        )
        assert reply.status_code == 403
        finish = client.post(
            f"/api/handoffs/{ref.id}/resolve", json={"handback": False}, headers=second
        )
        assert finish.status_code == 403


def test_convert_to_ticket(harness: Harness) -> None:
    ref = harness.new_handoff(customer_id=SCORED_CUSTOMER)
    with harness.client() as client:
        agent = bearer(harness, client, "agent")
        client.post(f"/api/handoffs/{ref.id}/claim", headers=agent)
        answer = client.post(
            f"/api/handoffs/{ref.id}/ticket",
            json={"subject": "Refund for a late parcel"},
            headers=agent,
        )
        assert answer.status_code == 201, answer.text
        number = answer.json()["ticket_number"]
        assert re.fullmatch(r"T-[A-Z0-9]+", number)
        detail = client.get(f"/api/handoffs/{ref.id}", headers=agent).json()
        assert detail["status"] == "resolved" and number in detail["resolution_note"]
    with harness.factory() as session:
        ticket = session.execute(
            select(Ticket).where(Ticket.number == number)
        ).scalar_one()
        assert ticket.customer_id == SCORED_CUSTOMER
        assert ticket.conversation_id == ref.conversation_id


def test_pages_flow_with_forms(harness: Harness) -> None:
    ref = harness.new_handoff(customer_id=SCORED_CUSTOMER, reason="complaint")
    with harness.client() as client:
        csrf = harness.login(client, "agent")
        queue = client.get("/")
        assert f'action="/handoffs/{ref.id}/claim"' in queue.text
        page = client.get(f"/handoffs/{ref.id}")
        assert "Claim this conversation" in page.text and 'id="reply"' not in page.text
        claim = client.post(f"/handoffs/{ref.id}/claim", data={"csrf_token": csrf})
        assert claim.status_code == 303
        assert claim.headers["location"] == f"/handoffs/{ref.id}?notice=claimed"
        page = client.get(claim.headers["location"])
        assert 'id="reply"' in page.text and "The bot is paused" in page.text
        assert 'class="btn btn-small canned"' in page.text  # canned replies offered
        mine = client.get("/")
        assert f'href="/handoffs/{ref.id}"' in mine.text.split('id="waiting-title"')[0]

        sent = client.post(
            f"/handoffs/{ref.id}/messages",
            data={"text": "Form reply", "csrf_token": csrf},
        )
        assert sent.status_code == 303
        fetched = client.post(
            f"/handoffs/{ref.id}/messages",
            data={"text": "Script reply"},
            headers={"Accept": "application/json", "X-CSRF-Token": csrf},
        )
        assert fetched.status_code == 201 and fetched.json()["text"] == "Script reply"
        empty = client.post(
            f"/handoffs/{ref.id}/messages", data={"text": " ", "csrf_token": csrf}
        )
        assert empty.status_code == 400 and "must not be empty" in empty.text
        noted = client.post(
            f"/handoffs/{ref.id}/notes",
            data={"text": "VIP, be quick", "csrf_token": csrf},
        )
        assert noted.status_code == 303
        page = client.get(f"/handoffs/{ref.id}")
        assert "Form reply" in page.text and "Script reply" in page.text
        assert "VIP, be quick" in page.text
        done = client.post(
            f"/handoffs/{ref.id}/resolve",
            data={"action": "resolve", "note": "Sorted", "csrf_token": csrf},
        )
        assert done.status_code == 303 and "notice=resolved" in done.headers["location"]
        page = client.get(f"/handoffs/{ref.id}")
        assert 'id="reply"' not in page.text and "Sorted" in page.text
    with harness.factory() as session:
        actions = session.execute(
            select(AuditLog.action).where(
                AuditLog.entity_type == "handoff", AuditLog.entity_id == str(ref.id)
            )
        ).scalars()
        assert set(actions) == {"handoff_claimed", "handoff_resolved"}


def test_losing_a_claim_race_on_the_page(harness: Harness) -> None:
    ref = harness.new_handoff()
    with harness.client() as client:
        api = bearer(harness, client, "manager")
        client.post(f"/api/handoffs/{ref.id}/claim", headers=api)
        csrf = harness.login(client, "agent")
        answer = client.post(f"/handoffs/{ref.id}/claim", data={"csrf_token": csrf})
        assert answer.headers["location"] == f"/handoffs/{ref.id}?notice=lost"
        page = client.get(answer.headers["location"])
        assert "Someone else claimed it first." in page.text
        assert "Claimed by <strong>manager</strong>" in page.text


def test_customer_text_is_escaped_everywhere(harness: Harness) -> None:
    ref = harness.new_handoff(customer_id=SCORED_CUSTOMER, text=f"Help {SCRIPT}")
    with harness.client() as client:
        harness.login(client, "agent")
        pages = [
            client.get(f"/handoffs/{ref.id}"),
            client.get(f"/customers/{SCORED_CUSTOMER}"),
            client.get(f"/conversations/{ref.conversation_id}"),
        ]
    for page in pages:
        assert page.status_code == 200
        assert SCRIPT not in page.text
        assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in page.text
        # No inline script or style anywhere (the CSP would block them anyway).
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text)
        assert " style=" not in page.text and "<style" not in page.text


def test_agent_reply_and_queue_update_messages_reach_the_outbox(
    harness: Harness,
) -> None:
    first = harness.new_handoff()
    second = harness.new_handoff()
    with harness.client() as client:
        agent = bearer(harness, client, "agent")
        client.post(f"/api/handoffs/{first.id}/claim", headers=agent)
    with harness.factory() as session:
        told = (
            session.execute(
                select(OutboxMessage).where(
                    OutboxMessage.tracker_key == second.tracker_key,
                    OutboxMessage.purpose == "queue_update",
                )
            )
            .scalars()
            .all()
        )
        assert told, "the customer behind the claimed one hears their new place"
        assert "in the queue" in told[-1].body or "next in line" in told[-1].body
        history = (
            session.execute(
                select(Interaction).where(
                    Interaction.conversation_id == second.conversation_id,
                    Interaction.author == "system",
                )
            )
            .scalars()
            .all()
        )
        assert history and history[-1].meta["purpose"] == "queue_update"


def test_undelivered_messages_are_shown_to_agents_escaped(harness: Harness) -> None:
    from crm_store.services.outbound import record_failed_delivery

    ref = harness.new_handoff(customer_id=SCORED_CUSTOMER)
    with harness.factory.begin() as session:
        record_failed_delivery(
            session,
            tracker_key=ref.tracker_key,
            channel="telegram",
            text=f"Your parcel {SCRIPT} is late",
            error="Forbidden: bot was blocked by the user",
        )
    with harness.client() as client:
        harness.login(client, "agent")
        pages = [
            client.get(f"/handoffs/{ref.id}"),
            client.get(f"/conversations/{ref.conversation_id}"),
        ]
        data = client.get(f"/api/conversations/{ref.conversation_id}").json()
    for page in pages:
        assert "Not delivered to the customer (1)" in page.text
        assert "Forbidden: bot was blocked by the user" in page.text
        assert SCRIPT not in page.text
    [undelivered] = data["undelivered"]
    assert undelivered["author"] == "bot" and undelivered["attempts"] == 1
    assert undelivered["error"].startswith("Forbidden")


def test_mail_customers_are_not_sent_a_mail_per_place_in_the_queue(
    harness: Harness,
) -> None:
    first = harness.new_handoff()
    by_mail = harness.new_handoff(
        channel="email", key="email:queue.mail@example.org#00aa11bb22cc33dd"
    )
    by_chat = harness.new_handoff()
    with harness.client() as client:
        agent = bearer(harness, client, "agent")
        client.post(f"/api/handoffs/{first.id}/claim", headers=agent)
    with harness.factory() as session:
        updates = {
            ref.tracker_key: session.execute(
                select(OutboxMessage).where(
                    OutboxMessage.tracker_key == ref.tracker_key,
                    OutboxMessage.purpose == "queue_update",
                )
            )
            .scalars()
            .all()
            for ref in (by_mail, by_chat)
        }
    assert updates[by_chat.tracker_key], "the web-chat customer hears the new place"
    assert updates[by_mail.tracker_key] == []
