"""Customer value categories from actual value (past margin) and potential (CLV).

value score = w_actual * actual value + w_potential * CLV (weights configurable).
Among customers with a positive value score, the score's percentile decides the
tier: >= ``platinum`` quantile (default top 5 %) platinum, >= ``gold`` (top 20 %)
gold, >= ``silver`` (top 50 %) silver, else bronze. Customers with no value at all
(prospects, zero spend) are bronze.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from crm_store.analytics.config import TIERS, AnalyticsConfig


def value_tiers(
    actual_value: pd.Series, clv: pd.Series, *, config: AnalyticsConfig
) -> pd.Series:
    """Return each customer's tier name (index of ``actual_value``)."""
    w = config.tier_weights
    score = w["actual"] * actual_value.fillna(0) + w["potential"] * clv.fillna(0)
    positive = score[score > 0]
    tiers = pd.Series(TIERS[-1], index=score.index, dtype="object")
    if positive.empty:
        return tiers
    q = config.tier_quantiles
    cuts = np.quantile(positive.to_numpy(), [q["platinum"], q["gold"], q["silver"]])
    values = score.to_numpy()
    names = np.select(
        [values >= cuts[0], values >= cuts[1], values >= cuts[2]],
        list(TIERS[:3]),
        default=TIERS[-1],
    )
    names = np.where(values > 0, names, TIERS[-1])
    return pd.Series(names, index=score.index, dtype="object")


def churn_bands(risk: pd.Series, *, config: AnalyticsConfig) -> pd.Series:
    """Map churn probabilities to low/medium/high (missing stays missing)."""
    b = config.churn_bands
    values = risk.to_numpy(dtype="float64", na_value=np.nan)
    names = np.select(
        [values >= b["high"], values >= b["medium"]], ["high", "medium"], "low"
    ).astype(object)
    names[np.isnan(values)] = None
    return pd.Series(names, index=risk.index, dtype="object")
