"""Customer search and the customer 360, as JSON and as pages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from console_support import SCORED_CUSTOMER, Harness
from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


@pytest.fixture(scope="module")
def api(harness: Harness) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with harness.client() as client:
        yield client, {"Authorization": f"Bearer {harness.token(client, 'agent')}"}


def test_customer_360_fields(
    harness: Harness, api: tuple[TestClient, dict[str, str]]
) -> None:
    harness.new_handoff(customer_id=SCORED_CUSTOMER, reason="complaint")
    client, auth = api
    answer = client.get(f"/api/customers/{SCORED_CUSTOMER}", headers=auth)
    assert answer.status_code == 200
    data = answer.json()
    assert set(data) == {
        "profile",
        "scores",
        "orders",
        "tickets",
        "handoffs",
        "timeline",
    }
    profile = data["profile"]
    assert profile["id"] == SCORED_CUSTOMER and profile["name"] == "Pavel Okafor"
    assert profile["email"] == "pavel.okafor2@example.com"
    assert profile["order_count"] == len(data["orders"]) > 0
    assert {
        "kind": "email",
        "value": "pavel.okafor2@example.com",
        "verified": True,
    } in (profile["identities"])
    scores = data["scores"]
    assert scores["value_tier"] == "gold" and scores["churn_band"] == "low"
    assert scores["clv"] == "178.11" and scores["actual_value"] == "193.50"
    assert scores["rfm"] == "544" and scores["rfm_segment"] == "champions"
    assert scores["churn_risk"] == pytest.approx(0.33)
    assert scores["churn_drivers"] == [
        {
            "feature": "days since last purchase",
            "contribution": 0.41,
            "raises_risk": True,
        },
        {"feature": "orders per year", "contribution": -0.12, "raises_risk": False},
    ]
    order = data["orders"][0]
    assert {"id", "status", "placed_at", "total", "currency", "items"} <= set(order)
    assert order["items"] and " × " in order["items"][0]
    placed = [o["placed_at"] for o in data["orders"]]
    assert placed == sorted(placed, reverse=True)
    assert data["handoffs"][0]["reason"] == "complaint"
    items = data["timeline"]["items"]
    assert items and {"channel", "author", "text", "occurred_at"} <= set(items[0])
    stamps = [i["occurred_at"] for i in items]
    assert stamps == sorted(stamps, reverse=True)
    assert len({i["channel"] for i in items}) > 1  # every channel in one timeline


def test_unscored_and_unknown_customers(api: tuple[TestClient, dict[str, str]]) -> None:
    client, auth = api
    assert client.get("/api/customers/C0001", headers=auth).json()["scores"] is None
    missing = client.get("/api/customers/C9999999", headers=auth)
    assert missing.status_code == 404 and "not found" in missing.json()["error"]


def test_timeline_pages_do_not_overlap(api: tuple[TestClient, dict[str, str]]) -> None:
    client, auth = api
    url = f"/api/customers/{SCORED_CUSTOMER}/timeline"
    first = client.get(url, params={"limit": 2}, headers=auth).json()
    assert len(first["items"]) == 2 and first["next_before"]
    second = client.get(
        url, params={"limit": 2, "before": first["next_before"]}, headers=auth
    ).json()
    ids = [i["id"] for i in first["items"]] + [i["id"] for i in second["items"]]
    assert len(ids) == len(set(ids))
    whole = client.get(url, params={"limit": 200}, headers=auth).json()
    assert [i["id"] for i in whole["items"]][: len(ids)] == ids
    assert whole["next_before"] is None
    bad = client.get(url, params={"before": "%%%"}, headers=auth)
    assert bad.status_code == 400
    assert client.get(url, params={"limit": 0}, headers=auth).status_code == 422
    assert (
        client.get("/api/customers/C9999999/timeline", headers=auth).status_code == 404
    )


def test_search(api: tuple[TestClient, dict[str, str]]) -> None:
    client, auth = api
    found = client.get("/api/customers", params={"q": "okafor"}, headers=auth).json()
    assert any(
        c["id"] == SCORED_CUSTOMER and c["value_tier"] == "gold" for c in found["items"]
    )
    assert (
        client.get("/api/customers", params={"q": " "}, headers=auth).status_code == 400
    )
    assert client.get("/api/customers", headers=auth).status_code == 422


def test_customer_pages(harness: Harness) -> None:
    with harness.client() as client:
        harness.login(client, "agent")
        search = client.get("/customers", params={"q": "Okafor"})
        assert f'href="/customers/{SCORED_CUSTOMER}"' in search.text
        none = client.get("/customers", params={"q": "zzzz-nobody"})
        assert "No customer matches" in none.text
        page = client.get(f"/customers/{SCORED_CUSTOMER}")
        assert page.status_code == 200
        for text in (
            "Pavel Okafor",
            "178.11 EUR",
            "days since last purchase",
            "Orders",
        ):
            assert text in page.text
        older = page.text.split('href="/customers/C0002?before=')
        if len(older) > 1:
            cursor = older[1].split('"')[0].split("#")[0]
            assert (
                client.get(f"/customers/{SCORED_CUSTOMER}?before={cursor}").status_code
                == 200
            )
        assert client.get("/customers/C9999999").status_code == 404
