"""CSAT: accepted once, only where the bot asked (both backends)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput
from crm_store.models import Conversation, Interaction
from crm_store.seeding import DEFAULT_AS_OF
from crm_store.services.feedback import (
    CsatOutcome,
    parse_csat,
    record_csat,
    request_csat,
)

NOW = DEFAULT_AS_OF


def conversation(session: Session, conversation_id: str) -> Conversation:
    row = Conversation(
        id=conversation_id,
        tracker_key=f"rest:{conversation_id}",
        channel="chat",
        started_at=NOW,
        last_activity_at=NOW,
    )
    session.add(row)
    session.flush()
    return row


def csat_rows(session: Session, conversation_id: str) -> list[Interaction]:
    return list(
        session.execute(
            select(Interaction).where(
                Interaction.conversation_id == conversation_id,
                Interaction.intent == "csat",
            )
        ).scalars()
    )


@pytest.mark.parametrize(
    ("text", "score"), [("4 stars", 4), (5, 5), (" 1 ", 1), ('{"rating": "3"}', 3)]
)
def test_parse_csat(text: object, score: int) -> None:
    assert parse_csat(text) == score


@pytest.mark.parametrize("text", ["7", "0", "10", "", None, {}, "4 or 5", "five"])
def test_parse_csat_refuses(text: object) -> None:
    with pytest.raises(InvalidInput):
        parse_csat(text)


def test_rating_is_recorded_once_after_the_request(session: Session) -> None:
    conversation(session, "svc-csat-1")
    assert request_csat(session, conversation_id="svc-csat-1", at=NOW)
    outcome = record_csat(
        session, conversation_id="svc-csat-1", score=5, customer_id="C0001", at=NOW
    )
    assert outcome is CsatOutcome.RECORDED
    for score in (1, 2, 5):
        again = record_csat(session, conversation_id="svc-csat-1", score=score)
        assert again is CsatOutcome.ALREADY_ANSWERED
    row = session.get(Conversation, "svc-csat-1")
    assert (row.csat, row.customer_id, row.csat_requested_at) == (5, "C0001", NOW)
    [history] = csat_rows(session, "svc-csat-1")
    assert history.author == "customer" and history.meta["csat"] == 5
    assert history.event_id == "csat:svc-csat-1"
    # Asking again after the answer changes nothing.
    assert not request_csat(session, conversation_id="svc-csat-1")


def test_unrequested_ratings_record_nothing(session: Session) -> None:
    conversation(session, "svc-csat-2")
    for conversation_id in ("svc-csat-2", "svc-csat-unknown", None):
        outcome = record_csat(session, conversation_id=conversation_id, score=1)
        assert outcome is CsatOutcome.NOT_REQUESTED
    assert session.get(Conversation, "svc-csat-2").csat is None
    assert session.get(Conversation, "svc-csat-unknown") is None
    assert csat_rows(session, "svc-csat-2") == []
    assert not request_csat(session, conversation_id="svc-csat-unknown")


def test_a_second_request_keeps_the_first_time(session: Session) -> None:
    conversation(session, "svc-csat-3")
    assert request_csat(session, conversation_id="svc-csat-3", at=NOW)
    later = NOW + dt.timedelta(minutes=5)
    assert request_csat(session, conversation_id="svc-csat-3", at=later)
    assert session.get(Conversation, "svc-csat-3").csat_requested_at == NOW


@pytest.mark.parametrize("score", [0, 6, -1, True, "4", 4.0, None])
def test_bad_scores_are_refused(session: Session, score: object) -> None:
    conversation(session, "svc-csat-4")
    request_csat(session, conversation_id="svc-csat-4")
    with pytest.raises(InvalidInput):
        record_csat(session, conversation_id="svc-csat-4", score=score)  # type: ignore[arg-type]
    assert session.get(Conversation, "svc-csat-4").csat is None
