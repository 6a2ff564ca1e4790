"""Ownership checks on orders, identity lookup and prospects."""

from __future__ import annotations

import random
import threading

import pytest
from sqlalchemy import select

from crm_store.errors import InvalidInput, NotFound, NotOwner
from crm_store.models import AuditLog, ChannelIdentity, Customer, Order
from crm_store.services.customers import customer_profile, search_customers
from crm_store.services.identities import (
    find_customer_by_identity,
    link_identity,
    resolve_identity,
)
from crm_store.services.normalize import mask, normalize_identity
from crm_store.services.orders import (
    get_order_for_customer,
    orders_for_customer,
    verify_order_postcode,
)


def sample_orders(session, n=40, seed=7):
    rows = session.execute(select(Order.id, Order.customer_id).order_by(Order.id)).all()
    return random.Random(seed).sample(rows, n)


def test_owner_reads_own_order(factory):
    with factory() as session:
        for order_id, owner in sample_orders(session):
            order = get_order_for_customer(
                session, order_number=order_id, customer_id=owner
            )
            assert order.id == order_id and order.customer_id == owner


def test_a_customer_can_never_read_another_customers_order(factory):
    with factory() as session:
        pairs = sample_orders(session)
        customers = [owner for _, owner in pairs]
        checked = 0
        for (order_id, owner), other in zip(pairs, reversed(customers), strict=True):
            if other == owner:
                continue
            checked += 1
            with pytest.raises(NotOwner):
                get_order_for_customer(
                    session, order_number=order_id, customer_id=other
                )


def test_someone_elses_order_looks_exactly_like_a_missing_one(factory):
    with factory() as session:
        with pytest.raises(NotFound) as missing:
            get_order_for_customer(session, order_number="Z99999", customer_id="C0001")
        order_id, owner = sample_orders(session, 1)[0]
        other = "C0002" if owner != "C0002" else "C0003"
        with pytest.raises(NotFound) as foreign:
            get_order_for_customer(session, order_number=order_id, customer_id=other)
    assert str(missing.value) == str(foreign.value)


@pytest.mark.parametrize(
    "number", ["", "   ", "A1000'; DROP TABLE orders;--", "x" * 40]
)
def test_malformed_order_numbers_are_rejected(factory, number):
    with factory() as session:
        with pytest.raises(InvalidInput):
            get_order_for_customer(session, order_number=number, customer_id="C0001")


def test_order_numbers_are_normalized(factory):
    with factory() as session:
        order = get_order_for_customer(
            session, order_number=" #a10001 ", customer_id="C0001"
        )
    assert order.id == "A10001"


def test_orders_for_customer_newest_first_only_own(factory):
    with factory() as session:
        orders = orders_for_customer(session, customer_id="C0002", limit=10)
        assert orders and all(o.customer_id == "C0002" for o in orders)
        assert [o.placed_at for o in orders] == sorted(
            (o.placed_at for o in orders), reverse=True
        )
        assert all(o.lines for o in orders)
        with pytest.raises(InvalidInput):
            orders_for_customer(session, customer_id="C0002", limit=0)


def test_order_plus_postcode_verifies_only_the_owner(factory):
    with factory() as session:
        customer = session.get(Customer, "C0001")
        squashed = customer.postcode.replace(" ", "").lower()
        assert (
            verify_order_postcode(session, order_number="A10001", postcode=squashed)
            == "C0001"
        )
        assert (
            verify_order_postcode(session, order_number="A10001", postcode="9999 ZZ")
            is None
        )
        assert (
            verify_order_postcode(session, order_number="A10001", postcode="") is None
        )
        assert (
            verify_order_postcode(
                session, order_number="NOPE1", postcode=customer.postcode
            )
            is None
        )


@pytest.mark.parametrize(
    ("kind", "raw", "canonical"),
    [
        ("email", " Farah.Dijkstra1@EXAMPLE.com ", "farah.dijkstra1@example.com"),
        ("phone", "+31 970 1000 0001", "+3197010000001"),
        ("phone", "003197010000001", "+3197010000001"),
    ],
)
def test_find_customer_by_identity_however_typed(factory, kind, raw, canonical):
    assert normalize_identity(kind, raw) == canonical
    with factory() as session:
        match = find_customer_by_identity(session, kind=kind, value=raw)
    assert match is not None and match.customer_id == "C0001" and match.verified


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("email", "nope"),
        ("phone", "12345"),
        ("telegram", "abc"),
        ("fax", "1"),
        ("email", ""),
    ],
)
def test_bad_identities_are_clear_errors(factory, kind, value):
    with factory() as session:
        with pytest.raises(InvalidInput):
            find_customer_by_identity(session, kind=kind, value=value)


def test_unknown_identity_becomes_one_prospect_even_under_concurrency(factory):
    value = f"+3161{random.randint(10**6, 10**7 - 1)}"
    results, errors = [], []

    def resolve() -> None:
        try:
            with factory.begin() as session:
                results.append(resolve_identity(session, kind="phone", value=value))
        except Exception as exc:  # collected to fail the test below
            errors.append(exc)

    threads = [threading.Thread(target=resolve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = {r.customer_id for r in results}
    with factory() as session:
        stored = (
            session.execute(
                select(ChannelIdentity).where(ChannelIdentity.value == value)
            )
            .scalars()
            .all()
        )
    assert len(stored) == 1
    assert ids == {stored[0].customer_id}, errors
    assert all(r.is_prospect and not r.verified for r in results)


def test_linking_a_prospect_identity_is_audited_and_reversible(factory):
    value = f"{random.randint(10**8, 10**9)}"
    with factory.begin() as session:
        prospect = resolve_identity(session, kind="telegram", value=value)
    with factory.begin() as session:
        link_identity(
            session,
            kind="telegram",
            value=value,
            customer_id="C0005",
            actor="agent:alice",
            verified=True,
        )
    with factory() as session:
        match = find_customer_by_identity(session, kind="telegram", value=value)
        assert (match.customer_id, match.verified) == ("C0005", True)
    with factory.begin() as session:
        link_identity(
            session,
            kind="telegram",
            value=value,
            customer_id=prospect.customer_id,
            actor="agent:alice",
        )
    with factory() as session:
        trail = (
            session.execute(
                select(AuditLog)
                .where(AuditLog.entity_id == str(match.identity_id))
                .order_by(AuditLog.id)
            )
            .scalars()
            .all()
        )
    assert [(a.details["from"], a.details["to"]) for a in trail] == [
        (prospect.customer_id, "C0005"),
        ("C0005", prospect.customer_id),
    ]
    with factory.begin() as session:
        with pytest.raises(NotFound):
            link_identity(
                session,
                kind="telegram",
                value=value,
                customer_id="C9999",
                actor="agent:alice",
            )
        with pytest.raises(InvalidInput):
            link_identity(
                session, kind="telegram", value=value, customer_id="C0005", actor=""
            )


def test_profile_and_search(factory):
    with factory() as session:
        profile = customer_profile(session, customer_id="C0001")
        assert profile.name == "Farah Dijkstra" and profile.order_count >= 1
        assert {i.kind for i in profile.identities} >= {"email", "phone"}
        assert [c.id for c in search_customers(session, query="farah.dijkstra1")] == [
            "C0001"
        ]
        with pytest.raises(NotFound):
            customer_profile(session, customer_id="C9999")


def test_masking_hides_personal_data():
    assert mask("email", "farah.dijkstra1@example.com") == "f***@example.com"
    assert mask("phone", "+3197010000001") == "+31*******0001"
    assert "12345" not in mask("telegram", "123456789")
