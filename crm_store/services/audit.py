"""The audit log: writing one entry, and reading it back for the admin's page.

Writers (staff logins, handoff claims, identity links, contact changes, order
cancellations, exports) add rows to ``audit_log``; ``record_audit`` is the one
helper new writers use. ``audit_entries`` pages through the log newest first
(keyset on ``id``), filtered by a group of actions (``AUDIT_GROUPS``), an
action, an actor and a period.

What is shown: details as their writers stored them (contact addresses are
masked by ``contact_details``), except network data, which is never shown in
full: a client address in ``details["ip"]`` keeps only its network part, and
the salted client hash that failed logins are filed under is cut short.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput
from crm_store.models import AuditLog, utcnow
from crm_store.services.moments import parse_moment

AUDIT_GROUPS: dict[str, tuple[str, ...]] = {
    # crm_store.services.staff.authenticate
    "logins": ("login", "login_failed"),
    # crm_store.services.queue (claim, resolve, hand back; a ticket resolves)
    "claims": ("handoff_claimed", "handoff_resolved", "handoff_handed_back"),
    # console downloads and ``crm report export``
    "exports": ("report_exported", "story_exported", "scorecards_exported"),
    # identities.link_identity and contact_details (e-mail / phone changes)
    "identity links": (
        "identity.link",
        "customer.update_email",
        "customer.update_phone",
        "customer.request_update_email",
        "customer.request_update_phone",
    ),
    # order_changes.cancel_order
    "orders": ("order.cancel",),
    # scorecards.save_scorecard (manager review)
    "scorecards": ("scorecard_saved",),
    "erasures": ("customer_erased",),
    "settings": ("staff_created", "staff_role_changed", "settings_changed"),
}
MAX_LIMIT = 500
MAX_PERIOD_DAYS = 3660
ACTION_PATTERN = re.compile(r"[a-z0-9_.:-]{1,64}")
HASH_SHOWN = 10
# Column widths of ``audit_log``.
WIDTHS = {"actor": 64, "action": 64, "entity_type": 32, "entity_id": 128}


def record_audit(
    session: Session,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str,
    details: dict | None = None,
    at: dt.datetime | None = None,
) -> None:
    """Add one audit entry to ``session`` (committed with the caller's unit of work).

    ``details`` must hold JSON values and no personal data beyond ids (mask
    addresses first). ``at`` defaults to now (naive UTC).

    Raises:
        InvalidInput: an empty or over-long actor, action, entity type or id.
    """
    values = {
        "actor": actor,
        "action": action,
        "entity_type": entity_type,
        "entity_id": entity_id,
    }
    for name, value in values.items():
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(f"audit {name} must be a non-empty text")
        if len(value) > WIDTHS[name]:
            raise InvalidInput(f"audit {name} is at most {WIDTHS[name]} characters")
    if details is not None and not isinstance(details, dict):
        raise InvalidInput("audit details must be a mapping")
    session.add(
        AuditLog(
            occurred_at=at or utcnow(),
            actor=actor,
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
            details=dict(details or {}),
        )
    )
    session.flush()


@dataclass(frozen=True)
class AuditEntry:
    """One audit entry as staff see it (network data shortened)."""

    id: int
    occurred_at: dt.datetime
    actor: str
    action: str
    group: str | None
    entity_type: str
    entity_id: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``occurred_at`` as ISO 8601 with ``Z``)."""
        data = asdict(self)
        data["occurred_at"] = self.occurred_at.isoformat() + "Z"
        return data


@dataclass(frozen=True)
class AuditPage:
    """A page of entries, newest first; ``next_before_id`` pages on (None: last)."""

    items: list[AuditEntry]
    next_before_id: int | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "items": [entry.as_dict() for entry in self.items],
            "next_before_id": self.next_before_id,
        }


@dataclass(frozen=True)
class AuditFilters:
    """What the audit page asks for (all optional)."""

    group: str | None = None
    action: str | None = None
    actor: str | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None


def group_of(action: str) -> str | None:
    """The group an action belongs to, or None."""
    return next((g for g, actions in AUDIT_GROUPS.items() if action in actions), None)


def mask_ip(value: object) -> str | None:
    """An address with its host part hidden: ``203.0.113.x``, ``2001:db8:…``."""
    if not isinstance(value, str) or not value:
        return None
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return "(hidden)"
    if address.version == 4:
        return ".".join(str(address).split(".")[:3]) + ".x"
    return ":".join(address.exploded.split(":")[:3]) + ":…"


