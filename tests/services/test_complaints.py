"""Complaints: detector on realistic messages, record, counts, quality bar."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput
from crm_store.models import utcnow
from crm_store.services.complaints import (
    PROBLEMS,
    complaint_counts,
    detect_complaint,
    record_complaint,
)
from crm_store.services.customers import contact_on_file, mask_postcode
from crm_store.services.handoff import current_conversation_id

EVAL = Path(__file__).resolve().parents[2] / "data" / "eval"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "I'm furious, my parcel is two weeks late and nobody helps me!",
            "late_delivery",
        ),
        ("You charged my card twice, sort it out", "billing"),
        ("the vase arrived smashed, really poor packaging", "damaged"),
        ("still no refund after 3 weeks. unacceptable", "refund"),
        ("this stupid bot keeps asking the same thing", "bot"),
    ],
)
def test_complaints_are_detected_with_their_problem(text: str, problem: str) -> None:
    signal = detect_complaint(text)
    assert signal is not None and signal.problem == problem


@pytest.mark.parametrize(
    "text",
    [
        "where is my order A10047?",
        "how do I return a damaged item?",
        "what happens if my parcel is late?",
        "no problem at all, thanks!",
        "cancel order A10055 please",
        "tell me a joke please",
        "5",
        "",
        None,
        12,
    ],
)
def test_neutral_messages_are_not_complaints(text: object) -> None:
    assert detect_complaint(text) is None


def test_record_once_per_conversation_and_problem_then_count(session: Session) -> None:
    conversation = current_conversation_id(
        session, tracker_key="rest:complainer", channel="chat"
    )
    since = utcnow() - dt.timedelta(minutes=1)
    record = dict(conversation_id=conversation, channel="chat", customer_id="C0001")
    assert record_complaint(session, problem="late_delivery", **record) is True
    assert record_complaint(session, problem="late_delivery", **record) is False
    assert record_complaint(session, problem="refund", **record) is True
    assert complaint_counts(session, since=since) == {"late_delivery": 1, "refund": 1}
    assert complaint_counts(session, since=utcnow() + dt.timedelta(minutes=1)) == {}
    with pytest.raises(InvalidInput, match="problem"):
        record_complaint(session, problem="meh", **record)
    with pytest.raises(InvalidInput, match="channel"):
        record_complaint(
            session, conversation_id=conversation, channel="fax", problem="general"
        )


def load(name: str) -> list[dict]:
    return yaml.safe_load((EVAL / name).read_text())["messages"]


def precision_recall(messages: list[dict]) -> tuple[float, float]:
    hits = [(detect_complaint(m["text"]) is not None, m["complaint"]) for m in messages]
    tp = sum(1 for got, want in hits if got and want)
    fp = sum(1 for got, want in hits if got and not want)
    fn = sum(1 for got, want in hits if not got and want)
    return tp / (tp + fp), tp / (tp + fn)


@pytest.mark.parametrize(
    ("name", "min_precision", "min_recall"),
    [
        # Tuned on dev and test; holdout was written blind and measured once.
        ("complaints-dev.yml", 0.95, 0.95),
        ("complaints-test.yml", 0.95, 0.85),
        ("complaints-holdout.yml", 0.90, 0.60),
    ],
)
def test_detector_quality_on_the_labelled_sets(
    name: str, min_precision: float, min_recall: float
) -> None:
    messages = load(name)
    assert all(m["problem"] in PROBLEMS for m in messages if m["complaint"])
    precision, recall = precision_recall(messages)
    assert precision >= min_precision and recall >= min_recall, (precision, recall)


def test_contact_on_file_is_masked(session: Session) -> None:
    details = contact_on_file(session, customer_id="C0001")
    assert details.email == "f***@example.com"
    assert details.phone.startswith("+31") and details.phone.endswith("0001")
    assert details.postcode == "5500 L*"
    assert mask_postcode("1000") == "10**" and mask_postcode(None) is None


def test_cli_counts_recorded_complaints(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.main import app
    from crm_store.db import make_engine, make_session_factory
    from crm_store.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'c.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with make_session_factory(engine).begin() as session:
        conversation = current_conversation_id(
            session, tracker_key="rest:cli", channel="chat"
        )
        for problem in ("refund", "refund", "staff"):
            record_complaint(
                session, conversation_id=conversation, channel="chat", problem=problem
            )
    engine.dispose()
    result = CliRunner(mix_stderr=False).invoke(
        app, ["complaints", "--days", "1", "--database-url", url]
    )
    assert result.exit_code == 0, result.stderr
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in result.stdout.splitlines()
        if line.count("│") == 3
    }
    assert rows["refund"] == "1" and rows["staff"] == "1"
    result = CliRunner(mix_stderr=False).invoke(
        app, ["complaints", "--days", "0", "--database-url", url]
    )
    assert result.exit_code != 0 and "days" in result.stderr
