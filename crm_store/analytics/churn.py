"""Churn risk: logistic regression on RFM and contact-history features.

A customer (with at least one purchase) "churns" after a cutoff when they buy
nothing in the following ``churn_horizon_days``. Training stacks several past
cutoffs whose outcome window is fully observed; the model is saved with joblib
and reused by ``crm analytics refresh``. Logistic regression on standardised
features keeps each prediction explainable: a feature's contribution is its
coefficient times its standardised value.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sqlalchemy.orm import Session

from crm_store.analytics.features import (
    contact_features,
    load_contacts,
    load_order_summary,
    load_purchases_between,
)
from crm_store.errors import InvalidInput

logger = logging.getLogger(__name__)

FEATURE_LABELS = {
    "log_recency": "days since last purchase",
    "log_frequency": "number of purchases",
    "log_monetary": "total spend",
    "log_tenure": "time since first purchase",
    "log_gap": "typical time between purchases",
    "overdue": "overdue versus usual rhythm",
    "returned": "returned orders",
    "cancelled": "cancelled orders",
    "contacts": "contacts",
    "complaints": "complaints",
    "unresolved": "unresolved contacts",
    "low_csat": "low CSAT answers",
    "escalations": "escalations to an agent",
    "contacts_since_purchase": "contacts since last purchase",
    "problems_since_purchase": "problems since last purchase",
}
FEATURES = tuple(FEATURE_LABELS)
MODEL_VERSION = 1


def churn_features(
    orders: pd.DataFrame,
    contacts: pd.DataFrame,
    *,
    as_of: dt.datetime,
    history: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Feature matrix (one row per buyer) from aggregates before ``as_of``.

    ``history`` (from :func:`contact_features`) is computed from ``contacts``
    when not given.
    """
    buyers = orders[orders["purchases"] > 0]
    at = pd.Timestamp(as_of)
    recency = (at - buyers["last_purchase"]) / np.timedelta64(1, "D")
    tenure = (at - buyers["first_purchase"]) / np.timedelta64(1, "D")
    gap = tenure / buyers["purchases"]
    f = pd.DataFrame(index=buyers.index)
    f["log_recency"] = np.log1p(recency.clip(lower=0))
    f["log_frequency"] = np.log1p(buyers["purchases"])
    f["log_monetary"] = np.log1p(buyers["spend"].clip(lower=0))
    f["log_tenure"] = np.log1p(tenure.clip(lower=0))
    f["log_gap"] = np.log1p(gap.clip(lower=0))
    f["overdue"] = recency / (gap + 30)
    f["returned"] = buyers["returned"]
    f["cancelled"] = buyers["cancelled"]
    if history is None:
        history = contact_features(
            contacts, index=buyers.index, last_purchase=buyers["last_purchase"]
        )
    f = f.join(history.reindex(buyers.index))
    return f[list(FEATURES)].astype("float64")


@dataclass
class ChurnModel:
    """A fitted pipeline with what it was trained on."""

    pipeline: Pipeline
    trained_as_of: dt.datetime
    horizon_days: int
    cutoffs: list[dt.datetime]
    rows: int
    version: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    def predict(self, features: pd.DataFrame) -> pd.Series:
        """Churn probability per row of ``features``."""
        if features.empty:
            return pd.Series(dtype="float64", index=features.index)
        proba = self.pipeline.predict_proba(features[list(FEATURES)])[:, 1]
        return pd.Series(proba, index=features.index)

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame:
        """Each feature's contribution to the log-odds (coef x standardised value)."""
        scaler: StandardScaler = self.pipeline.named_steps["scale"]
        model: LogisticRegression = self.pipeline.named_steps["model"]
        z = scaler.transform(features[list(FEATURES)])
        return pd.DataFrame(z * model.coef_[0], index=features.index, columns=FEATURES)

    def top_features(self, features: pd.DataFrame, k: int = 3) -> list[list]:
        """The ``k`` contributions that raise the risk most, per row, readable."""
        if features.empty:
            return []
        contrib = self.contributions(features).to_numpy()
        order = np.argsort(-contrib, axis=1)[:, :k]
        labels = np.array([FEATURE_LABELS[f] for f in FEATURES], dtype=object)
        return [
            [[labels[j], round(float(row[j]), 2)] for j in idx if row[j] > 0]
            for row, idx in zip(contrib, order, strict=True)
        ]


def labelled_frame(
    session: Session, *, cutoff: dt.datetime, horizon_days: int
) -> tuple[pd.DataFrame, pd.Series]:
    """Features at ``cutoff`` and the churn label over the next ``horizon_days``."""
    orders = load_order_summary(session, until=cutoff)
    contacts = load_contacts(session, until=cutoff)
    x = churn_features(orders, contacts, as_of=cutoff)
    later = load_purchases_between(
        session, start=cutoff, end=cutoff + dt.timedelta(days=horizon_days)
    )
    y = pd.Series(~x.index.isin(later.index), index=x.index).astype(int)
    return x, y


def training_cutoffs(
    as_of: dt.datetime, *, horizon_days: int, count: int = 3
) -> list[dt.datetime]:
    """Cutoffs whose outcome window ends by ``as_of`` (most recent first)."""
    step = dt.timedelta(days=horizon_days)
    return [as_of - step * k for k in range(1, count + 1)]


def train_churn_model(
    session: Session,
    *,
    as_of: dt.datetime,
    horizon_days: int = 180,
    cutoffs: list[dt.datetime] | None = None,
) -> ChurnModel:
    """Fit the model on stacked cutoffs before ``as_of``.

    Raises:
        InvalidInput: too little history (fewer than 20 labelled buyers or one
            class only).
    """
    cutoffs = cutoffs or training_cutoffs(as_of, horizon_days=horizon_days)
    frames = [
        labelled_frame(session, cutoff=c, horizon_days=horizon_days) for c in cutoffs
    ]
    x = pd.concat([f for f, _ in frames])
    y = pd.concat([label for _, label in frames])
    if len(y) < 20 or y.nunique() < 2:
        raise InvalidInput(
            f"not enough history to train the churn model before {as_of:%Y-%m-%d} "
            f"({len(y)} labelled customers)"
        )
    pipeline = Pipeline(
        [("scale", StandardScaler()), ("model", LogisticRegression(max_iter=2000))]
    )
    pipeline.fit(x, y)
    version = f"v{MODEL_VERSION}-{as_of:%Y%m%dT%H%M}-{len(y)}"
    return ChurnModel(
        pipeline=pipeline,
        trained_as_of=as_of,
        horizon_days=horizon_days,
        cutoffs=cutoffs,
        rows=len(y),
        version=version,
    )


def save_model(model: ChurnModel, path: Path) -> None:
    """Write the model with joblib (parent directory created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, path)


def load_model(path: Path) -> ChurnModel | None:
    """Load a saved model, or None when the file is missing or unreadable."""
    if not path.exists():
        return None
    try:
        model = joblib.load(path)
    except Exception:  # noqa: BLE001 - a stale or foreign file: retrain
        logger.warning("churn model %s is unreadable; it will be retrained", path)
        return None
    if not isinstance(model, ChurnModel) or not model.version.startswith(
        f"v{MODEL_VERSION}-"
    ):
        return None
    return model
