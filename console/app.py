"""The agent console: a FastAPI app of server-rendered pages, a JSON API and SSE.

Front-end choice. The console is server-rendered HTML (Jinja2, autoescaped)
with one small vanilla script (``static/console.js``) and one stylesheet, no
framework and no build step:

- *Safety*: every customer text reaches the page through Jinja's autoescaping
  or ``textContent``; the content security policy allows scripts and styles
  only from the console itself (no inline code, no CDN), so injected markup
  cannot run even where escaping were forgotten. A JS framework would add a
  build chain and a dependency tree to audit for a handful of pages.
- *Works without JavaScript*: every action is a form POST with a CSRF token
  that redirects back (post/redirect/get); the script only adds live updates
  and conveniences (sending a reply without a reload, canned replies, ticking
  wait times).
- *Live without polling in the page*: the queue and an open conversation are
  pushed over server-sent events (``EventSource``: plain HTTP, automatic
  reconnects, resumable by ``Last-Event-ID``), which fit one-way updates better
  than WebSockets and pass the same cookie and CSP rules. The server watches
  the store with a cheap indexed query (``console.events``), so writes of any
  process appear within a quarter second.
- *Operable*: the same app serves the JSON API (``/api``, bearer tokens) for
  integrations and tests, ``/healthz`` and ``/metrics``.

The customer web chat (``/chat``, ``console.chat``) is mounted here too; it
talks to the Rasa server's socket, which the CSP's ``connect-src`` names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from console import api, auth, events, health, pages, reports, reports_api
from console.auth import NotAuthenticated, login_redirect
from console.canned import load_canned_replies
from console.chat import router as chat_router
from console.courier import Courier
from console.render import make_templates, render
from console.security import SecurityHeaders
from console.workflow import in_background, watch_queue
from crm_settings import Settings, get_settings
from crm_store.db import session_factory as store_session_factory
from crm_store.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    LoginFailed,
    LoginThrottled,
    NotFound,
    StoreError,
)
from crm_store.services.agent_hours import parse_agent_hours

logger = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "static"
JSON_PREFIXES = ("/api/", "/events/", "/chat/", "/healthz", "/metrics")
STATUS_OF = (
    (NotFound, 404),
    (Conflict, 409),
    (Forbidden, 403),
    (LoginThrottled, 429),
    (LoginFailed, 401),
    (InvalidInput, 400),
)
TITLES = {
    400: "That did not work",
    401: "Please sign in",
    403: "Not allowed",
    404: "Not found",
    409: "Someone was faster",
    422: "That did not work",
    429: "Too many attempts",
}


def create_app(
    settings: Settings | None = None,
    session_factory: sessionmaker | None = None,
    *,
    watch_seconds: float = 0.25,
    queue_watch_seconds: float | None = 2.0,
    canned_replies_path: Path | None = None,
) -> FastAPI:
    """Build the console app.

    Args:
        settings: the process settings (default ``get_settings()``).
        session_factory: the store (default: ``settings.database_url``).
        watch_seconds: how often live views look at the store.
        queue_watch_seconds: how often waiting customers whose position
            changed are told (None: only after claims and resolutions).
        canned_replies_path: replies file (default ``config/canned_replies.yml``).
    """
    settings = settings or get_settings()
    factory = session_factory or store_session_factory(
        settings.database_url, echo=settings.echo_sql
    )
    canned = load_canned_replies(canned_replies_path)
    hours = parse_agent_hours(settings.agent_hours)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.announce_lock = asyncio.Lock()  # bound to this event loop
        app.state.stopping = False
        task = None
        if queue_watch_seconds:
            task = asyncio.create_task(watch_queue(app, queue_watch_seconds))
            # Messages a stopped console left pending go out now.
            in_background(app, app.state.courier.deliver_pending())
        try:
            yield
        finally:
            for pending in [task, *app.state.background]:
                if pending is not None:
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pending
            close = getattr(app.state.courier, "aclose", None)
            if close is not None:
                await close()

    app = FastAPI(
        title="Northwind agent console",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.session_factory = factory
    app.state.courier = Courier(settings, session_factory=factory)
    app.state.templates = make_templates()
    app.state.canned_replies = canned
    app.state.agent_hours = hours
    app.state.watch_seconds = watch_seconds
    app.state.announce_lock = asyncio.Lock()
    app.state.stopping = False
    app.state.background = set()

    app.add_middleware(SecurityHeaders, settings=settings)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(api.router)
    app.include_router(events.router)
    app.include_router(pages.router)
    app.include_router(reports_api.router)
    app.include_router(reports.router)
    app.include_router(chat_router)
    _add_error_handlers(app)
    return app


def _wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith(JSON_PREFIXES) or path == "/api"


def _error(
    request: Request, status: int, message: str, *, retry_after: int | None = None
) -> Response:
    """The error as JSON (API, streams) or as a page."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    if _wants_json(request):
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    return render(
        request,
        "error.html",
        {"title": TITLES.get(status, "Something went wrong"), "message": message},
        status=status,
        headers=headers,
    )


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotAuthenticated)
    async def not_authenticated(request: Request, exc: NotAuthenticated) -> Response:
        if _wants_json(request):
            return _error(request, 401, "sign in first: a bearer token or a session")
        return login_redirect(request)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> Response:
        status = next((code for kind, code in STATUS_OF if isinstance(exc, kind)), 400)
        if isinstance(exc, LoginThrottled):
            return _error(request, 429, str(exc), retry_after=exc.retry_after_seconds)
        return _error(request, status, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404 and not _wants_json(request):
            return _error(request, 404, "There is no such page.")
        return _error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}"
            for e in exc.errors()
        ]
        return _error(request, 422, "invalid request: " + "; ".join(problems))

    del not_authenticated, store_error, http_error, invalid
