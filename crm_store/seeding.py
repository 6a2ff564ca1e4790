"""Load a fixture directory (``data/demo/``) into the store, validated and idempotent.

Every row of every file is validated before anything is written. If any row is
bad, the errors are reported as ``file:line: message`` and nothing at all is
written (one transaction). Loading the same directory twice changes nothing:
rows are inserted with ``ON CONFLICT DO NOTHING`` on their natural keys, and the
time shift chosen the first time is reused.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.db import dialect_insert
from crm_store.errors import InvalidInput
from crm_store.models import (
    CHANNELS,
    ORDER_STATUSES,
    ChannelIdentity,
    Conversation,
    Customer,
    Dataset,
    Interaction,
    Order,
    OrderLine,
    Product,
    utcnow,
)
from crm_store.services.normalize import normalize_identity

DEFAULT_AS_OF = dt.datetime(2026, 11, 1, 12, 0, 0)
FILES = (
    "customers.csv",
    "products.csv",
    "orders.csv",
    "order_items.csv",
    "interactions.csv",
)
CHUNK = 1000
ProgressFn = Callable[[str, int, int], None]


class SeedValidationError(Exception):
    """A fixture failed validation; ``errors`` holds ``file:line: message`` strings."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__(f"{len(errors)} invalid row(s); nothing was loaded")


@dataclass
class SeedReport:
    """What one seeding run did: rows inserted and skipped (already there) per table."""

    dataset: str
    shift: dt.timedelta
    inserted: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass
