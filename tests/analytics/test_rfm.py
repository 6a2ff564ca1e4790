"""Hand-computed RFM cases: quintile edges, ties, one order, zero spend."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from crm_store.analytics.rfm import compute_rfm, quintile_scores, segment

AS_OF = dt.datetime(2026, 11, 1, 12)


def scores(values, *, higher_is_better=True) -> list:
    result = quintile_scores(
        pd.Series(values, dtype="float64"), higher_is_better=higher_is_better
    )
    return [None if pd.isna(v) else int(v) for v in result]


def test_ten_distinct_values_fill_each_quintile_with_two():
    assert scores(range(1, 11)) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_five_distinct_values_score_one_to_five():
    assert scores([50, 10, 40, 20, 30]) == [5, 1, 4, 2, 3]


def test_lower_is_better_reverses_the_scores():
    assert scores([1, 2, 3, 4, 5], higher_is_better=False) == [5, 4, 3, 2, 1]


def test_quintile_edge_belongs_to_the_upper_quintile():
    # 7 values: share strictly smaller = 0, 1/7, ... 6/7 -> floor(5 * share) + 1
    assert scores(range(7)) == [1, 1, 2, 3, 3, 4, 5]


def test_ties_share_the_lower_score():
    assert scores([1, 1, 1, 1, 5]) == [1, 1, 1, 1, 5]
    assert scores([3, 3, 3, 3]) == [1, 1, 1, 1]


def test_missing_values_get_no_score_and_do_not_count():
    assert scores([np.nan, 10, 20, 30, 40, 50]) == [None, 1, 2, 3, 4, 5]


def test_a_single_buyer_gets_score_one():
    assert scores([42.0]) == [1]


def order_summary(rows: dict[str, tuple]) -> pd.DataFrame:
    """rows: id -> (purchases, spend, first, last)."""
    frame = pd.DataFrame.from_dict(
        rows,
        orient="index",
        columns=["purchases", "spend", "first_purchase", "last_purchase"],
    )
    frame["first_purchase"] = pd.to_datetime(frame["first_purchase"])
    frame["last_purchase"] = pd.to_datetime(frame["last_purchase"])
    return frame


def test_compute_rfm_one_order_customer_and_zero_spend_prospect():
    orders = order_summary(
        {
            "A": (1, 80.0, "2026-10-30T12:00", "2026-10-30T12:00"),
            "B": (5, 500.0, "2025-01-01T00:00", "2026-10-20T12:00"),
            "C": (2, 20.0, "2024-01-01T00:00", "2025-06-01T00:00"),
        }
    )
    rfm = compute_rfm(pd.Index(["A", "B", "C", "P"]), orders, as_of=AS_OF)
    a, b, c, p = (rfm.loc[i] for i in "ABCP")
    # A: 2 days ago, one order of 80
    assert (a.recency_days, a.frequency, a.monetary) == (2, 1, 80.0)
    # recency: 2 of 3 buyers are worse than A -> 1 + floor(5 * 2 / 3) = 4
    assert (a.r_score, b.r_score, c.r_score) == (4, 2, 1)
    assert (a.f_score, b.f_score, c.f_score) == (1, 4, 2)
    assert (a.m_score, b.m_score, c.m_score) == (2, 4, 1)
    assert a.rfm_segment == "new"
    # prospect without orders: no recency, zero frequency and spend, no scores
    assert pd.isna(p.recency_days) and p.frequency == 0 and p.monetary == 0
    assert pd.isna(p.r_score) and pd.isna(p.f_score) and pd.isna(p.m_score)
    assert p.rfm_segment == "prospect"


def test_recency_days_are_whole_days_rounded_down():
    orders = order_summary({"A": (1, 10.0, "2026-10-31T13:00", "2026-10-31T13:00")})
    rfm = compute_rfm(pd.Index(["A"]), orders, as_of=AS_OF)
    assert rfm.loc["A", "recency_days"] == 0  # 23 hours ago


@pytest.mark.parametrize(
    ("r", "f", "m", "purchases", "expected"),
    [
        (5, 5, 5, 9, "champions"),
        (4, 4, 4, 6, "champions"),
        (5, 1, 3, 1, "new"),
        (3, 3, 3, 3, "loyal"),
        (4, 2, 3, 2, "potential loyalists"),
        (2, 5, 4, 8, "can't lose"),
        (1, 3, 3, 3, "at risk"),
        (2, 1, 2, 1, "hibernating"),
        (3, 1, 1, 1, "hibernating"),
        (1, 1, 2, 1, "lost"),
    ],
)
def test_segment_rules(r, f, m, purchases, expected):
    result = segment(
        pd.Series([r], dtype="Int64"),
        pd.Series([f], dtype="Int64"),
        pd.Series([m], dtype="Int64"),
        pd.Series([purchases]),
    )
    assert result.iloc[0] == expected
