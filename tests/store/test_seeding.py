"""Seeding the demo fixture: counts, idempotency, time shift and rejected bad rows."""

from __future__ import annotations

import csv
import datetime as dt
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from crm_store.db import make_session_factory
from crm_store.models import (
    ChannelIdentity,
    Customer,
    Dataset,
    Interaction,
    Order,
    OrderLine,
    Product,
)
from crm_store.seeding import DEFAULT_AS_OF, SeedValidationError, seed_directory
from tests.conftest import DEMO_DIR


def fixture_rows(name: str) -> list[dict[str, str]]:
    with (DEMO_DIR / name).open(newline="") as handle:
        return list(csv.DictReader(handle))


def table_counts(session) -> dict[str, int]:
    models = (Customer, Order, OrderLine, Interaction, Product, ChannelIdentity)
    return {
        m.__tablename__: session.execute(
            select(func.count()).select_from(m)
        ).scalar_one()
        for m in models
    }


def test_seeded_counts_equal_the_fixture(empty_engine):
    # A database of its own: the shared seeded one gains rows from other tests.
    factory = make_session_factory(empty_engine)
    with factory.begin() as session:
        seed_directory(session, directory=DEMO_DIR, shift=False)
    with factory() as session:
        counts = table_counts(session)
    assert counts["customers"] == len(fixture_rows("customers.csv")) == 2000
    assert counts["orders"] == len(fixture_rows("orders.csv")) == 8008
    assert counts["order_lines"] == len(fixture_rows("order_items.csv")) == 13915
    assert counts["interactions"] == len(fixture_rows("interactions.csv")) == 1562
    telegram = sum(1 for r in fixture_rows("customers.csv") if r["telegram_user_id"])
    assert counts["channel_identities"] == 2000 + 2000 + telegram


def test_seeded_values_match_the_fixture(factory):
    order_row = fixture_rows("orders.csv")[0]
    with factory() as session:
        order = session.get(Order, order_row["order_id"])
        assert str(order.total) == order_row["total"]
        assert order.tracking_number == order_row["tracking_number"]
        assert order.placed_at == dt.datetime.fromisoformat(order_row["placed_at"])
        assert [line.sku for line in order.lines] == [
            r["sku"]
            for r in fixture_rows("order_items.csv")
            if r["order_id"] == order_row["order_id"]
        ]


def test_seeding_twice_changes_nothing(empty_engine):
    factory = make_session_factory(empty_engine)
    now = dt.datetime(2026, 11, 20, 12, 0)
    with factory.begin() as session:
        first = seed_directory(session, directory=DEMO_DIR, now=now)
    with factory() as session:
        before = table_counts(session)
        stamps_before = session.execute(
            select(Order.id, Order.placed_at).order_by(Order.id)
        ).all()
    with factory.begin() as session:
        # A later seeding run reuses the shift recorded the first time.
        second = seed_directory(session, directory=DEMO_DIR, now=now + dt.timedelta(1))
    with factory() as session:
        assert table_counts(session) == before
        assert (
            session.execute(select(Order.id, Order.placed_at).order_by(Order.id)).all()
            == stamps_before
        )
    assert sum(first.inserted.values()) > 0
    assert sum(second.inserted.values()) == 0
    assert second.skipped == first.inserted


def test_seeding_shifts_timestamps_so_demo_data_does_not_age(empty_engine):
    factory = make_session_factory(empty_engine)
    now = DEFAULT_AS_OF + dt.timedelta(days=10, hours=3)
    with factory.begin() as session:
        report = seed_directory(session, directory=DEMO_DIR, now=now)
    assert report.shift == dt.timedelta(days=10, hours=3)
    row = fixture_rows("orders.csv")[0]
    with factory() as session:
        order = session.get(Order, row["order_id"])
        expected = dt.datetime.fromisoformat(row["placed_at"]) + report.shift
        assert order.placed_at == expected
        assert session.get(Dataset, "demo").shift_seconds == int(
            report.shift.total_seconds()
        )


def broken_copy(tmp_path: Path, name: str, line: int, column: str, value: str) -> Path:
    """Copy the fixture and set one field of one data row (1-based file line)."""
    target = tmp_path / "demo"
    shutil.copytree(DEMO_DIR, target)
    path = target / name
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames, list(reader)
    rows[line - 2][column] = value
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return target


@pytest.mark.parametrize(
    ("name", "line", "column", "value", "message"),
    [
        ("orders.csv", 7, "placed_at", "2026-13-45T10:00", "is not a date-time"),
        ("orders.csv", 9, "customer_id", "C9999", "unknown customer_id C9999"),
        ("orders.csv", 11, "order_id", "A10001", "duplicate order_id A10001"),
        ("customers.csv", 5, "email", "not-an-email", "not an email address"),
        ("order_items.csv", 4, "quantity", "-2", "must be a whole number"),
        ("interactions.csv", 3, "csat", "9", "csat '9'"),
        ("order_items.csv", 6, "sku", "SKU-9999", "unknown sku SKU-9999"),
    ],
)
def test_bad_rows_are_reported_with_file_and_line_and_nothing_is_written(
    empty_engine, tmp_path, name, line, column, value, message
):
    directory = broken_copy(tmp_path, name, line, column, value)
    factory = make_session_factory(empty_engine)
    with pytest.raises(SeedValidationError) as caught:
        with factory.begin() as session:
            seed_directory(session, directory=directory, shift=False)
    errors = caught.value.errors
    assert any(e.startswith(f"{directory / name}:{line}: ") for e in errors), errors
    assert any(message in e for e in errors), errors
    with factory() as session:
        assert set(table_counts(session).values()) == {0}


def test_missing_file_and_missing_directory_are_clear_errors(empty_engine, tmp_path):
    factory = make_session_factory(empty_engine)
    target = tmp_path / "partial"
    shutil.copytree(DEMO_DIR, target)
    (target / "orders.csv").unlink()
    with pytest.raises(SeedValidationError) as caught:
        with factory.begin() as session:
            seed_directory(session, directory=target, shift=False)
    assert any("orders.csv: file is missing" in e for e in caught.value.errors)
    with pytest.raises(SeedValidationError, match="1 invalid"):
        with factory.begin() as session:
            seed_directory(session, directory=tmp_path / "nope", shift=False)