def _shown_details(details: object) -> dict[str, Any]:
    if not isinstance(details, dict):
        return {}
    shown = dict(details)
    if "ip" in shown:
        shown["ip"] = mask_ip(shown["ip"])
    return shown


def _shown_entity_id(entity_type: str, entity_id: str) -> str:
    if entity_type == "client" and len(entity_id) > HASH_SHOWN:
        return entity_id[:HASH_SHOWN] + "…"  # a salted address hash
    return entity_id


def _entry(row: AuditLog) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        occurred_at=row.occurred_at,
        actor=row.actor,
        action=row.action,
        group=group_of(row.action),
        entity_type=row.entity_type,
        entity_id=_shown_entity_id(row.entity_type, row.entity_id),
        details=_shown_details(row.details),
    )


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput("audit filters must be text")
    return value.strip() or None


def parse_time(value: str | None, *, end: bool = False) -> dt.datetime | None:
    """``YYYY-MM-DD`` or an ISO datetime, as naive UTC (None when empty).

    A date as ``end`` means the whole day (its next midnight).

    Raises:
        InvalidInput: not a date or datetime.
    """
    text = _clean(value)
    if text is None:
        return None
    try:
        return parse_moment(text, end=end)
    except ValueError:
        raise InvalidInput(
            f"{text[:40]!r} is not a date (YYYY-MM-DD) or ISO date-time"
        ) from None


def parse_audit_filters(params: Mapping[str, str | None]) -> AuditFilters:
    """Read the audit filters of a query (keys group, action, actor, from, to).

    Raises:
        InvalidInput: unknown group, malformed action, actor or period.
    """
    filters = AuditFilters(
        group=_clean(params.get("group")),
        action=_clean(params.get("action")),
        actor=_clean(params.get("actor")),
        start=parse_time(params.get("from")),
        end=parse_time(params.get("to"), end=True),
    )
    _check(filters)
    return filters


def _check(filters: AuditFilters) -> None:
    if filters.group is not None and filters.group not in AUDIT_GROUPS:
        raise InvalidInput(f"group must be one of {', '.join(AUDIT_GROUPS)}")
    if filters.action is not None and not ACTION_PATTERN.fullmatch(filters.action):
        raise InvalidInput("action must be 1-64 of a-z, 0-9, _ . : -")
    if filters.actor is not None and len(filters.actor) > WIDTHS["actor"]:
        raise InvalidInput(f"actor is at most {WIDTHS['actor']} characters")
    if filters.start and filters.end:
        if filters.start >= filters.end:
            raise InvalidInput("the period's start must be before its end")
        if (filters.end - filters.start).days > MAX_PERIOD_DAYS:
            raise InvalidInput(f"a period is at most {MAX_PERIOD_DAYS} days")


def audit_entries(
    session: Session,
    *,
    group: str | None = None,
    action: str | None = None,
    actor: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> AuditPage:
    """Audit entries newest first, filtered; ``before_id`` continues a page.

    ``start`` is inclusive, ``end`` exclusive (naive UTC). Group and action
    together match entries that satisfy both.

    Raises:
        InvalidInput: unknown group, malformed filter, limit outside 1..500,
            ``before_id`` below 1, or start not before end.
    """
    filters = AuditFilters(_clean(group), _clean(action), _clean(actor), start, end)
    _check(filters)
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidInput("limit must be a whole number")
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
    if before_id is not None and (
        isinstance(before_id, bool) or not isinstance(before_id, int) or before_id < 1
    ):
        raise InvalidInput("before_id must be a positive whole number")
    query = select(AuditLog)
    if filters.group is not None:
        query = query.where(AuditLog.action.in_(AUDIT_GROUPS[filters.group]))
    if filters.action is not None:
        query = query.where(AuditLog.action == filters.action)
    if filters.actor is not None:
        query = query.where(AuditLog.actor == filters.actor)
    if start is not None:
        query = query.where(AuditLog.occurred_at >= start)
    if end is not None:
        query = query.where(AuditLog.occurred_at < end)
    if before_id is not None:
        query = query.where(AuditLog.id < before_id)
    rows = (
        session.execute(query.order_by(AuditLog.id.desc()).limit(limit + 1))
        .scalars()
        .all()
    )
    items = [_entry(row) for row in rows[:limit]]
    more = len(rows) > limit
    return AuditPage(items, items[-1].id if more and items else None)