class _Parsed:
    """Validated rows per table, ready to insert."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class _RowReader:
    """Parse typed fields of one CSV row, recording ``file:line`` errors."""

    def __init__(self, path: str, line: int, row: dict[str, str], errors: list[str]):
        self.path, self.line, self.row, self.errors = path, line, row, errors
        self.ok = True

    def fail(self, message: str) -> None:
        self.ok = False
        self.errors.append(f"{self.path}:{self.line}: {message}")

    def text(self, name: str, *, required: bool = True, pattern: str | None = None):
        value = (self.row.get(name) or "").strip()
        if not value:
            if required:
                self.fail(f"{name} is empty")
            return None
        if pattern and not re.fullmatch(pattern, value):
            self.fail(f"{name} {value!r} is not valid")
            return None
        return value

    def when(self, name: str, *, required: bool = True) -> dt.datetime | None:
        value = self.text(name, required=required)
        if value is None:
            return None
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{name} {value!r} is not a date-time (YYYY-MM-DDTHH:MM:SS)")
            return None
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return parsed

    def money(self, name: str) -> Decimal | None:
        value = self.text(name)
        try:
            amount = Decimal(value) if value is not None else None
        except InvalidOperation:
            self.fail(f"{name} {value!r} is not an amount")
            return None
        if amount is not None and (amount < 0 or not amount.is_finite()):
            self.fail(f"{name} {value!r} must not be negative")
            return None
        return amount

    def integer(self, name: str, *, low: int, high: int, required: bool = True):
        value = self.text(name, required=required)
        if value is None:
            return None
        if not re.fullmatch(r"-?\d+", value) or not low <= int(value) <= high:
            self.fail(f"{name} {value!r} must be a whole number from {low} to {high}")
            return None
        return int(value)

    def choice(self, name: str, allowed: Iterable[str], *, required: bool = True):
        value = self.text(name, required=required)
        if value is not None and value not in allowed:
            self.fail(f"{name} {value!r} must be one of {', '.join(sorted(allowed))}")
            return None
        return value

    def boolean(self, name: str) -> bool | None:
        value = self.choice(name, ("true", "false"))
        return None if value is None else value == "true"

    def identity(self, kind: str, name: str, *, required: bool) -> str | None:
        value = self.text(name, required=required)
        if value is None:
            return None
        try:
            return normalize_identity(kind, value)
        except InvalidInput as exc:
            self.fail(f"{name}: {exc}")
            return None


def _read_csv(directory: Path, name: str, parsed: _Parsed):
    """Yield (reader, line) per data row; a missing file or column is an error."""
    path = directory / name
    if not path.is_file():
        parsed.errors.append(f"{path}: file is missing")
        return
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        yield from (
            (_RowReader(str(path), n, row, parsed.errors), row)
            for n, row in enumerate(reader, start=2)
        )


def _unique(reader: _RowReader, key: str | None, seen: dict[str, int], label: str):
    if key is None:
        return
    if key in seen:
        reader.fail(f"duplicate {label} {key} (first at line {seen[key]})")
    else:
        seen[key] = reader.line


def _parse(
    directory: Path,
    shift: dt.timedelta,
    known_customers: set[str],
    known_skus: set[str],
    known_orders: set[str],
) -> _Parsed:
    parsed = _Parsed()

    def s(t):
        return t + shift if t is not None else None

    customers, identities, seen, seen_identities = [], [], {}, {}
    for r, _ in _read_csv(directory, "customers.csv", parsed):
        cid = r.text("customer_id", pattern=r"[A-Za-z0-9_-]{1,32}")
        _unique(r, cid, seen, "customer_id")
        row = dict(
            id=cid,
            first_name=r.text("first_name"),
            last_name=r.text("last_name"),
            email=r.identity("email", "email", required=True),
            phone=r.identity("phone", "phone", required=False),
            postcode=r.text("postcode"),
            created_at=s(r.when("created_at")),
            marketing_opt_in=r.boolean("marketing_opt_in"),
            preferred_channel=r.choice("preferred_channel", CHANNELS, required=False),
            language=r.text("language", required=False) or "en",
            is_prospect=False,
        )
        telegram = r.identity("telegram", "telegram_user_id", required=False)
        for kind, value in (
            ("email", row["email"]),
            ("phone", row["phone"]),
            ("telegram", telegram),
        ):
            if value:
                _unique(r, f"{kind} {value}", seen_identities, "identity")
        if r.ok:
            customers.append(row)
            for kind, value in (
                ("email", row["email"]),
                ("phone", row["phone"]),
                ("telegram", telegram),
            ):
                if value:
                    identities.append(
                        dict(
                            kind=kind,
                            value=value,
                            customer_id=cid,
                            verified=True,
                            created_at=row["created_at"],
                        )
                    )
    parsed.rows["customers"], parsed.rows["channel_identities"] = customers, identities
    customer_ids = known_customers | set(seen)

    products, seen = [], {}
    for r, _ in _read_csv(directory, "products.csv", parsed):
        sku = r.text("sku", pattern=r"[A-Za-z0-9_-]{1,32}")
        _unique(r, sku, seen, "sku")
        row = dict(
            sku=sku,
            name=r.text("name"),
            category=r.text("category"),
            price=r.money("price"),
            return_window_days=r.integer("return_window_days", low=0, high=3650),
        )
        if r.ok:
            products.append(row)
    parsed.rows["products"] = products
    skus = known_skus | set(seen)

    postcodes = {c["id"]: c.get("postcode") for c in customers}
    orders, seen = [], {}
    for r, _ in _read_csv(directory, "orders.csv", parsed):
        oid = r.text("order_id", pattern=r"[A-Za-z0-9]{1,32}")
        _unique(r, oid, seen, "order_id")
        cid = r.text("customer_id")
        if cid is not None and cid not in customer_ids:
            r.fail(f"unknown customer_id {cid}")
        row = dict(
            id=oid,
            customer_id=cid,
            placed_at=s(r.when("placed_at")),
            status=r.choice("status", ORDER_STATUSES),
            subtotal=r.money("subtotal"),
            shipping_fee=r.money("shipping_fee"),
            total=r.money("total"),
            currency=r.text("currency", pattern=r"[A-Z]{3}"),
            carrier=r.text("carrier", required=False),
            tracking_number=r.text("tracking_number", required=False),
            shipped_at=s(r.when("shipped_at", required=False)),
            delivered_at=s(r.when("delivered_at", required=False)),
            # The fixture has no delivery address: orders went to the customer's
            # postcode of record (a `delivery_postcode` column overrides it).
            delivery_postcode=r.text("delivery_postcode", required=False)
            or postcodes.get(cid),
        )
        if r.ok and row["subtotal"] + row["shipping_fee"] != row["total"]:
            r.fail(f"total {row['total']} is not subtotal + shipping_fee")
        if r.ok and row["status"] in ("shipped", "delivered") and not row["shipped_at"]:
            r.fail(f"status {row['status']} needs shipped_at")
        if r.ok:
            row["updated_at"] = (
                row["delivered_at"] or row["shipped_at"] or row["placed_at"]
            )
            orders.append(row)
    parsed.rows["orders"] = orders
    order_ids = known_orders | set(seen)

    lines, line_numbers = [], {}
    for r, _ in _read_csv(directory, "order_items.csv", parsed):
        oid, sku = r.text("order_id"), r.text("sku")
        if oid is not None and oid not in order_ids:
            r.fail(f"unknown order_id {oid}")
        if sku is not None and sku not in skus:
            r.fail(f"unknown sku {sku}")
        row = dict(
            order_id=oid,
            sku=sku,
            product_name=r.text("product_name"),
            quantity=r.integer("quantity", low=1, high=10_000),
            unit_price=r.money("unit_price"),
        )
        if r.ok:
            line_numbers[oid] = line_numbers.get(oid, 0) + 1
            row["line_no"] = line_numbers[oid]
            lines.append(row)
    parsed.rows["order_lines"] = lines

    conversations, interactions, seen = [], [], {}
    for r, _ in _read_csv(directory, "interactions.csv", parsed):
        hid = r.text("interaction_id", pattern=r"[A-Za-z0-9_-]{1,64}")
        _unique(r, hid, seen, "interaction_id")
        cid = r.text("customer_id")
        if cid is not None and cid not in customer_ids:
            r.fail(f"unknown customer_id {cid}")
        at = s(r.when("occurred_at"))
        channel = r.choice("channel", CHANNELS)
        direction = r.choice("direction", ("inbound", "outbound"))
        topic = r.text("topic")
        handled_by = r.choice("handled_by", ("bot", "agent"))
        outcome = r.choice("outcome", ("resolved", "unresolved"))
        csat = r.integer("csat", low=1, high=5, required=False)
        summary = r.text("summary", required=False)
        if not r.ok:
            continue
        conversation_id = f"history-{hid}"
        conversations.append(
            dict(
                id=conversation_id,
                customer_id=cid,
                channel=channel,
                started_at=at,
                last_activity_at=at,
                ended_at=at,
                status="closed",
                csat=csat,
                outcome=(
                    "escalated"
                    if handled_by == "agent"
                    else "self_served"
                    if outcome == "resolved"
                    else "abandoned"
                ),
            )
        )
        interactions.append(
            dict(
                event_id=f"fixture:{hid}",
                customer_id=cid,
                conversation_id=conversation_id,
                channel=channel,
                direction="in" if direction == "inbound" else "out",
                author="customer",
                text=summary,
                intent=topic,
                confidence=None,
                occurred_at=at,
                metadata={
                    "source": "fixture",
                    "interaction_id": hid,
                    "topic": topic,
                    "handled_by": handled_by,
                    "outcome": outcome,
                    "csat": csat,
                },
            )
        )
    parsed.rows["conversations"], parsed.rows["interactions"] = (
        conversations,
        interactions,
    )
    return parsed


_CONFLICT_KEYS = {
    "customers": ["id"],
    "channel_identities": ["kind", "value"],
    "products": ["sku"],
    "orders": ["id"],
    "order_lines": ["order_id", "line_no"],
    "conversations": ["id"],
    "interactions": ["event_id"],
}
_TABLES = {
    "customers": Customer,
    "channel_identities": ChannelIdentity,
    "products": Product,
    "orders": Order,
    "order_lines": OrderLine,
    "conversations": Conversation,
    "interactions": Interaction,
}


def _checksum(directory: Path) -> str:
    digest = hashlib.sha256()
    for name in FILES:
        path = directory / name
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def seed_directory(
    session: Session,
    *,
    directory: Path,
    as_of: dt.datetime = DEFAULT_AS_OF,
    shift: bool = True,
    now: dt.datetime | None = None,
    progress: ProgressFn | None = None,
) -> SeedReport:
    """Validate and load a fixture directory in the caller's transaction.

    Args:
        session: session whose transaction the caller commits (or rolls back).
        directory: folder holding the fixture CSV files.
        as_of: the moment the fixture was generated "as of".
        shift: move every timestamp by (now - as_of) so demo data does not age;
            a dataset seeded before keeps the shift it was first loaded with.
        now: the seeding time (default: the current UTC time).
        progress: called as ``progress(table, done, total)`` while inserting.

    Raises:
        SeedValidationError: with every ``file:line: message``; nothing is written.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise SeedValidationError([f"{directory}: not a directory"])
    name = directory.resolve().name
    dataset = session.get(Dataset, name)
    if dataset is not None:
        delta = dt.timedelta(seconds=dataset.shift_seconds)
    else:
        delta = ((now or utcnow()) - as_of) if shift else dt.timedelta(0)
        delta = dt.timedelta(seconds=int(delta.total_seconds()))
    known_customers = set(session.execute(select(Customer.id)).scalars())
    known_skus = set(session.execute(select(Product.sku)).scalars())
    known_orders = set(session.execute(select(Order.id)).scalars())
    parsed = _parse(directory, delta, known_customers, known_skus, known_orders)
    if parsed.errors:
        raise SeedValidationError(parsed.errors)

    report = SeedReport(dataset=name, shift=delta)
    insert = dialect_insert(session)
    for table_name, rows in parsed.rows.items():
        table = _TABLES[table_name].__table__
        inserted = 0
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start : start + CHUNK]
            stmt = (
                insert(table)
                .values(chunk)
                .on_conflict_do_nothing(index_elements=_CONFLICT_KEYS[table_name])
            )
            inserted += max(session.execute(stmt).rowcount or 0, 0)
            if progress:
                progress(table_name, min(start + CHUNK, len(rows)), len(rows))
        report.inserted[table_name] = inserted
        report.skipped[table_name] = len(rows) - inserted
    if dataset is None:
        session.add(
            Dataset(
                name=name,
                as_of=as_of,
                shift_seconds=int(delta.total_seconds()),
                loaded_at=utcnow(),
                checksum=_checksum(directory),
            )
        )
    else:
        dataset.checksum = _checksum(directory)
    return report
