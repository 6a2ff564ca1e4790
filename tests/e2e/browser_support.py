"""Playwright on Debian's Chromium for the browser tests: the browser, sign-in, shots.

Chromium comes from Debian (``make test`` installs it with
``scripts/ensure-chromium.sh``) and is used through ``executable_path``; no
browser is ever downloaded. Screenshots go to ``var/test-artifacts/``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "var" / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TIMEOUT_MS = 20_000
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "run `make browser` (Debian's chromium)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


def shot(page: Page, name: str) -> None:
    """Save a screenshot artefact."""
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def login(context: BrowserContext, console_url: str, user: str, password: str) -> Page:
    """Sign in through the form; return the queue page."""
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{console_url}/login")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/$"))
    return page
