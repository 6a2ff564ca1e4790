"""Analytics settings: margin, discount rate, horizons, tier and churn-band rules.

Defaults live here; ``config/analytics.yml`` (or the file the caller passes, e.g.
``crm_settings``' ``analytics_config`` from ``CRM_ANALYTICS_CONFIG``) overrides any
of them. See ``docs/analytics/README.md`` for what each setting means.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from crm_store.errors import InvalidInput
from crm_store.settings import PROJECT_ROOT

DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config" / "analytics.yml"
DEFAULT_MODEL_PATH = PROJECT_ROOT / "var" / "models" / "churn.joblib"
TIERS = ("platinum", "gold", "silver", "bronze")


@dataclass(frozen=True)
class AnalyticsConfig:
    """Every knob of the analytics (all have documented defaults).

    Attributes:
        margin_rate: gross margin as a share of order subtotal (products carry no
            cost), used for actual value and CLV.
        annual_discount_rate: yearly rate used to discount future margin (NPV).
        clv_horizon_months: how far ahead CLV counts future purchases.
        clv_step_months: discounting step (purchases of a step are discounted
            from its end).
        heuristic_retention: yearly retention assumed by the heuristic CLV.
        churn_horizon_days: a customer "churns" who buys nothing in this many days.
        tier_weights: weights of actual value and CLV in the value score.
        tier_quantiles: minimum value-score percentile (among buyers) per tier.
        churn_bands: lower probability bound of the medium and high bands.
        churn_threshold: decision threshold reported in the evaluation.
        fit_sample: at most this many customers are used to fit BG/NBD and
            Gamma-Gamma (prediction covers everyone).
        write_chunk: rows per bulk upsert statement.
    """

    margin_rate: float = 0.30
    annual_discount_rate: float = 0.10
    clv_horizon_months: int = 36
    clv_step_months: int = 3
    heuristic_retention: float = 0.6
    churn_horizon_days: int = 180
    tier_weights: dict[str, float] = field(
        default_factory=lambda: {"actual": 0.5, "potential": 1.0}
    )
    tier_quantiles: dict[str, float] = field(
        default_factory=lambda: {"platinum": 0.95, "gold": 0.80, "silver": 0.50}
    )
    churn_bands: dict[str, float] = field(
        default_factory=lambda: {"medium": 0.6, "high": 0.85}
    )
    churn_threshold: float = 0.85
    fit_sample: int = 50_000
    write_chunk: int = 5_000

    def __post_init__(self) -> None:
        """Reject values that would give meaningless scores."""
        checks = [
            (0 < self.margin_rate <= 1, "margin_rate must be in (0, 1]"),
            (
                0 <= self.annual_discount_rate < 1,
                "annual_discount_rate must be in [0, 1)",
            ),
            (1 <= self.clv_horizon_months <= 240, "clv_horizon_months: 1..240"),
            (1 <= self.clv_step_months <= 12, "clv_step_months: 1..12"),
            (0 <= self.heuristic_retention <= 1, "heuristic_retention: 0..1"),
            (7 <= self.churn_horizon_days <= 730, "churn_horizon_days: 7..730"),
            (self.fit_sample >= 100, "fit_sample must be >= 100"),
            (self.write_chunk >= 1, "write_chunk must be >= 1"),
            (0 < self.churn_threshold < 1, "churn_threshold must be in (0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidInput(f"analytics config: {message}")
        q = self.tier_quantiles
        if set(q) != set(TIERS[:3]) or not (
            1 > q["platinum"] > q["gold"] > q["silver"] >= 0
        ):
            raise InvalidInput(
                "analytics config: tier_quantiles needs platinum > gold > silver "
                "in [0, 1)"
            )
        if (
            set(self.tier_weights) != {"actual", "potential"}
            or min(self.tier_weights.values()) < 0
        ):
            raise InvalidInput(
                "analytics config: tier_weights needs actual, potential >= 0"
            )
        b = self.churn_bands
        if set(b) != {"medium", "high"} or not 0 < b["medium"] < b["high"] < 1:
            raise InvalidInput(
                "analytics config: churn_bands needs 0 < medium < high < 1"
            )

    def fingerprint(self) -> str:
        """A short hash of every setting that changes scores."""
        data = dataclasses.asdict(self)
        data.pop("write_chunk")
        raw = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:12]

    def replace(self, **changes: Any) -> AnalyticsConfig:
        """Return a copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)


def load_config(path: str | Path | None = None) -> AnalyticsConfig:
    """Return the defaults overridden by the YAML file, when there is one.

    Args:
        path: the YAML file; default ``config/analytics.yml`` (a missing default
            file means plain defaults, a missing explicit file is an error).

    Raises:
        InvalidInput: the file is missing, names unknown settings or has invalid
            values.
    """
    resolved = Path(path or DEFAULT_CONFIG_PATH)
    if not resolved.exists():
        if path:
            raise InvalidInput(f"analytics config file {resolved} not found")
        return AnalyticsConfig()
    data = yaml.safe_load(resolved.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise InvalidInput(f"{resolved}: expected a mapping of settings")
    known = {f.name for f in dataclasses.fields(AnalyticsConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidInput(f"{resolved}: unknown setting(s) {unknown}")
    try:
        return AnalyticsConfig(**data)
    except TypeError as exc:
        raise InvalidInput(f"{resolved}: {exc}") from None


def model_path(path: str | Path | None = None) -> Path:
    """The churn model file: ``path``, or ``var/models/churn.joblib`` without one."""
    return Path(path or DEFAULT_MODEL_PATH)
