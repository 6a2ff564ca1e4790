"""Browser test of the manager's review: Playwright on Debian's Chromium, real stack.

A customer talks to the bot and is handed to an agent, who answers, notes and
resolves (through the API). A manager then, in the browser: filters the
transcripts, opens the conversation, scores it, exports it as a test story,
downloads the CSV and looks at the KPI dashboard; an admin reads the exports in
the audit log; an agent gets 403 on every manager page and API. Screenshots
go to ``var/test-artifacts/`` (the best are copied to ``docs/img/``).
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from pathlib import Path

import pytest
import yaml
from dialogue_support import Chat, conversation_of, handoff_of
from playwright.sync_api import Browser, Page, expect

from tests.e2e.browser_support import browser, login, shot
from tests.e2e.webchat_support import ConsoleAgent

__all__ = ["browser"]  # the fixture, used by name
pytestmark = pytest.mark.slow

MANAGER_PAGES = ("/manager/transcripts", "/manager/kpis", "/manager/scorecards")
MANAGER_API = (
    "/api/conversations",
    "/api/reports/kpis",
    "/api/reports/conversations.csv",
    "/api/scorecards",
    "/api/scorecards.csv",
    "/api/audit",
)


def escalated_conversation(stack, marker: str) -> tuple[str, str]:
    """A conversation handed to an agent who answers, notes and resolves it.

    Returns the conversation id and the handoff's reason.
    """
    chat = Chat(stack)
    chat.say("hello")
    chat.say(f"my parcel {marker} has not arrived")
    chat.say("I want to talk to a human")
    chat.assert_history()
    handoff = stack.eventually(lambda: handoff_of(stack, chat.sender))
    agent = ConsoleAgent(stack.console_url, "agent", stack.demo_password)
    assert agent.post(f"/handoffs/{handoff.id}/claim").status_code == 200
    answer = agent.post(
        f"/handoffs/{handoff.id}/messages", {"text": f"Looking into {marker} now."}
    )
    assert answer.status_code in (200, 201), answer.text
    note = agent.post(f"/handoffs/{handoff.id}/notes", {"text": f"carrier {marker}"})
    assert note.status_code in (200, 201), note.text
    done = agent.post(
        f"/handoffs/{handoff.id}/resolve", {"handback": False, "note": "re-sent"}
    )
    assert done.status_code == 200, done.text
    conversation = conversation_of(stack, chat.sender)
    assert conversation is not None
    return conversation.id, handoff.reason


def download_text(page: Page, link) -> tuple[str, str]:  # noqa: ANN001
    """Click a download link; return the suggested file name and the text."""
    with page.expect_download() as info:
        link.click()
    download = info.value
    path = download.path()
    assert path is not None
    return download.suggested_filename, Path(path).read_text(encoding="utf-8")


def test_manager_reviews_scores_exports_and_reads_kpis(stack, browser: Browser) -> None:
    marker = f"mk{uuid.uuid4().hex[:8]}"
    conversation_id, reason = escalated_conversation(stack, marker)
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, accept_downloads=True
    )
    try:
        page = login(context, stack.console_url, "manager", stack.demo_password)
        page.goto(f"{stack.console_url}/manager/transcripts")
        page.get_by_label("Words").fill(marker)
        page.get_by_label("Outcome").select_option("escalated")
        page.get_by_label("Agent").fill("agent")
        page.get_by_role("button", name="Search").click()
        rows = page.locator("table.results tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("hello")  # its first customer message
        shot(page, "manager-transcripts")

        rows.first.get_by_role("link").first.click()
        expect(page).to_have_url(re.compile(r"/manager/transcripts/"))
        expect(page.locator("body")).to_contain_text(f"my parcel {marker}")
        expect(page.locator("body")).to_contain_text(f"Looking into {marker} now.")
        expect(page.locator("body")).to_contain_text(f"carrier {marker}")  # the note
        expect(page.locator("body")).to_contain_text(reason.replace("_", " "))

        form = page.locator("form.scorecard-form")
        points = form.locator("input[type=number]")
        total = 0
        for i in range(points.count()):
            field = points.nth(i)
            highest = int(field.get_attribute("max") or "0")
            field.fill(str(highest))
            total += highest
        assert total > 0
        form.get_by_label("Comment").fill(f"good handoff {marker}")
        form.get_by_role("button", name="Save scorecard").click()
        scorecards = page.locator("section[aria-labelledby=scorecards-title]")
        expect(scorecards).to_contain_text(f"good handoff {marker}")
        expect(scorecards).to_contain_text("100")
        shot(page, "manager-transcript-review")

        name, story = download_text(
            page, page.get_by_role("link", name="Export as test story")
        )
        assert name.endswith(".yml")
        document = yaml.safe_load(story)
        steps = document["stories"][0]["steps"]
        assert [s["intent"] for s in steps if "intent" in s][0] == "greet"
        assert any(s.get("action") == "action_handoff" for s in steps)

        page.goto(f"{stack.console_url}/manager/transcripts")
        name, table = download_text(page, page.get_by_role("link", name="Download CSV"))
        assert name.endswith(".csv")
        rows_by_id = {
            r["conversation_id"]: r for r in csv.DictReader(io.StringIO(table))
        }
        mine = rows_by_id[conversation_id]
        assert mine["escalated"] == "true" and mine["agent"] == "agent"
        assert mine["escalation_reason"] == reason
        assert float(mine["first_response_seconds"]) >= 0

        page.goto(f"{stack.console_url}/manager/kpis")
        charts = page.locator("svg")
        expect(charts.first).to_be_visible()
        assert charts.count() >= 4
        body = page.locator("main")
        expect(body).to_contain_text("48")  # the re-contact window beside containment
        expect(body).to_contain_text("Containment")
        shot(page, "manager-kpis")
    finally:
        context.close()

    admin_ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        admin = login(admin_ctx, stack.console_url, "admin", stack.demo_password)
        admin.goto(f"{stack.console_url}/admin/audit?group=exports&actor=manager")
        log = admin.locator("main")
        expect(log).to_contain_text("report_exported")
        expect(log).to_contain_text("story_exported")
        shot(admin, "admin-audit")
    finally:
        admin_ctx.close()


def test_agents_get_403_on_every_manager_page_and_api(stack, browser: Browser) -> None:
    chat = Chat(stack)
    chat.say("hello")
    chat.assert_history()
    conversation = conversation_of(stack, chat.sender)
    context = browser.new_context()
    try:
        page = login(context, stack.console_url, "agent", stack.demo_password)
        pages = (
            *MANAGER_PAGES,
            f"/manager/transcripts/{conversation.id}",
            f"/manager/transcripts/{conversation.id}/story.yml",
            "/admin/audit",
        )
        for path in pages:
            response = page.goto(f"{stack.console_url}{path}")
            assert response is not None and response.status == 403, path
        apis = (
            *MANAGER_API,
            f"/api/conversations/{conversation.id}/transcript",
            f"/api/conversations/{conversation.id}/story",
        )
        for path in apis:
            answer = context.request.get(f"{stack.console_url}{path}")
            assert answer.status == 403, path
        # A forged scorecard from the agent's session: refused, nothing saved.
        csrf = page.locator("meta[name=csrf-token]").get_attribute("content") or ""
        forged = context.request.post(
            f"{stack.console_url}/api/conversations/{conversation.id}/scorecard",
            data={"scores": {}, "comment": "forged"},
            headers={"X-CSRF-Token": csrf},
        )
        assert forged.status == 403
    finally:
        context.close()
