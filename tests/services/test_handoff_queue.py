"""The handoff queue: priority order, positions, waits, claims (racing), notes."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from crm_store.db import make_session_factory
from crm_store.errors import Conflict, Forbidden, InvalidInput, NotFound
from crm_store.models import (
    AuditLog,
    Conversation,
    Customer,
    Handoff,
    Interaction,
    StaffUser,
    Ticket,
)
from crm_store.services import queue
from crm_store.services.agent_hours import parse_agent_hours
from crm_store.services.handoff import HandoffPacket, request_handoff
from crm_store.services.queue import QueueWeights, load_queue_weights

T0 = dt.datetime(2026, 11, 2, 9, 0)  # a Monday, 10:00 in Amsterdam: agents work
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def queue_engine(backend: str, scratch) -> Engine:  # noqa: ANN001
    """An empty migrated store for this module; each test rolls back."""
    return scratch.engine(backend)


@pytest.fixture()
def db(queue_engine: Engine) -> Iterator[Session]:
    with make_session_factory(queue_engine)() as session:
        try:
            yield session
        finally:
            session.rollback()


def add_staff(session: Session, username: str, role: str = "agent") -> int:
    staff = StaffUser(username=username, password_hash="-", role=role, active=True)
    session.add(staff)
    session.flush()
    return staff.id


def add_customer(session: Session, customer_id: str, first_name: str) -> str:
    session.add(Customer(id=customer_id, first_name=first_name, last_name="Test"))
    session.flush()
    return customer_id


def ask(
    session: Session,
    name: str,
    *,
    at: dt.datetime,
    customer_id: str | None = None,
    tier: str | None = None,
    churn: str | None = None,
    reason: str = "customer_request",
    priority: int = 0,
    **kwargs: object,
):  # noqa: ANN201
    """Open a conversation ``web:<name>`` and request a handoff for it."""
    session.add(
        Conversation(
            id=f"cv-{name}",
            tracker_key=f"web:{name}",
            channel="chat",
            customer_id=customer_id,
            started_at=at,
            last_activity_at=at,
        )
    )
    session.flush()
    packet = HandoffPacket(
        customer_id=customer_id,
        verified=customer_id is not None,
        verification_method=None,
        channel="chat",
        reason=reason,
        value_tier=tier,
        churn_band=churn,
        summary=f"summary of {name}",
    )
    return request_handoff(
        session,
        conversation_id=f"cv-{name}",
        packet=packet,
        priority=priority,
        at=at,
        **kwargs,
    )


def test_queue_config_file_holds_the_documented_weights() -> None:
    weights = load_queue_weights(None)
    assert weights == load_queue_weights(ROOT / "config" / "queue.yml")
    assert weights.value_tier_points == {
        "platinum": 40,
        "gold": 25,
        "silver": 10,
        "bronze": 0,
    }
    assert weights.churn_band_points == {"high": 20, "medium": 10, "low": 0}
    assert weights.reason_points == {
        "complaint": 15,
        "verification_failed": 10,
        "action_failure": 10,
        "business_rule": 20,
    }
    assert (
        weights.points_per_minute_waiting,
        weights.default_handle_minutes,
        weights.handle_time_window_days,
    ) == (1.0, 6, 7)
    assert weights == QueueWeights()
    assert (
        queue.priority_points(
            weights,
            value_tier="gold",
            churn_band="high",
            reason="complaint",
            boost=15,
        )
        == 25 + 20 + 15 + 15
    )
    assert (
        queue.priority_points(weights, value_tier=None, churn_band=None, reason="other")
        == 0
    )


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("points_per_minute: 2\n", "unknown settings ['points_per_minute']"),
        ("value_tier_points: {diamond: 50}\n", "unknown keys ['diamond']"),
        ("reason_points: {complaint: lots}\n", "reason_points.complaint"),
        ("points_per_minute_waiting: 0\n", "points_per_minute_waiting is out of range"),
        ("handle_time_window_days: 0\n", "handle_time_window_days is out of range"),
        ("default_handle_minutes: -1\n", "default_handle_minutes is out of range"),
        ("churn_band_points: [1, 2]\n", "churn_band_points must be a mapping"),
        ("- just\n- a list\n", "expected a mapping"),
        ("value_tier_points: {gold: [\n", "not valid YAML"),
    ],
)
def test_bad_queue_config_is_refused_clearly(
    tmp_path: Path, content: str, says: str
) -> None:
    path = tmp_path / "queue.yml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInput) as error:
        load_queue_weights(path)
    assert says in str(error.value) and str(path) in str(error.value)


def test_missing_explicit_queue_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not found"):
        load_queue_weights(tmp_path / "nope.yml")
    partial = tmp_path / "partial.yml"
    partial.write_text("points_per_minute_waiting: 2.0\n", encoding="utf-8")
    loaded = load_queue_weights(partial)
    assert loaded.points_per_minute_waiting == 2.0
    assert loaded.value_tier_points["platinum"] == 40


def test_queue_order_follows_the_documented_rule(db: Session) -> None:
    """Score = points + points_per_minute_waiting * minutes waited; highest first."""
    raw = yaml.safe_load((ROOT / "config" / "queue.yml").read_text(encoding="utf-8"))
    tier_points = raw["value_tier_points"]
    per_minute = raw["points_per_minute_waiting"]
    arrivals = {  # customer tier -> minutes after T0
        "bronze": 0,
        "gold": 10,
        "platinum": 50,
    }
    results = {}
    for tier, minutes in arrivals.items():
        customer = add_customer(db, f"Q-{tier}", tier.title())
        results[tier] = ask(
            db,
            f"order-{tier}",
            at=T0 + dt.timedelta(minutes=minutes),
            customer_id=customer,
            tier=tier,
        )
    now = T0 + dt.timedelta(minutes=60)

    def score(tier: str, at: dt.datetime) -> float:
        waited = (at - (T0 + dt.timedelta(minutes=arrivals[tier]))).total_seconds()
        return tier_points[tier] + per_minute * waited / 60

    def expected(at: dt.datetime, tiers: list[str]) -> list[str]:
        return sorted(tiers, key=lambda t: (-score(t, at), arrivals[t]))

    order = expected(now, list(arrivals))
    # The scenario is meaningful: bronze has the fewest points but has waited
    # long enough to overtake platinum, who arrived 50 minutes later.
    assert order.index("bronze") < order.index("platinum")
    assert tier_points["bronze"] < tier_points["platinum"]
    entries = queue.waiting_queue(db, now=now)
    assert [e.value_tier for e in entries] == order
    assert [e.position for e in entries] == [1, 2, 3]
    assert [e.customer_name for e in entries] == [f"{t.title()} Test" for t in order]
    assert (
        entries[0].waited_seconds
        == (now - (T0 + dt.timedelta(minutes=arrivals[order[0]]))).total_seconds()
    )
    assert entries[0].tracker_key == f"web:order-{order[0]}"
    # Each customer was told the position the rule gave on arrival.
    for tier, minutes in arrivals.items():
        at = T0 + dt.timedelta(minutes=minutes)
        present = [t for t in arrivals if arrivals[t] <= minutes]
        assert results[tier].position == expected(at, present).index(tier) + 1
        assert results[tier].expected_wait is not None
    stored = db.get(Handoff, results["platinum"].handoff_id)
    assert stored.priority == tier_points["platinum"]
    assert stored.queue_at == stored.created_at - dt.timedelta(
        minutes=tier_points["platinum"] / per_minute
    )


def test_position_updates_only_report_changes(db: Session) -> None:
    weights = QueueWeights()
    add_customer(db, "P-gold", "Gold")
    add_customer(db, "P-plat", "Plat")
    first = ask(db, "pu-1", at=T0)  # no points, told 1
    gold = ask(
        db, "pu-2", at=T0 + dt.timedelta(minutes=5), customer_id="P-gold", tier="gold"
    )  # 25 points: ahead of first (waited 5), told 1
    plat = ask(
        db,
        "pu-3",
        at=T0 + dt.timedelta(minutes=6),
        customer_id="P-plat",
        tier="platinum",
    )  # 40 points: first of all, told 1
    assert (first.position, gold.position, plat.position) == (1, 1, 1)
    now = T0 + dt.timedelta(minutes=7)
    updates = queue.position_updates(db, now=now, weights=weights)
    assert {(u.handoff_id, u.position) for u in updates} == {
        (gold.handoff_id, 2),
        (first.handoff_id, 3),
    }
    one = next(u for u in updates if u.handoff_id == gold.handoff_id)
    assert (one.conversation_id, one.tracker_key, one.channel) == (
        "cv-pu-2",
        "web:pu-2",
        "chat",
    )
    # Expected wait: default 6 min handle time, one agent, position 2.
    assert one.expected_wait == dt.timedelta(minutes=12)
    assert queue.position_updates(db, now=now, weights=weights) == []
    staff = add_staff(db, "pu-agent")
    queue.claim(db, plat.handoff_id, staff, now=now)
    moved = queue.position_updates(db, now=now, weights=weights)
    assert {(u.handoff_id, u.position) for u in moved} == {
        (gold.handoff_id, 1),
        (first.handoff_id, 2),
    }
    assert queue.position_updates(db, now=now, weights=weights) == []
    # Asking again tells the current position (and records it as told).
    again = ask_again(db, "pu-1", at=now)
    assert (again.status, again.position) == ("already_queued", 2)


def ask_again(db: Session, name: str, *, at: dt.datetime):  # noqa: ANN201
    packet = HandoffPacket(
        customer_id=None,
        verified=False,
        verification_method=None,
        channel="chat",
        reason="customer_request",
    )
    return request_handoff(db, conversation_id=f"cv-{name}", packet=packet, at=at)


def test_reasons_churn_and_boost_add_points(db: Session) -> None:
    result = ask(
        db,
        "pts",
        at=T0,
        reason="business_rule",
        churn="high",
        priority=30,
        sender_limit=3,
    )
    row = db.get(Handoff, result.handoff_id)
    assert row.priority == 20 + 20 + 30
    assert row.told_position == result.position == 1
    with pytest.raises(InvalidInput, match="reason must be one of"):
        ask(db, "bad-reason", at=T0, reason="bored")
    for reason in ("low_confidence", "action_failure", "business_rule"):
        assert ask(db, f"r-{reason}", at=T0, reason=reason).status == "queued"


def test_expected_wait_uses_median_handle_time_and_busy_agents(db: Session) -> None:
    weights = QueueWeights()
    now = T0 + dt.timedelta(hours=2)
    # Fewer than 3 samples: default handle time.
    assert queue.expected_wait(db, 1, now=now, weights=weights) == dt.timedelta(
        minutes=6
    )
    assert queue.expected_wait(db, 3, now=now, weights=weights) == dt.timedelta(
        minutes=18
    )
    a, b = add_staff(db, "ew-a"), add_staff(db, "ew-b")
    for n, minutes in enumerate((4, 8, 30)):
        result = ask(db, f"ew-{n}", at=now - dt.timedelta(minutes=90))
        claimed = now - dt.timedelta(minutes=50)
        queue.claim(db, result.handoff_id, a if n else b, now=claimed)
        queue.resolve(
            db,
            result.handoff_id,
            a if n else b,
            handback=False,
            note=None,
            now=claimed + dt.timedelta(minutes=minutes),
        )
    # Median 8 minutes; two agents claimed or resolved in the last hour.
    assert queue.expected_wait(db, 1, now=now, weights=weights) == dt.timedelta(
        minutes=8
    )
    assert queue.expected_wait(db, 3, now=now, weights=weights) == dt.timedelta(
        minutes=16
    )
    # Resolutions older than the window do not count.
    later = now + dt.timedelta(days=8)
    assert queue.expected_wait(db, 1, now=later, weights=weights) == dt.timedelta(
        minutes=6
    )
    with pytest.raises(InvalidInput, match="position"):
        queue.expected_wait(db, 0, now=now)


def test_after_hours_wait_includes_time_until_opening(db: Session) -> None:
    saturday_evening = dt.datetime(2026, 11, 7, 18, 0)  # 19:00 Amsterdam, closed
    result = ask(db, "after-hours", at=saturday_evening)
    assert result.agents_available is False
    monday_open = dt.datetime(2026, 11, 9, 7, 0)
    assert result.expected_wait == (monday_open - saturday_evening) + dt.timedelta(
        minutes=6
    )
    open_all_day = parse_agent_hours("always")
    other = ask(db, "after-hours-2", at=saturday_evening, hours=open_all_day)
    assert other.agents_available is True
    assert other.expected_wait == dt.timedelta(minutes=6 * 2)


def test_claim_resolve_and_their_errors(db: Session) -> None:
    alice, bob = add_staff(db, "cl-alice"), add_staff(db, "cl-bob")
    manager = add_staff(db, "cl-boss", "manager")
    result = ask(db, "cl-1", at=T0)
    row = queue.claim(db, result.handoff_id, alice, now=T0 + dt.timedelta(minutes=2))
    assert (row.status, row.claimed_by) == ("claimed", alice)
    assert row.claimed_at == T0 + dt.timedelta(minutes=2)
    with pytest.raises(Conflict, match="already claimed by cl-alice"):
        queue.claim(db, result.handoff_id, bob)
    with pytest.raises(NotFound):
        queue.claim(db, 999_999, alice)
    with pytest.raises(NotFound, match="staff user"):
        queue.claim(db, result.handoff_id, 999_999)
    with pytest.raises(Forbidden, match="claimed by cl-alice"):
        queue.resolve(db, result.handoff_id, bob, handback=True, note=None)
    with pytest.raises(InvalidInput, match="at most 4000"):
        queue.resolve(db, result.handoff_id, alice, handback=True, note="x" * 4001)
    done = queue.resolve(
        db,
        result.handoff_id,
        alice,
        handback=True,
        note="  back to the bot  ",
        now=T0 + dt.timedelta(minutes=9),
    )
    assert (done.status, done.resolution_note) == ("handed_back", "back to the bot")
    with pytest.raises(Conflict, match="is handed back"):
        queue.resolve(db, result.handoff_id, alice, handback=False, note=None)
    with pytest.raises(Conflict, match="is handed back"):
        queue.claim(db, result.handoff_id, bob)
    waiting = ask(db, "cl-2", at=T0)
    with pytest.raises(Conflict, match="is waiting"):
        queue.resolve(db, waiting.handoff_id, alice, handback=False, note=None)
    queue.claim(db, waiting.handoff_id, bob)
    by_manager = queue.resolve(
        db, waiting.handoff_id, manager, handback=False, note="", allow_other=True
    )
    assert (by_manager.status, by_manager.resolution_note) == ("resolved", None)
    actions = db.execute(
        select(AuditLog.actor, AuditLog.action)
        .where(
            AuditLog.entity_type == "handoff",
            AuditLog.entity_id.in_([str(result.handoff_id), str(waiting.handoff_id)]),
        )
        .order_by(AuditLog.id)
    ).all()
    assert [tuple(a) for a in actions] == [
        ("cl-alice", "handoff_claimed"),
        ("cl-alice", "handoff_handed_back"),
        ("cl-bob", "handoff_claimed"),
        ("cl-boss", "handoff_resolved"),
    ]


def test_convert_to_ticket_and_notes(db: Session) -> None:
    agent = add_staff(db, "tk-agent")
    add_customer(db, "TK-1", "Tess")
    result = ask(db, "tk-1", at=T0, customer_id="TK-1")
    queue.claim(db, result.handoff_id, agent)
    number = queue.convert_to_ticket(
        db, result.handoff_id, agent, subject="Refund for a late parcel"
    )
    ticket = db.execute(select(Ticket).where(Ticket.number == number)).scalar_one()
    assert (ticket.customer_id, ticket.conversation_id) == ("TK-1", "cv-tk-1")
    assert ticket.description == "summary of tk-1"
    view = queue.get_handoff(db, result.handoff_id)
    assert view.status == "resolved" and number in view.resolution_note
    assert view.claimed_by_username == "tk-agent" and view.position is None
    assert view.customer_name == "Tess Test" and view.tracker_key == "web:tk-1"
    assert view.packet["summary"] == "summary of tk-1"
    anonymous = ask(db, "tk-2", at=T0)
    queue.claim(db, anonymous.handoff_id, agent)
    with pytest.raises(InvalidInput, match="no known customer"):
        queue.convert_to_ticket(db, anonymous.handoff_id, agent, subject="x")
    with pytest.raises(InvalidInput, match="subject"):
        add_customer(db, "TK-2", "Tom")
        third = ask(db, "tk-3", at=T0, customer_id="TK-2")
        queue.claim(db, third.handoff_id, agent)
        queue.convert_to_ticket(db, third.handoff_id, agent, subject="  ")
    # Notes: internal, oldest first, validated.
    first = queue.add_note(db, anonymous.handoff_id, agent, "  called back  ")
    queue.add_note(db, anonymous.handoff_id, agent, "no answer")
    notes = queue.notes_of(db, anonymous.handoff_id)
    assert [(n.author, n.text) for n in notes] == [
        ("tk-agent", "called back"),
        ("tk-agent", "no answer"),
    ]
    assert notes[0].id == first.id
    for bad in ("", "   ", "x" * 4001):
        with pytest.raises(InvalidInput):
            queue.add_note(db, anonymous.handoff_id, agent, bad)
    with pytest.raises(NotFound):
        queue.add_note(db, 999_999, agent, "hello")
    with pytest.raises(NotFound):
        queue.get_handoff(db, 999_999)


def test_lists_by_status_and_stats(db: Session) -> None:
    a, b = add_staff(db, "ls-a"), add_staff(db, "ls-b")
    ids = [
        ask(db, f"ls-{n}", at=T0 + dt.timedelta(minutes=n)).handoff_id for n in range(5)
    ]
    queue.claim(db, ids[0], a, now=T0 + dt.timedelta(minutes=10))
    queue.claim(db, ids[1], b, now=T0 + dt.timedelta(minutes=11))
    queue.claim(db, ids[2], a, now=T0 + dt.timedelta(minutes=12))
    queue.resolve(
        db, ids[2], a, handback=False, note=None, now=T0 + dt.timedelta(minutes=20)
    )
    now = T0 + dt.timedelta(minutes=30)
    claimed = queue.handoffs_by_status(db, "claimed", now=now)
    assert [e.handoff_id for e in claimed] == [ids[1], ids[0]]
    assert [e.claimed_by for e in claimed] == ["ls-b", "ls-a"]
    mine = queue.handoffs_by_status(db, "claimed", staff_id=a, now=now)
    assert [e.handoff_id for e in mine] == [ids[0]]
    assert mine[0].waited_seconds == 600 and mine[0].position is None
    resolved = queue.handoffs_by_status(db, "resolved", now=now)
    assert [e.handoff_id for e in resolved] == [ids[2]]
    waiting = queue.handoffs_by_status(db, "waiting", now=now)
    assert [(e.handoff_id, e.position) for e in waiting] == [(ids[3], 1), (ids[4], 2)]
    with pytest.raises(InvalidInput, match="status must be one of"):
        queue.handoffs_by_status(db, "lost")
    with pytest.raises(InvalidInput, match="limit"):
        queue.waiting_queue(db, limit=0)
    db.add_all(
        [
            Interaction(
                event_id=f"ls-msg-{n}",
                channel=channel,
                direction="in",
                author="customer",
                text="hi",
                occurred_at=now - dt.timedelta(hours=hours),
            )
            for n, (channel, hours) in enumerate(
                [("chat", 1), ("chat", 2), ("telegram", 3), ("chat", 30)]
            )
        ]
    )
    db.flush()
    stats = queue.queue_stats(db, now=now)
    assert (stats.waiting, stats.claimed, stats.resolved_24h) == (2, 2, 1)
    assert stats.oldest_wait_seconds == 27 * 60  # ids[3] arrived at T0 + 3 min
    # Waits until claim: 10, 10, 10 minutes.
    assert stats.median_wait_seconds_24h == 600
    assert stats.messages_by_channel == {"chat": 2, "telegram": 1}


def test_empty_queue_stats(db: Session) -> None:
    stats = queue.queue_stats(db, now=T0)
    assert (stats.waiting, stats.claimed, stats.oldest_wait_seconds) == (0, 0, 0.0)
    assert stats.median_wait_seconds_24h is None
    assert queue.waiting_queue(db, now=T0) == []
    assert queue.position_updates(db, now=T0) == []


ROUNDS = 4


def race(factory, handoff_id: int, staff: list[int]) -> dict[int, object]:  # noqa: ANN001
    """Both staff claim ``handoff_id`` at the same moment, each in its session."""
    barrier = threading.Barrier(len(staff))
    outcomes: dict[int, object] = {}

    def attempt(staff_id: int) -> None:
        try:
            with factory.begin() as session:
                barrier.wait(timeout=10)
                queue.claim(session, handoff_id, staff_id)
                # Hold the transaction open: the other claim must meet it.
                time.sleep(0.2)
            outcomes[staff_id] = "won"
        except Exception as error:  # noqa: BLE001
            outcomes[staff_id] = error

    threads = [threading.Thread(target=attempt, args=(s,)) for s in staff]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_claim_race_two_agents_at_once_exactly_one_wins(
    empty_engine: Engine,
) -> None:
    """Real concurrency: two sessions claim the same waiting handoff together."""
    factory = make_session_factory(empty_engine)
    with factory.begin() as session:
        staff = [add_staff(session, "race-a"), add_staff(session, "race-b")]
        handoffs = [ask(session, f"race-{n}", at=T0).handoff_id for n in range(ROUNDS)]
    for handoff_id in handoffs:
        outcomes = race(factory, handoff_id, staff)
        winners = [s for s, outcome in outcomes.items() if outcome == "won"]
        losers = [o for o in outcomes.values() if o != "won"]
        assert len(winners) == 1, outcomes
        assert len(losers) == 1 and isinstance(losers[0], Conflict), outcomes
        winner_name = "race-a" if winners[0] == staff[0] else "race-b"
        assert f"already claimed by {winner_name}" in str(losers[0])
        with factory() as session:
            row = session.get(Handoff, handoff_id)
            assert (row.status, row.claimed_by) == ("claimed", winners[0])
            claims = session.execute(
                select(func.count())
                .select_from(AuditLog)
                .where(
                    AuditLog.action == "handoff_claimed",
                    AuditLog.entity_id == str(handoff_id),
                )
            ).scalar_one()
            assert claims == 1
