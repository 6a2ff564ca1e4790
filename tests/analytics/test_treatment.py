from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from crm_store.analytics.treatment import (
    Treatment,
    load_rules,
    parse_rules,
    treatment_for_customer,
)
from crm_store.db import make_session_factory
from crm_store.errors import InvalidInput
from crm_store.models import Customer, CustomerScore

AS_OF = dt.datetime(2026, 11, 1, 12)


@pytest.fixture()
def scored(empty_engine):
    factory = make_session_factory(empty_engine)
    with factory.begin() as session:
        for cid, tier, band, segment in [
            ("P1", "platinum", "low", "champions"),
            ("H1", "bronze", "high", "at risk"),
            ("S1", "silver", "low", "loyal"),
        ]:
            session.add(Customer(id=cid, first_name=cid))
            session.flush()
            session.add(
                CustomerScore(
                    customer_id=cid,
                    as_of=AS_OF,
                    frequency=1,
                    monetary=10,
                    value_tier=tier,
                    churn_band=band,
                    rfm_segment=segment,
                )
            )
        session.add(Customer(id="U1", first_name="unscored"))
    return factory


def test_platinum_customer_is_offered_a_human_after_one_fallback(scored):
    with scored() as session:
        t = treatment_for_customer(session, customer_id="P1")
    assert t == Treatment(
        value_tier="platinum",
        churn_band="low",
        offer_human_after_fallbacks=1,
        goodwill_on_damage="a 10 EUR voucher",
        handoff_priority_boost=30,
        hand_off_on=("damaged_item",),
    )


def test_high_churn_risk_customer_gets_a_human_sooner_and_goodwill(scored):
    with scored() as session:
        t = treatment_for_customer(session, customer_id="H1")
    assert t.offer_human_after_fallbacks == 1
    assert t.goodwill_on_damage == "a 5 EUR voucher"
    assert t.handoff_priority_boost == 20  # max of churn (20) and at-risk (10)


@pytest.mark.parametrize("customer_id", ["U1", "NO-SUCH", None])
def test_unscored_unknown_or_anonymous_customers_get_the_default(scored, customer_id):
    with scored() as session:
        t = treatment_for_customer(session, customer_id=customer_id)
    assert t == Treatment(None, None, 2, None, 0)


def test_ordinary_customer_gets_the_default_settings(scored):
    with scored() as session:
        t = treatment_for_customer(session, customer_id="S1")
    assert (t.value_tier, t.offer_human_after_fallbacks, t.goodwill_on_damage) == (
        "silver",
        2,
        None,
    )


def test_rules_file_path_is_passed_by_the_caller(scored, tmp_path: Path, monkeypatch):
    path = tmp_path / "rules.yml"
    path.write_text(
        "default: {offer_human_after_fallbacks: 3}\n"
        "rules:\n  - when: {value_tier: silver}\n    handoff_priority_boost: 7\n"
    )
    t = load_rules(path).apply({"value_tier": "silver"})
    assert (t.offer_human_after_fallbacks, t.handoff_priority_boost) == (3, 7)
    with scored() as session:
        t = treatment_for_customer(session, customer_id="S1", rules_path=path)
    assert (t.offer_human_after_fallbacks, t.handoff_priority_boost) == (3, 7)
    # crm_store never reads the environment: only the caller chooses the file.
    monkeypatch.setenv("CRM_TREATMENT_RULES", str(path))
    assert load_rules().apply({"value_tier": "silver"}).handoff_priority_boost == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected a mapping"),
        ({"rules": [{"when": {"colour": ["red"]}}]}, "cannot match on 'colour'"),
        ({"rules": [{"handoff_priority_boost": 1}]}, "needs a 'when'"),
        ({"default": {"offer_human_after_fallbacks": -1}}, "whole number >= 0"),
        ({"default": {"free_pizza": True}}, "unknown setting"),
        ({"default": {"hand_off_on": "damaged_item"}}, "hand_off_on must be a list"),
        (
            {"rules": [{"when": {"value_tier": "gold"}, "hand_off_on": ["refund"]}]},
            r"rules\[0\]: hand_off_on must be a list of \['damaged_item'\]",
        ),
    ],
)
def test_malformed_rules_are_rejected_with_a_clear_message(data, message):
    with pytest.raises(InvalidInput, match=message):
        parse_rules(data)


def test_missing_rules_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(InvalidInput, match="not found"):
        load_rules(tmp_path / "missing.yml")


def test_hand_off_on_collects_the_events_of_every_matching_rule():
    rules = parse_rules(
        {
            "default": {"hand_off_on": []},
            "rules": [
                {"when": {"value_tier": "gold"}, "hand_off_on": ["damaged_item"]},
                {"when": {"churn_band": "high"}, "hand_off_on": ["damaged_item"]},
                {"when": {"churn_band": "low"}, "hand_off_on": None},
            ],
        }
    )
    assert rules.apply({"value_tier": "gold", "churn_band": "high"}).hand_off_on == (
        "damaged_item",
    )
    assert rules.apply({"value_tier": "silver", "churn_band": "low"}).hand_off_on == ()
    # The shipped rules: platinum only.
    shipped = load_rules()
    assert shipped.apply({"value_tier": "platinum"}).hand_off_on == ("damaged_item",)
    assert shipped.apply({"value_tier": "gold", "churn_band": "high"}).hand_off_on == ()
