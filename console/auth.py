"""Who is calling: session cookie or bearer token, roles, CSRF, login and logout.

- **Sessions** live in the store (``crm_store.services.staff``): the browser holds
  only a random token in the cookie ``crm_session`` (HttpOnly, SameSite=Strict,
  Secure in production); the store keeps its SHA-256. API clients send the same
  kind of token as ``Authorization: Bearer …`` (``POST /api/auth/token``).
- **CSRF.** Every unsafe request (POST, PUT, PATCH, DELETE) authenticated by the
  cookie must carry the session's CSRF token, as the form field ``csrf_token``
  or the header ``X-CSRF-Token``; else 403 and nothing is done. Bearer requests
  are exempt (a browser never adds that header on its own). The login form, which
  has no session yet, uses a double-submit token: the cookie ``crm_login_csrf``
  must equal the form field.
- **Roles** agent < manager < admin: ``require_role("manager")`` answers 403 to
  anyone below.
- **Throttling** is the store's (``staff.authenticate``): too many failures for
  the username or the client address answer 429 with ``Retry-After``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from console.render import render
from console.store import in_store
from crm_store.errors import LoginFailed, LoginThrottled
from crm_store.services import staff as staff_service
from crm_store.services.staff import StaffIdentity, role_at_least

SESSION_COOKIE = "crm_session"
LOGIN_CSRF_COOKIE = "crm_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
LOCAL_PATH = re.compile(r"/[A-Za-z0-9/_.~%?=&#-]*")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_USERNAME = 64
MAX_PASSWORD = 1024

router = APIRouter()


class NotAuthenticated(Exception):
    """No valid session or token: pages redirect to /login, the API answers 401."""


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def identify(request: Request) -> tuple[StaffIdentity | None, str | None]:
    """Return the caller's identity and how it was proven (``bearer``/``cookie``)."""
    token = _bearer(request)
    kind = "bearer"
    if token is None:
        token = request.cookies.get(SESSION_COOKIE)
        kind = "cookie"
    if not token or len(token) > 256:
        return None, None
    identity = await in_store(
        request, lambda s: staff_service.identity_for_token(s, token)
    )
    return (identity, kind) if identity is not None else (None, None)


async def _submitted_csrf(request: Request) -> str:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


async def current_staff(request: Request) -> StaffIdentity:
    """The signed-in staff member (dependency); checks CSRF on unsafe cookie calls.

    Raises:
        NotAuthenticated: no valid session or bearer token.
        HTTPException: 403 when a cookie-authenticated unsafe request lacks
            the session's CSRF token.
    """
    identity, kind = await identify(request)
    if identity is None:
        raise NotAuthenticated()
    if request.method not in SAFE_METHODS and kind == "cookie":
        submitted = await _submitted_csrf(request)
        if not submitted or not secrets.compare_digest(
            submitted.encode(), identity.csrf_token.encode()
        ):
            raise HTTPException(403, "missing or wrong CSRF token; reload the page")
    request.state.staff = identity
    request.state.auth_kind = kind
    return identity


def require_role(needed: str) -> Callable[..., Awaitable[StaffIdentity]]:
    """A dependency admitting staff with at least the role ``needed`` (else 403)."""

    async def dependency(
        staff: StaffIdentity = Depends(current_staff),
    ) -> StaffIdentity:
        if not role_at_least(staff.role, needed):
            raise HTTPException(403, f"this needs the {needed} role")
        return staff

    return dependency


def client_ip(request: Request) -> str:
    """The TCP peer address (a forwarded-for header is not trusted)."""
    return request.client.host if request.client else "unknown"


def safe_next(target: str | None) -> str:
    """A local path to go to after login (anything else: the queue)."""
    if target and LOCAL_PATH.fullmatch(target) and not target.startswith("//"):
        return target
    return "/"


