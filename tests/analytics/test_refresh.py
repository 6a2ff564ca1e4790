"""Refresh on real databases (SQLite and PostgreSQL) seeded from the fixture."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from crm_store.analytics.refresh import refresh_scores
from crm_store.analytics.service import customer_scores, segment_summary
from crm_store.analytics.treatment import treatment_for_customer
from crm_store.db import make_session_factory
from crm_store.errors import InvalidInput
from crm_store.models import Conversation, Customer, CustomerScore, Interaction, Order
from crm_store.seeding import DEFAULT_AS_OF, seed_directory

DEMO = __import__("pathlib").Path(__file__).resolve().parents[2] / "data" / "demo"
AS_OF = DEFAULT_AS_OF


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return tmp_path_factory.mktemp("models") / "churn.joblib"


@pytest.fixture(scope="module")
def scored(backend, scratch, model_file):
    """A fixture database of its own, refreshed once; returns (factory, report)."""
    engine = scratch.engine(backend)
    factory = make_session_factory(engine)
    with factory.begin() as session:
        seed_directory(session, directory=DEMO, as_of=AS_OF, shift=False)
    with factory.begin() as session:
        report = refresh_scores(session, as_of=AS_OF, model_file=model_file)
    return factory, report


def test_first_refresh_writes_one_row_per_customer(scored):
    factory, report = scored
    with factory() as session:
        customers = session.execute(select(func.count()).select_from(Customer)).scalar()
        rows = session.execute(select(func.count()).select_from(CustomerScore)).scalar()
        distinct = session.execute(
            select(func.count(func.distinct(CustomerScore.customer_id)))
        ).scalar()
    assert report.customers == customers == rows == distinct == 2000
    assert report.written == 2000 and report.unchanged == 0


def test_second_refresh_without_changes_writes_nothing(scored, model_file):
    factory, _ = scored
    with factory.begin() as session:
        report = refresh_scores(session, as_of=AS_OF, model_file=model_file)
    assert (report.written, report.unchanged, report.trained_model) == (0, 2000, False)


def test_a_new_order_rescores_only_that_customer(scored, model_file):
    factory, _ = scored
    with factory() as session:
        before = session.get(CustomerScore, "C0007")
        frequency, computed_at = before.frequency, before.computed_at
    with factory.begin() as session:
        session.add(
            Order(
                id="T-REFRESH-1",
                customer_id="C0007",
                placed_at=AS_OF - dt.timedelta(days=1),
                status="paid",
                subtotal=Decimal("99.00"),
                shipping_fee=Decimal("0.00"),
                total=Decimal("99.00"),
            )
        )
    with factory.begin() as session:
        report = refresh_scores(session, as_of=AS_OF, model_file=model_file)
    assert (report.written, report.unchanged) == (1, 1999)
    with factory() as session:
        after = session.get(CustomerScore, "C0007")
        assert after.frequency == frequency + 1
        assert after.recency_days == 1
        assert after.computed_at > computed_at
        untouched = session.execute(
            select(func.count())
            .select_from(CustomerScore)
            .where(CustomerScore.computed_at > computed_at)
        ).scalar()
    assert untouched == 1


def test_a_new_complaint_rescores_only_that_customer(scored, model_file):
    factory, _ = scored
    at = AS_OF - dt.timedelta(hours=2)
    with factory.begin() as session:
        session.add(
            Conversation(
                id="t-refresh-complaint",
                customer_id="C0011",
                channel="chat",
                started_at=at,
                last_activity_at=at,
                outcome="escalated",
                csat=1,
            )
        )
        session.flush()
        session.add(
            Interaction(
                event_id="t-refresh-complaint-1",
                customer_id="C0011",
                conversation_id="t-refresh-complaint",
                channel="chat",
                direction="in",
                author="customer",
                text="my parcel arrived broken",
                intent="complaint",
                occurred_at=at,
                meta={},
            )
        )
    with factory.begin() as session:
        report = refresh_scores(session, as_of=AS_OF, model_file=model_file)
    assert report.written == 1
    with factory() as session:
        view = customer_scores(session, customer_id="C0011")
    assert view.explanation["complaints"] >= 1


def test_full_refresh_rewrites_every_row(scored, model_file):
    factory, _ = scored
    with factory.begin() as session:
        report = refresh_scores(session, as_of=AS_OF, model_file=model_file, full=True)
    assert report.written == 2000


def test_tiers_follow_the_configured_quantiles(scored):
    factory, _ = scored
    with factory() as session:
        counts = dict(
            session.execute(
                select(CustomerScore.value_tier, func.count()).group_by(
                    CustomerScore.value_tier
                )
            ).all()
        )
    buyers = sum(counts.values())
    assert set(counts) == {"platinum", "gold", "silver", "bronze"}
    assert counts["platinum"] / buyers == pytest.approx(0.05, abs=0.01)
    assert counts["gold"] / buyers == pytest.approx(0.15, abs=0.02)


def test_scores_feed_the_treatment_and_the_customer_view(scored):
    factory, _ = scored
    with factory() as session:
        platinum = session.execute(
            select(CustomerScore.customer_id)
            .where(CustomerScore.value_tier == "platinum")
            .order_by(CustomerScore.customer_id)
            .limit(1)
        ).scalar_one()
        treatment = treatment_for_customer(session, customer_id=platinum)
        view = customer_scores(session, customer_id=platinum)
        assert customer_scores(session, customer_id="NO-SUCH-CUSTOMER") is None
    assert treatment.value_tier == "platinum"
    assert treatment.offer_human_after_fallbacks == 1
    text = str(view)
    assert "platinum customer" in text and "RFM" in text and "CLV" in text
    assert view.clv > 0 and view.actual_value > 0
    assert 0 <= view.churn_risk <= 1
    assert view.top_churn_features or view.churn_band == "low"


def test_refresh_rejects_an_aware_reference_time(scored, model_file):
    factory, _ = scored
    with factory() as session, pytest.raises(InvalidInput, match="naive UTC"):
        refresh_scores(
            session,
            as_of=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
            model_file=model_file,
        )


def test_refresh_without_history_or_model_explains_why(empty_engine, tmp_path):
    with make_session_factory(empty_engine)() as session:
        with pytest.raises(InvalidInput, match="not enough history"):
            refresh_scores(session, as_of=AS_OF, model_file=tmp_path / "none.joblib")


def test_refresh_of_an_empty_store_with_a_model_writes_nothing(
    empty_engine, scored, model_file
):
    with make_session_factory(empty_engine).begin() as session:
        report = refresh_scores(session, as_of=AS_OF, model_file=model_file)
    assert (report.customers, report.written) == (0, 0)


def test_segment_summary_counts_every_scored_customer(scored):
    factory, _ = scored
    with factory() as session:
        segments = segment_summary(session)
        tiers = segment_summary(session, by="value_tier")
        with pytest.raises(InvalidInput, match="groups by"):
            segment_summary(session, by="email")
    assert sum(s.customers for s in segments) == 2000
    assert {s.name for s in tiers} == {"platinum", "gold", "silver", "bronze"}
    for s in segments:
        assert 0 <= s.value_at_risk <= s.clv
    assert any(s.value_at_risk > 0 for s in segments)
