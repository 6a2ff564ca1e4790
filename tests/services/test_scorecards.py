"""Scorecards: the criteria file, saving (upsert, audit), listing and export rows."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput, NotFound
from crm_store.models import AuditLog, Scorecard, StaffUser
from crm_store.services import scorecards
from crm_store.services.conversations import open_conversation
from crm_store.services.history import next_conversation_id
from crm_store.services.scorecards import (
    Criterion,
    ScorecardCriteria,
    list_scorecards,
    load_criteria,
    save_scorecard,
    scorecard_columns,
    scorecard_rows,
    scorecards_of,
)

AT = dt.datetime(2031, 3, 4, 9, 30)
GOOD = {
    "understood_need": 4,
    "correct_answer": "8",  # a form sends text
    "tone": 5,
    "handoff": " 3 ",
    "policy_privacy": 5,
}


@pytest.fixture(scope="module")
def criteria() -> ScorecardCriteria:
    return load_criteria()


def add_staff(session: Session, role: str = "manager") -> StaffUser:
    staff = StaffUser(
        username=f"rev_{uuid.uuid4().hex[:10]}", password_hash="x", role=role
    )
    session.add(staff)
    session.flush()
    return staff


def add_conversation(session: Session) -> str:
    conversation_id = next_conversation_id(session)
    open_conversation(session, conversation_id=conversation_id, channel="chat", at=AT)
    session.flush()
    return conversation_id


def count(session: Session, model: type, *conditions) -> int:
    return session.execute(
        select(func.count()).select_from(model).where(*conditions)
    ).scalar_one()


def test_the_configured_criteria(criteria: ScorecardCriteria) -> None:
    assert criteria.keys == (
        "understood_need",
        "correct_answer",
        "tone",
        "handoff",
        "policy_privacy",
    )
    assert [c.max_points for c in criteria.criteria] == [5, 10, 5, 5, 5]
    assert criteria.max_total == 30
    assert criteria.criteria[1].label == "Correct and complete answer"
    assert all(c.description for c in criteria.criteria)
    assert criteria.as_dict()["criteria"][0]["key"] == "understood_need"
    assert scorecard_columns(criteria) == (
        "conversation_id",
        "reviewer",
        "score",
        *criteria.keys,
        "comment",
        "created_at",
        "updated_at",
    )
    assert scorecards.SCORECARD_COLUMNS == scorecard_columns(criteria)


def entry(key: str = "tone", **fields: object) -> str:
    lines = [f"  - key: {key}"]
    values = {"label": "Tone", "max_points": 5, **fields}
    lines += [f"    {name}: {value}" for name, value in values.items()]
    return "\n".join(lines)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("criteria: [", "not valid YAML"),
        ("- key: tone", "expected one key, criteria"),
        ("criteria: []", "non-empty list"),
        ("criteria:\n  - tone", "criterion 1: expected a mapping"),
        ("criteria:\n" + entry("Tone"), "criterion 1: key must match"),
        ("criteria:\n" + entry("1tone"), "criterion 1: key must match"),
        ("criteria:\n" + entry("t" * 33), "key must match"),
        (
            "criteria:\n" + entry("score"),
            "criterion 1 (score): key 'score' is a column",
        ),
        (
            "criteria:\n" + entry() + "\n" + entry(),
            "criterion 2: key 'tone' is used twice",
        ),
        ("criteria:\n" + entry(max_point=3), "(tone): unknown fields ['max_point']"),
        ("criteria:\n" + entry(max_points=0), "max_points must be a whole number"),
        ("criteria:\n" + entry(max_points=11), "from 1 to 10 (got 11)"),
        ("criteria:\n" + entry(max_points="'5'"), "(got '5')"),
        ("criteria:\n" + entry(max_points=2.5), "(got 2.5)"),
        ("criteria:\n" + entry(max_points="true"), "(got True)"),
        ("criteria:\n" + entry(label="''"), "label must be text"),
        ("criteria:\n" + entry(label="[a]"), "label must be text"),
        ("criteria:\n" + entry(description="[a]"), "description must be text"),
        (
            "criteria:\n" + "\n".join(entry(f"c{i}") for i in range(21)),
            "21 criteria; at most 20",
        ),
    ],
)
def test_bad_criteria_files_are_refused_naming_file_and_entry(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "scorecard.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidInput) as error:
        load_criteria(path)
    assert str(path) in str(error.value)
    assert message in str(error.value)


def test_a_missing_criteria_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot be read"):
        load_criteria(tmp_path / "absent.yml")


def test_twenty_criteria_with_an_optional_description_load(tmp_path: Path) -> None:
    path = tmp_path / "scorecard.yml"
    body = "\n".join(entry(f"c{i}", max_points=(i % 10) + 1) for i in range(20))
    path.write_text("criteria:\n" + body, encoding="utf-8")
    loaded = load_criteria(str(path))
    assert len(loaded.criteria) == 20
    assert loaded.criteria[0] == Criterion("c0", "Tone", "", 1)
    assert loaded.max_total == sum((i % 10) + 1 for i in range(20))


def test_saving_computes_the_score_and_audits(
    session: Session, criteria: ScorecardCriteria
) -> None:
    reviewer = add_staff(session)
    conversation_id = add_conversation(session)
    view = save_scorecard(
        session,
        conversation_id=conversation_id,
        reviewer_id=reviewer.id,
        scores=GOOD,
        comment="  Good form flow.\x00 ",
        criteria=criteria,
        at=AT,
    )
    # 4 + 8 + 5 + 3 + 5 = 25 of 30 points.
    assert view.score == 83.3
    assert view.scores == {
        "understood_need": 4,
        "correct_answer": 8,
        "tone": 5,
        "handoff": 3,
        "policy_privacy": 5,
    }
    assert (view.reviewer, view.conversation_id) == (reviewer.username, conversation_id)
    assert view.comment == "Good form flow."
    assert view.created_at == view.updated_at == AT
    assert view.as_dict()["created_at"] == "2031-03-04T09:30:00Z"
    audit = session.execute(
        select(AuditLog).where(
            AuditLog.action == "scorecard_saved",
            AuditLog.entity_id == conversation_id,
        )
    ).scalar_one()
    assert (audit.actor, audit.entity_type, audit.details) == (
        reviewer.username,
        "conversation",
        {"score": 83.3},
    )
    assert audit.occurred_at == AT


def test_saving_again_updates_the_reviewers_scorecard(
    session: Session, criteria: ScorecardCriteria
) -> None:
    reviewer, other = add_staff(session), add_staff(session, "admin")
    conversation_id = add_conversation(session)
    first = save_scorecard(
        session,
        conversation_id=conversation_id,
        reviewer_id=reviewer.id,
        scores=GOOD,
        comment="first",
        criteria=criteria,
        at=AT,
    )
    later = AT + dt.timedelta(hours=2)
    again = save_scorecard(
        session,
        conversation_id=conversation_id,
        reviewer_id=reviewer.id,
        scores={key: 0 for key in criteria.keys} | {"correct_answer": 1},
        comment=None,
        criteria=criteria,
        at=later.replace(tzinfo=dt.timezone.utc),
    )
    assert again.id == first.id
    assert (again.created_at, again.updated_at) == (AT, later)
    assert again.score == 3.3  # 1 of 30 points
    assert again.comment is None
    save_scorecard(
        session,
        conversation_id=conversation_id,
        reviewer_id=other.id,
        scores={c.key: c.max_points for c in criteria.criteria},
        comment=None,
        criteria=criteria,
        at=AT + dt.timedelta(hours=1),
    )
    session.expire_all()
    stored = scorecards_of(session, conversation_id=conversation_id)
    assert [(s.reviewer, s.score) for s in stored] == [
        (reviewer.username, 3.3),
        (other.username, 100.0),
    ]
    assert count(session, Scorecard, Scorecard.conversation_id == conversation_id) == 2
    assert (
        count(
            session,
            AuditLog,
            AuditLog.entity_id == conversation_id,
            AuditLog.action == "scorecard_saved",
        )
        == 3
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"speed": 3}, "unknown criteria ['speed']"),
        ({"tone": None}, "Tone (tone): points must be a whole number from 0 to 5"),
        ({"tone": 6}, "from 0 to 5"),
        ({"tone": -1}, "from 0 to 5"),
        ({"tone": "-1"}, "from 0 to 5"),
        ({"correct_answer": 11}, "from 0 to 10"),
        ({"tone": 2.5}, "whole number"),
        ({"tone": True}, "whole number"),
        ({"tone": "three"}, "whole number"),
        ({"tone": ""}, "whole number"),
    ],
)
def test_bad_scores_are_refused_and_nothing_is_written(
    session: Session, criteria: ScorecardCriteria, change: dict, message: str
) -> None:
    reviewer = add_staff(session)
    conversation_id = add_conversation(session)
    with pytest.raises(InvalidInput) as error:
        save_scorecard(
            session,
            conversation_id=conversation_id,
            reviewer_id=reviewer.id,
            scores={**GOOD, **change},
            comment=None,
            criteria=criteria,
            at=AT,
        )
    assert message in str(error.value)
    assert count(session, Scorecard, Scorecard.conversation_id == conversation_id) == 0
    assert count(session, AuditLog, AuditLog.entity_id == conversation_id) == 0


def test_missing_scores_unknown_records_and_long_comments_are_refused(
    session: Session, criteria: ScorecardCriteria
) -> None:
    reviewer = add_staff(session)
    conversation_id = add_conversation(session)

    def save(**kwargs: object) -> scorecards.ScorecardView:
        arguments = {
            "conversation_id": conversation_id,
            "reviewer_id": reviewer.id,
            "scores": GOOD,
            "comment": None,
            "criteria": criteria,
            "at": AT,
            **kwargs,
        }
        return save_scorecard(session, **arguments)

    partial = {k: v for k, v in GOOD.items() if k != "handoff"}
    with pytest.raises(InvalidInput, match="missing: handoff"):
        save(scores=partial)
    with pytest.raises(InvalidInput, match="scores must map"):
        save(scores=[1, 2, 3])
    with pytest.raises(InvalidInput, match="at most 4000"):
        save(comment="x" * 4001)
    with pytest.raises(NotFound):
        save(conversation_id="cv_missing")
    with pytest.raises(NotFound):
        save(reviewer_id=10**9)
    assert count(session, Scorecard, Scorecard.conversation_id == conversation_id) == 0
    assert save(comment="x" * 4000).comment == "x" * 4000


def test_listing_and_export_rows(session: Session, criteria: ScorecardCriteria) -> None:
    alice, bob = add_staff(session), add_staff(session)
    conversations = [add_conversation(session) for _ in range(3)]
    base = dt.datetime(2031, 6, 1, 12, 0)
    given = [
        (conversations[0], alice, base, "ok"),
        (conversations[1], alice, base + dt.timedelta(days=1), None),
        (conversations[0], bob, base + dt.timedelta(days=2), "late"),
        (conversations[2], bob, base + dt.timedelta(days=10), None),
    ]
    for conversation_id, reviewer, at, comment in given:
        save_scorecard(
            session,
            conversation_id=conversation_id,
            reviewer_id=reviewer.id,
            scores=GOOD,
            comment=comment,
            criteria=criteria,
            at=at,
        )
    start, end = base, base + dt.timedelta(days=3)

    listed = list_scorecards(session, start=start, end=end)
    assert [(c.conversation_id, c.reviewer) for c in listed] == [
        (conversations[0], bob.username),
        (conversations[1], alice.username),
        (conversations[0], alice.username),
    ]
    by_alice = list_scorecards(session, start=start, reviewer=alice.username)
    assert [c.conversation_id for c in by_alice] == [conversations[1], conversations[0]]
    page = list_scorecards(session, start=start, limit=2, offset=1)
    assert [c.created_at for c in page] == [
        base + dt.timedelta(days=2),
        base + dt.timedelta(days=1),
    ]
    assert list_scorecards(session, start=start, reviewer="nobody") == []

    rows = list(scorecard_rows(session, start=start, end=end, batch_size=2))
    assert rows == [
        (conversations[0], alice.username, 83.3, 4, 8, 5, 3, 5, "ok", base, base),
        (
            conversations[1],
            alice.username,
            83.3,
            4,
            8,
            5,
            3,
            5,
            None,
            base + dt.timedelta(days=1),
            base + dt.timedelta(days=1),
        ),
        (
            conversations[0],
            bob.username,
            83.3,
            4,
            8,
            5,
            3,
            5,
            "late",
            base + dt.timedelta(days=2),
            base + dt.timedelta(days=2),
        ),
    ]
    assert all(len(row) == len(scorecard_columns(criteria)) for row in rows)

    # A criterion added after the scores were given is empty in the export.
    extended = ScorecardCriteria(
        criteria.criteria + (Criterion("empathy", "Empathy", "", 3),)
    )
    later = list(scorecard_rows(session, start=start, end=end, criteria=extended))
    assert [row[3:9] for row in later] == [(4, 8, 5, 3, 5, None)] * 3
    assert scorecard_columns(extended)[3:9] == (*criteria.keys, "empathy")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": 0},
        {"limit": 1001},
        {"offset": -1},
        {"start": AT, "end": AT},
        {"start": AT, "end": AT - dt.timedelta(days=1)},
        {"start": "2031-01-01"},
    ],
)
def test_bad_listing_parameters_are_refused(session: Session, kwargs: dict) -> None:
    with pytest.raises(InvalidInput):
        list_scorecards(session, **kwargs)


def test_bad_export_period_is_refused(session: Session) -> None:
    with pytest.raises(InvalidInput):
        list(scorecard_rows(session, start=AT, end=AT))