def login_redirect(request: Request) -> RedirectResponse:
    """Send a browser to the login page, coming back here afterwards."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='/')}", status_code=303)


def _secure(request: Request) -> bool:
    return request.app.state.settings.environment == "production"


def _login_page(
    request: Request,
    *,
    status: int = 200,
    error: str | None = None,
    next_path: str = "/",
    username: str = "",
    headers: dict[str, str] | None = None,
) -> Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not token or len(token) > 128:
        token = secrets.token_urlsafe(32)
    response = render(
        request,
        "login.html",
        {
            "login_csrf": token,
            "error": error,
            "next": next_path,
            "username": username,
        },
        status=status,
        headers=headers,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/login",
        max_age=3600,
    )
    return response


@router.get("/login", include_in_schema=False)
async def login_form(request: Request, next: str = "/") -> Response:  # noqa: A002
    """The login form (already signed in: straight to the queue)."""
    identity, _ = await identify(request)
    if identity is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_page(request, next_path=safe_next(next))


@router.post("/login", include_in_schema=False)
async def login(
    request: Request,
    username: str = Form("", max_length=MAX_USERNAME * 4),
    password: str = Form("", max_length=MAX_PASSWORD),
    csrf_token: str = Form(""),
    next: str = Form("/"),  # noqa: A002
) -> Response:
    """Check the credentials, open a session and set its cookie."""
    next_path = safe_next(next)
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(
        csrf_token.encode(), expected.encode()
    ):
        return _login_page(
            request,
            status=403,
            error="The login form expired. Please sign in again.",
            next_path=next_path,
        )
    username = username.strip()[:MAX_USERNAME]
    try:
        token, identity = await _authenticate(request, username, password)
    except LoginThrottled as exc:
        wait = max(1, exc.retry_after_seconds)
        return _login_page(
            request,
            status=429,
            error=f"Too many failed sign-ins. Try again in {_minutes(wait)}.",
            next_path=next_path,
            username=username,
            headers={"Retry-After": str(wait)},
        )
    except LoginFailed:
        return _login_page(
            request,
            status=401,
            error="Unknown username or wrong password.",
            next_path=next_path,
            username=username,
        )
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/",
        max_age=int(request.app.state.settings.session_hours * 3600),
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    del identity
    return response


def _minutes(seconds: int) -> str:
    minutes = -(-seconds // 60)
    return "a minute" if minutes <= 1 else f"{minutes} minutes"


async def _authenticate(
    request: Request, username: str, password: str
) -> tuple[str, StaffIdentity]:
    settings = request.app.state.settings
    ip = client_ip(request)

    def work(session):  # noqa: ANN001, ANN202
        try:
            user = staff_service.authenticate(
                session,
                username=username,
                password=password,
                client_ip=ip,
                max_failures=settings.login_failures,
                lock_minutes=settings.login_lock_minutes,
            )
        except (LoginFailed, LoginThrottled) as exc:
            # Returned, not raised: the unit of work commits the failure's audit
            # row, which the throttle counts.
            return exc
        return staff_service.open_session(
            session, user.id, hours=settings.session_hours
        )

    outcome = await in_store(request, work)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


@router.post("/logout", include_in_schema=False)
async def logout(
    request: Request, staff: StaffIdentity = Depends(current_staff)
) -> Response:
    """Close the session and forget the cookie."""
    token = request.cookies.get(SESSION_COOKIE) or _bearer(request) or ""
    await in_store(request, lambda s: staff_service.close_session(s, token))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    del staff
    return response


class TokenRequest(BaseModel):
    """Credentials for a bearer token."""

    username: str = Field(..., max_length=MAX_USERNAME * 4)
    password: str = Field(..., max_length=MAX_PASSWORD)


@router.post("/api/auth/token", tags=["auth"])
async def issue_token(request: Request, body: TokenRequest) -> JSONResponse:
    """Exchange a username and password for a bearer token (a server-side session).

    401 for wrong credentials, 429 with ``Retry-After`` after too many failures.
    """
    try:
        token, identity = await _authenticate(
            request, body.username.strip()[:MAX_USERNAME], body.password
        )
    except LoginThrottled as exc:
        wait = max(1, exc.retry_after_seconds)
        return JSONResponse(
            {"error": "too many failed logins", "retry_after_seconds": wait},
            status_code=429,
            headers={"Retry-After": str(wait)},
        )
    except LoginFailed:
        return JSONResponse(
            {"error": "unknown username or wrong password"}, status_code=401
        )
    return JSONResponse(
        {
            "access_token": token,
            "token_type": "bearer",
            "expires_at": identity.expires_at.isoformat() + "Z",
            "username": identity.username,
            "role": identity.role,
        }
    )
