"""Treatment rules: how the bot and the handoff queue treat a customer.

Reads the customer's ``customer_scores`` row (one primary-key read) and applies the
rules of a YAML file (``config/treatment.yml``, or the path the caller passes,
e.g. ``crm_settings``' ``treatment_rules`` from ``CRM_TREATMENT_RULES``). Unknown,
unscored or anonymous customers get the file's ``default`` treatment. See
``docs/analytics/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput
from crm_store.models import CustomerScore
from crm_store.settings import PROJECT_ROOT

DEFAULT_RULES_PATH = PROJECT_ROOT / "config" / "treatment.yml"
MATCH_FIELDS = ("value_tier", "churn_band", "rfm_segment")
SETTINGS = (
    "offer_human_after_fallbacks",
    "goodwill_on_damage",
    "handoff_priority_boost",
    "hand_off_on",
)
# Events after which the bot queues a handoff (reason ``business_rule``) on its
# own: ``damaged_item`` = a damage ticket was opened (``action_report_damage``).
HANDOFF_EVENTS = ("damaged_item",)


@dataclass(frozen=True)
class Treatment:
    """How to treat one customer.

    Attributes:
        value_tier: platinum, gold, silver or bronze; None when not scored yet.
        churn_band: low, medium or high; None when not scored yet.
        offer_human_after_fallbacks: offer a human after this many bot fallbacks.
        goodwill_on_damage: gesture offered for a damaged item (e.g. "a 10 EUR
            voucher"), or None.
        handoff_priority_boost: added to the handoff priority (higher = sooner).
        hand_off_on: events (``HANDOFF_EVENTS``) after which the bot hands the
            customer to a person without being asked.
    """

    value_tier: str | None
    churn_band: str | None
    offer_human_after_fallbacks: int
    goodwill_on_damage: str | None
    handoff_priority_boost: int
    hand_off_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    """One rule: conditions on score fields and the settings it adjusts."""

    name: str
    when: dict[str, frozenset[str]]
    settings: dict[str, Any] = field(default_factory=dict)

    def matches(self, values: dict[str, str | None]) -> bool:
        """Tell whether every condition holds for ``values``."""
        return all(values.get(key) in allowed for key, allowed in self.when.items())


@dataclass(frozen=True)
class TreatmentRules:
    """The parsed rules file: a default treatment and ordered rules."""

    default: dict[str, Any]
    rules: tuple[Rule, ...]

    def apply(self, values: dict[str, str | None]) -> Treatment:
        """Return the treatment for a customer with score fields ``values``."""
        fallbacks = int(self.default["offer_human_after_fallbacks"])
        boost = int(self.default["handoff_priority_boost"])
        goodwill = self.default.get("goodwill_on_damage")
        goodwill_set = False
        hand_off_on = list(self.default.get("hand_off_on") or [])
        for rule in self.rules:
            if not rule.matches(values):
                continue
            s = rule.settings
            if "offer_human_after_fallbacks" in s:
                fallbacks = min(fallbacks, int(s["offer_human_after_fallbacks"]))
            if "handoff_priority_boost" in s:
                boost = max(boost, int(s["handoff_priority_boost"]))
            if not goodwill_set and s.get("goodwill_on_damage"):
                goodwill, goodwill_set = s["goodwill_on_damage"], True
            for event in s.get("hand_off_on") or []:
                if event not in hand_off_on:
                    hand_off_on.append(event)
        return Treatment(
            value_tier=values.get("value_tier"),
            churn_band=values.get("churn_band"),
            offer_human_after_fallbacks=fallbacks,
            goodwill_on_damage=goodwill,
            handoff_priority_boost=boost,
            hand_off_on=tuple(hand_off_on),
        )


def parse_rules(data: Any, *, source: str = "<rules>") -> TreatmentRules:
    """Validate a rules mapping (as loaded from YAML).

    Raises:
        InvalidInput: the mapping is malformed (the message names ``source``).
    """

    def fail(message: str) -> InvalidInput:
        return InvalidInput(f"{source}: {message}")

    if not isinstance(data, dict):
        raise fail("expected a mapping with 'default' and 'rules'")
    default = {
        "offer_human_after_fallbacks": 2,
        "goodwill_on_damage": None,
        "handoff_priority_boost": 0,
        "hand_off_on": [],
    }
    default.update(_settings(data.get("default") or {}, fail, "default"))
    rules = []
    for index, item in enumerate(data.get("rules") or []):
        where = f"rules[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("when"), dict):
            raise fail(f"{where} needs a 'when' mapping")
        when = {}
        for key, allowed in item["when"].items():
            if key not in MATCH_FIELDS:
                raise fail(f"{where}: cannot match on {key!r} ({MATCH_FIELDS})")
            allowed = allowed if isinstance(allowed, list) else [allowed]
            when[key] = frozenset(str(a) for a in allowed)
        extra = {k: v for k, v in item.items() if k not in ("name", "when")}
        rules.append(
            Rule(
                name=str(item.get("name", where)),
                when=when,
                settings=_settings(extra, fail, where),
            )
        )
    return TreatmentRules(default=default, rules=tuple(rules))


def _settings(raw: Any, fail: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise fail(f"{where} must be a mapping")
    unknown = set(raw) - set(SETTINGS)
    if unknown:
        raise fail(f"{where}: unknown setting(s) {sorted(unknown)}")
    for key in ("offer_human_after_fallbacks", "handoff_priority_boost"):
        value = raw.get(key)
        if key in raw and (not isinstance(value, int) or value < 0):
            raise fail(f"{where}: {key} must be a whole number >= 0")
    goodwill = raw.get("goodwill_on_damage")
    if goodwill is not None and not isinstance(goodwill, str):
        raise fail(f"{where}: goodwill_on_damage must be text or null")
    if "hand_off_on" in raw:
        events = raw["hand_off_on"]
        if events is None:
            events = []
        if not isinstance(events, list) or any(e not in HANDOFF_EVENTS for e in events):
            raise fail(
                f"{where}: hand_off_on must be a list of {list(HANDOFF_EVENTS)}, "
                "e.g. hand_off_on: [damaged_item]"
            )
        raw = {**raw, "hand_off_on": list(events)}
    return dict(raw)


@lru_cache(maxsize=8)
def _load_cached(path: str, mtime: float) -> TreatmentRules:
    with open(path, encoding="utf-8") as handle:
        return parse_rules(yaml.safe_load(handle), source=path)


def load_rules(path: str | Path | None = None) -> TreatmentRules:
    """Load the rules file (cached until the file changes).

    Args:
        path: the YAML file; default ``config/treatment.yml``.

    Raises:
        InvalidInput: the file is missing or malformed.
    """
    resolved = Path(path or DEFAULT_RULES_PATH)
    try:
        mtime = resolved.stat().st_mtime
    except OSError:
        raise InvalidInput(f"treatment rules file {resolved} not found") from None
    return _load_cached(str(resolved), mtime)


def treatment_for_customer(
    session: Session,
    *,
    customer_id: str | None,
    rules: TreatmentRules | None = None,
    rules_path: str | Path | None = None,
) -> Treatment:
    """Return how to treat ``customer_id`` (default treatment if unknown/unscored).

    Args:
        session: an open session; only the customer's score row is read.
        customer_id: the customer, or None for an unidentified contact.
        rules: rules to apply (default: ``load_rules(rules_path)``).
        rules_path: the rules file when ``rules`` is not given (default
            ``config/treatment.yml``).
    """
    rules = rules or load_rules(rules_path)
    score = session.get(CustomerScore, customer_id) if customer_id else None
    values: dict[str, str | None] = {
        key: getattr(score, key) if score is not None else None for key in MATCH_FIELDS
    }
    return rules.apply(values)
