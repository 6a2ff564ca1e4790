"""RFM: recency, frequency and monetary value, 1-5 scores and named segments.

Scores are quintiles among customers with at least one purchase. A customer's
score is ``1 + floor(5 * share of buyers strictly worse)``, so equal values always
get the same score (ties share the lower quintile), the best distinct value of
five or more buyers gets 5, and a single buyer gets 1. Recency is "worse" when
larger; frequency and monetary when smaller. Customers without purchases
(prospects, zero spend) get no scores and the segment ``prospect``.

Segments, first matching rule wins (``fm`` = mean of F and M scores):

==================== ==========================================
champions            R >= 4 and fm >= 4
new                  R >= 4 and exactly one purchase
loyal                R >= 3 and fm >= 3
potential loyalists  R >= 3 and fm >= 2
can't lose           R <= 2 and fm >= 4
at risk              R <= 2 and fm >= 3
hibernating          R >= 2
lost                 everyone else (R = 1, fm < 3)
==================== ==========================================
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

SEGMENTS = (
    "champions",
    "new",
    "loyal",
    "potential loyalists",
    "can't lose",
    "at risk",
    "hibernating",
    "lost",
)
PROSPECT = "prospect"


def quintile_scores(values: pd.Series, *, higher_is_better: bool) -> pd.Series:
    """Score ``values`` 1-5 by the share of values strictly worse (ties equal).

    NaN values (customers without purchases) get a missing score.
    """
    valid = values.dropna()
    n = len(valid)
    scores = pd.Series(pd.NA, index=values.index, dtype="Int64")
    if n == 0:
        return scores
    # rank "min" = 1 + number of strictly smaller values
    smaller = valid.rank(method="min", ascending=True) - 1
    larger = valid.rank(method="min", ascending=False) - 1
    worse = smaller if higher_is_better else larger
    scores.loc[valid.index] = (1 + np.floor(5 * worse.to_numpy() / n)).astype(int)
    return scores


def segment(
    r: pd.Series, f: pd.Series, m: pd.Series, purchases: pd.Series
) -> pd.Series:
    """Name each customer's segment from R, F, M scores (see the module table)."""
    fm = (f.astype("float64") + m.astype("float64")) / 2
    rr = r.astype("float64")
    conditions = [
        (rr >= 4) & (fm >= 4),
        (rr >= 4) & (purchases == 1),
        (rr >= 3) & (fm >= 3),
        (rr >= 3) & (fm >= 2),
        (rr <= 2) & (fm >= 4),
        (rr <= 2) & (fm >= 3),
        rr >= 2,
    ]
    conditions = [c.fillna(False).to_numpy(dtype=bool) for c in conditions]
    names = np.select(conditions, list(SEGMENTS[:-1]), default=SEGMENTS[-1])
    names = np.where(r.isna().to_numpy(), PROSPECT, names)
    return pd.Series(names, index=r.index, dtype="object")


def compute_rfm(
    customers: pd.Index, orders: pd.DataFrame, *, as_of: dt.datetime
) -> pd.DataFrame:
    """Return recency_days, frequency, monetary, r/f/m scores and segment.

    Args:
        customers: every customer id to score (prospects included).
        orders: :func:`~crm_store.analytics.features.load_order_summary` output
            for orders placed before ``as_of``.
        as_of: the reference time.
    """
    o = orders.reindex(customers)
    purchases = o["purchases"].fillna(0).astype("int64")
    buyers = purchases > 0
    last = o["last_purchase"].where(buyers)
    recency = (pd.Timestamp(as_of) - last) / np.timedelta64(1, "D")
    out = pd.DataFrame(index=customers)
    out["recency_days"] = np.floor(recency).astype("Int64")
    out["frequency"] = purchases
    out["monetary"] = o["spend"].fillna(0.0).where(buyers, 0.0)
    out["r_score"] = quintile_scores(recency.where(buyers), higher_is_better=False)
    out["f_score"] = quintile_scores(
        purchases.astype("float64").where(buyers), higher_is_better=True
    )
    out["m_score"] = quintile_scores(
        out["monetary"].where(buyers), higher_is_better=True
    )
    out["rfm_segment"] = segment(
        out["r_score"], out["f_score"], out["m_score"], purchases
    )
    return out
