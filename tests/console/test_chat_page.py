"""The customer chat page: cookie session, history, and the page in a real browser.

The router runs in a small FastAPI app that sets ``app.state.settings`` and
``app.state.session_factory`` as ``console.app`` does, with the console's
security headers (the strict CSP). The browser test drives Debian's Chromium
(Playwright) against that app and a real Sanic server with the web chat and
control channels; Rasa's agent there is a stand-in that answers through the
output channel it is given and writes the contact history through the store
services, as Rasa's event broker would.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.testclient import TestClient
from rasa.core.channels.channel import UserMessage, register
from rasa.server import configure_cors
from sanic import Sanic
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from channels.chat_tokens import control_token, issue_chat_token, verify_chat_token
from channels.control import ControlInput
from channels.webchat import WebChatInput
from console.chat import COOKIE, router
from console.security import SecurityHeaders
from crm_settings import Settings
from crm_store.db import make_session_factory
from crm_store.models import utcnow
from crm_store.services.conversations import open_conversation
from crm_store.services.interactions import NewInteraction, append_interaction

SECRET = "chat-page-secret-" + "p" * 24
STATIC = Path(__file__).resolve().parents[2] / "console" / "static"
TOKEN_ATTR = re.compile(r'data-token="([^"]+)"')
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def chat_app(settings: Settings, factory: sessionmaker) -> FastAPI:
    app = FastAPI()
    app.state.settings = settings
    app.state.session_factory = factory
    app.add_middleware(SecurityHeaders, settings=settings)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(router)
    return app


def settings_for(**kwargs: Any) -> Settings:
    values = {"console_secret": SECRET, "rasa_port": 5999, **kwargs}
    return Settings(**values)


@pytest.fixture()
def factory(empty_engine: Engine) -> sessionmaker:
    return make_session_factory(empty_engine)


@pytest.fixture()
def client(factory: sessionmaker) -> Iterator[TestClient]:
    with TestClient(chat_app(settings_for(), factory)) as test_client:
        yield test_client


def session_of_page(html: str) -> str:
    match = TOKEN_ATTR.search(html)
    assert match, "the page carries the socket token"
    return verify_chat_token(SECRET, match.group(1))


def record(
    factory: sessionmaker,
    key: str,
    rows: list[tuple[str, str, str | None, dict]],
    *,
    conversation_id: str | None = None,
    start: dt.datetime | None = None,
) -> str:
    """Write interactions (direction, author, text, meta) as the broker would."""
    conversation_id = conversation_id or f"cv_{uuid.uuid4().hex}"
    at = start or utcnow()
    with factory.begin() as session:
        open_conversation(
            session,
            conversation_id=conversation_id,
            channel="chat",
            tracker_key=key,
            at=at,
        )
        for n, (direction, author, text, meta) in enumerate(rows):
            append_interaction(
                session,
                item=NewInteraction(
                    event_id=meta.pop("event_id", f"ev-{uuid.uuid4().hex}"),
                    channel="chat",
                    direction=direction,
                    author=author,
                    text=text,
                    conversation_id=conversation_id,
                    occurred_at=at + dt.timedelta(seconds=n),
                    meta=meta,
                ),
            )
    return conversation_id


# -- the page and its cookie ----------------------------------------------------


def test_the_page_starts_a_signed_session_in_an_http_only_cookie(
    client: TestClient,
) -> None:
    response = client.get("/chat")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for part in ("HttpOnly", "Path=/chat", "SameSite=lax", "Max-Age=604800"):
        assert part in cookie
    assert "Secure" not in cookie
    token = response.cookies[COOKIE]
    assert session_of_page(response.text) == verify_chat_token(SECRET, token)
    assert response.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in response.headers["content-security-policy"]


def test_a_valid_cookie_keeps_its_session_a_bad_one_gets_a_new_one(
    client: TestClient,
) -> None:
    first = session_of_page(client.get("/chat").text)
    assert session_of_page(client.get("/chat").text) == first  # cookie re-used
    client.cookies.set(COOKIE, "v1.AAAAAAAAAAAAAAAAAAAAAA.9999999999.forged")
    forged = session_of_page(client.get("/chat").text)
    assert forged not in (first, "AAAAAAAAAAAAAAAAAAAAAA")
    expired, _ = issue_chat_token(SECRET, first, ttl_seconds=1, now=1_000_000)
    client.cookies.set(COOKIE, expired)
    assert session_of_page(client.get("/chat").text) not in (first, forged)


def test_production_cookies_are_secure(factory: sessionmaker) -> None:
    app = chat_app(settings_for(environment="production"), factory)
    with TestClient(app, base_url="https://testserver") as client:
        assert "Secure" in client.get("/chat").headers["set-cookie"]


def test_the_socket_address_comes_from_the_settings(factory: sessionmaker) -> None:
    with TestClient(chat_app(settings_for(rasa_port=5123), factory)) as client:
        html = client.get("/chat").text
        assert 'data-socket-url=""' in html and 'data-socket-port="5123"' in html
    custom = settings_for(chat_socket_url="https://chat.example.com")
    with TestClient(chat_app(custom, factory)) as client:
        assert 'data-socket-url="https://chat.example.com"' in client.get("/chat").text


def test_the_page_has_no_inline_code_and_uses_only_local_assets(
    client: TestClient,
) -> None:
    html = client.get("/chat").text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all(
        'src="/static/' in attrs and not body.strip() for attrs, body in scripts
    )
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html)
    assert not re.search(r'(src|href)="(https?:)?//', html)
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        assert client.get(asset).status_code == 200, asset
    assert 'role="log"' in html and 'aria-live="polite"' in html
    script = (STATIC / "chat.js").read_text()
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ):
        assert sink not in script


def test_without_a_secret_the_chat_is_unavailable(factory: sessionmaker) -> None:
    settings = settings_for()
    settings.console_secret = None
    with TestClient(chat_app(settings, factory)) as client:
        assert client.get("/chat").status_code == 503
        assert client.get("/chat/history").status_code == 503


# -- history --------------------------------------------------------------------


def test_history_needs_the_cookie(client: TestClient) -> None:
    response = client.get("/chat/history")
    assert response.status_code == 401
    assert "open /chat" in response.json()["error"]
    client.cookies.set(COOKIE, "v1.AAAAAAAAAAAAAAAAAAAAAA.9999999999.forged")
    assert client.get("/chat/history").status_code == 401


def test_a_new_session_has_an_empty_history(client: TestClient) -> None:
    client.get("/chat")
    response = client.get("/chat/history")
    assert (response.status_code, response.json()) == (200, {"messages": []})


def test_history_shows_what_the_customer_saw_of_the_latest_conversation(
    client: TestClient, factory: sessionmaker
) -> None:
    session = session_of_page(client.get("/chat").text)
    key = f"web:{session}"
    earlier = utcnow() - dt.timedelta(days=2)
    record(factory, key, [("in", "customer", "an old visit", {})], start=earlier)
    with factory.begin() as s:
        from crm_store.services.conversations import close_conversation

        close_conversation(
            s,
            conversation_id=_latest_id(factory, key),
            outcome="self_served",
        )
    record(
        factory,
        key,
        [
            ("in", "customer", "where is <b>my</b> order?", {}),
            ("out", "bot", "Shall I get a person?", {"buttons": ["Yes", "No"]}),
            ("in", "customer", "EXTERNAL: handed_back", {}),
            ("in", "system", None, {"kind": "complaint"}),
            ("in", "customer", "CSAT 5", {"event_id": "csat:cv_x"}),
            (
                "out",
                "agent",
                "Anna here.",
                {
                    "event_id": "outbox:41",
                    "buttons": [{"title": "OK", "payload": "/affirm"}],
                },
            ),
            ("out", "system", "You're next in line.", {"event_id": "outbox:42"}),
        ],
    )
    record(factory, "web:" + "Z" * 22, [("in", "customer", "someone else", {})])
    messages = client.get("/chat/history").json()["messages"]
    assert [(m["author"], m["text"]) for m in messages] == [
        ("customer", "where is <b>my</b> order?"),
        ("bot", "Shall I get a person?"),
        ("agent", "Anna here."),
        ("system", "You're next in line."),
    ]
    assert messages[1]["buttons"] == [{"title": "Yes"}, {"title": "No"}]
    assert messages[2]["buttons"] == [{"title": "OK", "payload": "/affirm"}]
    assert [m.get("ref") for m in messages] == [None, None, "outbox:41", "outbox:42"]
    assert all(m["at"].endswith("Z") and isinstance(m["id"], int) for m in messages)


def _latest_id(factory: sessionmaker, key: str) -> str:
    from crm_store.services.history import latest_conversation

    with factory() as session:
        conversation = latest_conversation(session, tracker_key=key)
        assert conversation is not None
        return conversation.id


# -- in a real browser --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class HistoryAgent:
    """Stands in for Rasa + its event broker: answers and records the history."""

    factory: sessionmaker
    texts: list[str] = field(default_factory=list)
    conversations: dict[str, str] = field(default_factory=dict)

    def write(self, key: str, direction: str, author: str, text: str) -> None:
        conversation = self.conversations.setdefault(key, f"cv_{uuid.uuid4().hex}")
        record(
            self.factory,
            key,
            [(direction, author, text, {})],
            conversation_id=conversation,
        )

    async def handle_message(self, message: UserMessage) -> None:
        key = message.sender_id
        self.texts.append(message.text)
        await asyncio.to_thread(self.write, key, "in", "customer", message.text)
        await asyncio.sleep(0.5)  # long enough to see the typing indicator
        out = message.output_channel
        if message.text == "options please":
            answer = "Would you like to talk to a person?"
            buttons = [
                {"title": "Yes, please", "payload": "/affirm"},
                {"title": "No thanks", "payload": "/deny"},
            ]
            await out.send_text_with_buttons(key, answer, buttons)
        else:
            answer = f"You said {len(message.text)} characters."
            await out.send_text_message(key, answer)
        await asyncio.to_thread(self.write, key, "out", "bot", answer)

    def is_ready(self) -> bool:
        return False


@dataclass
class Stack:
    page_url: str
    rasa_port: int
    agent: HistoryAgent
    rasa: Any = None

    async def start_rasa(self) -> None:
        Sanic.test_mode = True
        app = Sanic(f"chat_page_{uuid.uuid4().hex[:8]}")
        configure_cors(app, "*")  # as `crm run` starts the Rasa server
        app.ctx.agent = self.agent
        origins = [self.page_url.rsplit("/", 1)[0]]
        web = WebChatInput(secret=SECRET, origins=origins)
        register([web, ControlInput(secret=SECRET)], app, route="/webhooks/")
        server = await app.create_server(
            host="127.0.0.1",
            port=self.rasa_port,
            return_asyncio_server=True,
            access_log=False,
        )
        await server.startup()
        await server.before_start()
        await server.after_start()
        self.rasa = server

    async def stop_rasa(self) -> None:
        """Stop as a killed process would: open connections are cut too."""
        if self.rasa is not None:
            for connection in list(self.rasa.connections):
                connection.transport.abort()
            await self.rasa.before_stop()
            await self.rasa.close()
            await self.rasa.after_stop()
            self.rasa = None

    async def push(self, key: str, text: str) -> dict:
        """Queue an agent message as the console does: history row, then push."""
        conversation = self.agent.conversations[key]
        meta = {"event_id": "outbox:1", "purpose": "agent_reply"}
        rows = [("out", "agent", text, meta)]
        record(self.agent.factory, key, rows, conversation_id=conversation)
        async with httpx.AsyncClient() as http:
            answer = await http.post(
                f"http://127.0.0.1:{self.rasa_port}/webhooks/control/push",
                json={
                    "tracker_key": key,
                    "messages": [{"text": text, "ref": "outbox:1"}],
                },
                headers={"Authorization": f"Bearer {control_token(SECRET)}"},
            )
        return answer.json()


@pytest.fixture()
async def stack(factory: sessionmaker) -> AsyncIterator[Stack]:
    # `make test` installs Debian's Chromium (scripts/ensure-chromium.sh); a
    # missing browser is a failed setup, not a reason to skip the page's tests.
    assert Path(CHROMIUM).exists(), "Chromium is not installed: run `make browser`"
    rasa_port, page_port = free_port(), free_port()
    settings = settings_for(rasa_port=rasa_port, console_port=page_port)
    server = uvicorn.Server(
        uvicorn.Config(
            chat_app(settings, factory),
            host="127.0.0.1",
            port=page_port,
            log_level="warning",
            lifespan="off",
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    stack = Stack(
        f"http://127.0.0.1:{page_port}/chat", rasa_port, HistoryAgent(factory)
    )
    await stack.start_rasa()
    try:
        yield stack
    finally:
        await stack.stop_rasa()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await serving


async def test_the_page_in_a_phone_browser(stack: Stack) -> None:
    from playwright.async_api import async_playwright, expect

    problems: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"]
        )
        try:
            page = await browser.new_page(viewport={"width": 375, "height": 800})
            page.on(
                "console",
                lambda m: problems.append(m.text) if m.type == "error" else None,
            )
            page.on("pageerror", lambda error: problems.append(str(error)))
            await page.goto(stack.page_url)
            await page.wait_for_selector("#chat-status[data-state=ok]")
            log = page.locator("#chat-log")
            assert await log.get_attribute("role") == "log"
            assert await log.get_attribute("aria-live") == "polite"

            # Markup in a message stays text; typing shows while the bot works.
            markup = 'hi <img src=x onerror="window.hacked=1"> <b>bold</b>'
            await page.fill("#chat-input", markup)
            await page.keyboard.press("Enter")
            await page.wait_for_selector("#chat-typing:not([hidden])")
            await page.wait_for_selector(".chat-msg-bot")
            assert (
                await page.locator(".chat-msg-customer .chat-text").first.text_content()
                == markup
            )
            assert await page.locator("#chat-log img, #chat-log b").count() == 0
            assert await page.evaluate("window.hacked === undefined")
            assert await page.locator("#chat-typing").is_hidden()
            assert await page.input_value("#chat-input") == ""

            # Buttons are real buttons, usable with the keyboard; the payload is sent.
            await page.fill("#chat-input", "options please")
            await page.click("#chat-send")
            choice = page.locator(".chat-choice", has_text="Yes, please")
            await choice.wait_for()
            assert (
                await choice.evaluate("b => b.tagName + ':' + b.type")
                == "BUTTON:button"
            )
            await choice.focus()
            await page.keyboard.press("Enter")
            await expect(page.locator(".chat-msg-bot")).to_have_count(3)
            assert stack.agent.texts[-1] == "/affirm"
            assert (
                await page.locator(".chat-msg-customer .chat-text").last.text_content()
                == "Yes, please"
            )
            assert await choice.is_disabled()

            # An agent's message pushed by the console appears as the agent's.
            session = session_of_page(await page.content())
            assert await stack.push(f"web:{session}", "Anna <i>here</i>.") == {
                "delivered": True
            }
            agent = page.locator(".chat-msg-agent .chat-text")
            await agent.wait_for()
            assert await agent.text_content() == "Anna <i>here</i>."

            # Nothing is wider than a phone.
            assert await page.evaluate("document.documentElement.scrollWidth") <= 375

            # The server goes away: the page says so, reconnects and re-syncs.
            shown = await page.locator(".chat-msg").count()
            await stack.stop_rasa()
            await page.wait_for_selector("#chat-status[data-state=wait]")
            assert await page.locator("#chat-send").is_disabled()
            await stack.start_rasa()
            await page.wait_for_selector("#chat-status[data-state=ok]", timeout=20000)
            await page.wait_for_timeout(500)
            assert await page.locator(".chat-msg").count() == shown

            # A reload rebuilds the log from /chat/history (same session).
            await page.reload()
            await page.wait_for_selector("#chat-status[data-state=ok]")
            await expect(page.locator(".chat-msg")).to_have_count(shown)
            texts = await page.locator(".chat-msg .chat-text").all_text_contents()
            assert texts[0] == markup
            assert "Would you like to talk to a person?" in texts
            assert "Yes, please" in texts  # the payload sent, shown as its title
            assert "/affirm" not in texts
            assert texts.count("Anna <i>here</i>.") == 1
            assert session_of_page(await page.content()) == session
            await page.screenshot(path=str(Path("/tmp") / "chat-page-test.png"))
        finally:
            await browser.close()
    assert problems == []
