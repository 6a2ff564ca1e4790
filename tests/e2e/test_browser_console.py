"""Browser tests: Playwright driving Debian's Chromium against the real stack.

A customer (web chat page) and an agent (console) in two browser contexts at
once. Chromium comes from Debian (``make test`` installs it with
``scripts/ensure-chromium.sh``) and is used through ``executable_path``; no
browser is ever downloaded. Screenshots go to ``var/test-artifacts/``.
"""

from __future__ import annotations

import re
import uuid

import requests
from playwright.sync_api import Browser, BrowserContext, Page, expect

from channels.chat_tokens import verify_chat_token
from crm_store.db import make_engine, make_session_factory
from crm_store.services.staff import create_staff
from tests.e2e.browser_support import TIMEOUT_MS, browser, login, shot
from tests.e2e.webchat_support import ConsoleAgent

__all__ = ["browser"]  # the fixture, used by name


def chat_page(context: BrowserContext, console_url: str) -> Page:
    """Open the customer web chat and wait until it is connected."""
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto(f"{console_url}/chat")
    try:
        expect(page.locator("#chat-status")).to_have_attribute("data-state", "ok")
    except AssertionError:
        shot(page, "webchat-not-connected")
        raise AssertionError(f"chat not connected; page errors: {problems}") from None
    return page


def say(page: Page, text: str) -> None:
    """Type a message and send it with Enter, as a customer does."""
    page.locator("#chat-input").fill(text)
    page.locator("#chat-input").press("Enter")


def test_customer_and_agent_in_two_browsers(stack, browser: Browser) -> None:
    customer_ctx = browser.new_context(viewport={"width": 390, "height": 780})
    agent_ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        agent = login(agent_ctx, stack.console_url, "agent", stack.demo_password)
        customer = chat_page(customer_ctx, stack.console_url)
        marker = uuid.uuid4().hex[:6]
        say(customer, f"hello, parcel question {marker}")
        expect(customer.locator(".chat-msg-bot").first).to_be_visible()
        # A script payload from the customer: text in every page, never markup.
        payload = f"<script>window.pwned=1</script><b>{marker}</b>"
        say(customer, payload)
        say(customer, "I want to talk to a human")
        expect(customer.locator(".chat-msg-bot").last).to_contain_text("in line")

        # The agent's open queue page updates live (no reload) with the handoff
        # (found by the tracker key inside the page's signed token; other tests
        # leave handoffs of unknown visitors in the queue too).
        token = customer.locator("#chat").get_attribute("data-token") or ""
        key = "web:" + verify_chat_token(stack.console_secret, token)
        api = ConsoleAgent(stack.console_url, "manager", stack.demo_password)
        entry = stack.eventually(lambda: api.waiting_for(key))
        row = agent.locator(f"tr:has(a[href='/handoffs/{entry['handoff_id']}'])")
        expect(row.get_by_role("button", name="Claim")).to_be_visible()
        shot(agent, "console-queue")
        row.get_by_role("button", name="Claim").click()
        expect(agent.locator("#transcript")).to_contain_text(payload)
        assert agent.evaluate("window.pwned") is None
        assert agent.locator("#transcript script").count() == 0
        agent.locator("#reply-text").fill(f"Hi, Sam here ({marker}). How can I help?")
        agent.get_by_role("button", name="Send").click()
        expect(customer.locator(".chat-msg-agent")).to_contain_text(
            f"Sam here ({marker})"
        )
        assert customer.evaluate("window.pwned") is None

        # The customer's answer reaches the agent's open conversation live.
        say(customer, f"my parcel {marker} is late")
        expect(agent.locator("#transcript")).to_contain_text(
            f"my parcel {marker} is late"
        )
        shot(agent, "console-conversation")
        shot(customer, "webchat-with-agent")

        # Hand back: the customer's page gets the bot again, asking for a rating.
        agent.get_by_role("button", name="Hand back to bot").click()
        expect(customer.locator(".chat-msg-bot").last).to_contain_text("rate")
        shot(customer, "webchat-handed-back")
    finally:
        customer_ctx.close()
        agent_ctx.close()


def test_roles_csrf_and_login_throttle(stack, browser: Browser) -> None:
    context = browser.new_context()
    try:
        agent = login(context, stack.console_url, "agent", stack.demo_password)
        for path in ("/manager", "/admin"):
            response = agent.goto(f"{stack.console_url}{path}")
            assert response is not None and response.status == 403
        # A form POST without the CSRF token, with the agent's session cookie.
        cookies = {c["name"]: c["value"] for c in context.cookies()}
        forged = requests.post(
            f"{stack.console_url}/handoffs/1/notes",
            data={"text": "forged"},
            cookies=cookies,
            allow_redirects=False,
            timeout=10,
        )
        assert forged.status_code == 403
    finally:
        context.close()

    # Wrong passwords are throttled (a user of its own, so others stay open).
    username = f"throttle-{uuid.uuid4().hex[:6]}"
    engine = make_engine(stack.database_url)
    with make_session_factory(engine).begin() as session:
        create_staff(
            session, username=username, password="right-password-1", role="agent"
        )
    engine.dispose()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        statuses = []
        for _ in range(6):
            page.goto(f"{stack.console_url}/login")
            page.get_by_label("Username").fill(username)
            page.get_by_label("Password").fill("wrong-password")
            with page.expect_response(re.compile(r"/login$")) as answer:
                page.get_by_role("button", name="Sign in").click()
            statuses.append(answer.value.status)
        assert statuses[-1] == 429, statuses
        # Even the right password waits now.
        page.goto(f"{stack.console_url}/login")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill("right-password-1")
        with page.expect_response(re.compile(r"/login$")) as answer:
            page.get_by_role("button", name="Sign in").click()
        assert answer.value.status == 429
        shot(page, "console-login-throttled")
    finally:
        context.close()
