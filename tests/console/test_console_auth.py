"""Console sign-in, sessions, roles, CSRF and the headers every response carries."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from console_support import CSRF_FIELD, PASSWORD, Harness
from fastapi.testclient import TestClient
from sqlalchemy import select

from crm_store.models import AuditLog
from crm_store.services.staff import CLIENT_FACTOR


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


@pytest.fixture()
def client(harness: Harness) -> Iterator[TestClient]:
    with harness.client() as client:
        yield client


def login_form(client: TestClient) -> str:
    return CSRF_FIELD.search(client.get("/login").text).group(1)


def test_pages_send_a_browser_to_the_login_form(client: TestClient) -> None:
    answer = client.get("/customers?q=x")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=/customers%3Fq%3Dx"
    assert client.get("/api/handoffs").status_code == 401
    assert client.get("/events/queue").status_code == 401


def test_login_sets_a_strict_http_only_session_cookie(
    harness: Harness, client: TestClient
) -> None:
    token = login_form(client)
    answer = client.post(
        "/login",
        data={
            "username": "agent",
            "password": PASSWORD,
            "csrf_token": token,
            "next": "/customers",
        },
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/customers"
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith("crm_session=")
    )
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie  # development mode: plain http on localhost
    page = client.get("/")
    assert page.status_code == 200
    assert "agent" in page.text and "Sign out" in page.text


def test_login_refuses_offsite_next(client: TestClient) -> None:
    token = login_form(client)
    answer = client.post(
        "/login",
        data={
            "username": "agent",
            "password": PASSWORD,
            "csrf_token": token,
            "next": "//evil.example/",
        },
    )
    assert answer.headers["location"] == "/"


def test_wrong_password_and_unknown_user_get_the_same_answer(
    harness: Harness, client: TestClient
) -> None:
    answers = []
    for username in ("manager", "nobody-here"):
        token = login_form(client)
        answer = client.post(
            "/login",
            data={
                "username": username,
                "password": "wrong-password!",
                "csrf_token": token,
            },
        )
        assert answer.status_code == 401
        assert "crm_session" not in answer.cookies
        answers.append(re.search(r'role="alert">([^<]*)<', answer.text).group(1))
    assert answers[0] == answers[1] == "Unknown username or wrong password."
    with harness.factory() as session:
        failed = session.execute(
            select(AuditLog).where(AuditLog.action == "login_failed")
        ).scalars()
        assert PASSWORD not in str([row.details for row in failed])


def test_login_form_without_its_csrf_cookie_is_refused(harness: Harness) -> None:
    with harness.client() as client:
        token = login_form(client)
        client.cookies.clear()
        answer = client.post(
            "/login",
            data={"username": "agent", "password": PASSWORD, "csrf_token": token},
        )
        assert answer.status_code == 403
        assert "crm_session" not in answer.cookies


def test_too_many_failures_answer_429_even_with_the_right_password() -> None:
    harness = Harness(seeded=False, login_failures=3, login_lock_minutes=5)
    try:
        with harness.client() as client:
            for _ in range(3):
                token = login_form(client)
                answer = client.post(
                    "/login",
                    data={
                        "username": "agent",
                        "password": "not-the-password",
                        "csrf_token": token,
                    },
                )
                assert answer.status_code == 401
            token = login_form(client)
            answer = client.post(
                "/login",
                data={"username": "agent", "password": PASSWORD, "csrf_token": token},
            )
            assert answer.status_code == 429
            assert 0 < int(answer.headers["retry-after"]) <= 300
            assert "Too many failed sign-ins" in answer.text
            api = client.post(
                "/api/auth/token", json={"username": "agent", "password": PASSWORD}
            )
            assert api.status_code == 429
            assert int(api.headers["retry-after"]) > 0
            # Another account from the same address still signs in ...
            other = client.post(
                "/api/auth/token", json={"username": "admin", "password": PASSWORD}
            )
            assert other.status_code == 200
            # ... until the address itself has failed too often.
            for n in range(3 * CLIENT_FACTOR - 3):
                client.post(
                    "/api/auth/token",
                    json={"username": f"guess{n}", "password": "not-the-password"},
                )
            other = client.post(
                "/api/auth/token", json={"username": "admin", "password": PASSWORD}
            )
            assert other.status_code == 429
    finally:
        harness.close()


def test_logout_ends_the_session(harness: Harness) -> None:
    with harness.client() as client:
        csrf = harness.login(client, "agent")
        session_token = client.cookies.get("crm_session")
        assert client.post("/logout").status_code == 403  # no CSRF token
        answer = client.post("/logout", data={"csrf_token": csrf})
        assert answer.status_code == 303 and answer.headers["location"] == "/login"
        client.cookies.set("crm_session", session_token)
        assert client.get("/").status_code == 303
        bearer = {"Authorization": f"Bearer {session_token}"}
        assert client.get("/api/me", headers=bearer).status_code == 401


@pytest.mark.parametrize(
    ("username", "manager_ok", "admin_ok"),
    [("agent", False, False), ("manager", True, False), ("admin", True, True)],
)
def test_roles(
    harness: Harness, username: str, manager_ok: bool, admin_ok: bool
) -> None:
    with harness.client() as client:
        harness.login(client, username)
        assert client.get("/manager").status_code == (200 if manager_ok else 403)
        assert client.get("/api/stats").status_code == (200 if manager_ok else 403)
        assert client.get("/admin").status_code == (200 if admin_ok else 403)
        assert client.get("/api/staff").status_code == (200 if admin_ok else 403)
        page = client.get("/")
        assert ('href="/manager"' in page.text) == manager_ok
        assert ('href="/admin"' in page.text) == admin_ok
    if admin_ok:
        with harness.client() as client:
            harness.login(client, username)
            staff = client.get("/api/staff").json()["items"]
            assert {u["username"] for u in staff} >= {"admin", "manager", "agent"}
            assert all("password" not in str(u) for u in staff)


def test_bearer_token(harness: Harness, client: TestClient) -> None:
    answer = client.post(
        "/api/auth/token", json={"username": "manager", "password": PASSWORD}
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["token_type"] == "bearer" and body["expires_at"].endswith("Z")
    me = client.get(
        "/api/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.json()["username"] == "manager" and me.json()["role"] == "manager"
    bad = client.post(
        "/api/auth/token", json={"username": "manager", "password": "nope-nope"}
    )
    assert bad.status_code == 401 and "access_token" not in bad.json()
    assert (
        client.get("/api/me", headers={"Authorization": "Bearer forged"}).status_code
        == 401
    )
    assert client.post("/api/auth/token", json={"username": "x"}).status_code == 422


def test_unsafe_cookie_requests_need_the_csrf_token(harness: Harness) -> None:
    ref = harness.new_handoff()
    with harness.client() as client:
        csrf = harness.login(client, "agent")
        url = f"/handoffs/{ref.id}/notes"
        assert client.post(url, data={"text": "no token"}).status_code == 403
        wrong = client.post(url, data={"text": "wrong", "csrf_token": "x" * 43})
        assert wrong.status_code == 403
        api = f"/api/handoffs/{ref.id}/notes"
        assert client.post(api, json={"text": "json, no header"}).status_code == 403
        ok = client.post(url, data={"text": "with token", "csrf_token": csrf})
        assert ok.status_code == 303
        header = client.post(
            api, json={"text": "header"}, headers={"X-CSRF-Token": csrf}
        )
        assert header.status_code == 201
        notes = client.get(f"/api/handoffs/{ref.id}").json()["notes"]
        assert [n["text"] for n in notes] == ["with token", "header"]
    with harness.client() as client:
        token = harness.token(client, "agent")
        bearer = client.post(
            api, json={"text": "bearer"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert bearer.status_code == 201  # bearer calls need no CSRF token


def test_security_headers_on_every_kind_of_response(harness: Harness) -> None:
    with harness.client() as client:
        answers = [
            client.get("/login"),
            client.get("/"),
            client.get("/api/handoffs"),
            client.get("/healthz"),
            client.get("/static/console.css"),
            client.get("/no-such-page"),
        ]
        harness.login(client, "agent")
        answers.append(client.get("/"))
    for answer in answers:
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "style-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert (
            f"connect-src 'self' http://testserver:{harness.settings.rasa_port}" in csp
        )
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["x-frame-options"] == "DENY"


def test_production_cookies_are_secure() -> None:
    harness = Harness(seeded=False, environment="production")
    try:
        with harness.client("https://testserver") as client:
            token = login_form(client)
            answer = client.post(
                "/login",
                data={"username": "agent", "password": PASSWORD, "csrf_token": token},
            )
            cookie = next(
                c
                for c in answer.headers.get_list("set-cookie")
                if c.startswith("crm_session=")
            )
            assert "Secure" in cookie
            assert "strict-transport-security" in answer.headers
    finally:
        harness.close()


def test_chat_socket_origin_in_the_csp() -> None:
    harness = Harness(seeded=False, chat_socket_url="https://chat.example.com/")
    try:
        with harness.client() as client:
            csp = client.get("/login").headers["content-security-policy"]
        assert (
            "connect-src 'self' https://chat.example.com wss://chat.example.com;" in csp
        )
    finally:
        harness.close()


def test_healthz(client: TestClient) -> None:
    answer = client.get("/healthz")
    assert answer.status_code == 200 and answer.json()["status"] == "ok"


def test_openapi_schema_only_no_cdn_pages(client: TestClient) -> None:
    schema = client.get("/api/openapi.json")
    assert schema.status_code == 200
    assert "/api/handoffs/{handoff_id}/claim" in schema.json()["paths"]
    assert client.get("/docs").status_code == 404
    assert client.get("/redoc").status_code == 404
