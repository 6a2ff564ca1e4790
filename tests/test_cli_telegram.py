"""``crm telegram`` against the local fake Bot API (real HTTP, real PTB)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from cli.telegram import ALLOWED_UPDATES, WEBHOOK_PATH, telegram_app
from crm_settings import get_settings
from tests.fakes.telegram_api import FakeTelegramApi

SECRET = "webhook_secret-0123456789"
URL = "https://bot.example.com/webhooks/telegram/webhook"


@pytest.fixture()
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTelegramApi]:
    with FakeTelegramApi() as fake:
        monkeypatch.setenv("TELEGRAM_BOT_TOKEN", fake.token)
        monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", SECRET)
        monkeypatch.setenv("TELEGRAM_API_URL", fake.url)
        get_settings.cache_clear()
        try:
            yield fake
        finally:
            get_settings.cache_clear()


@dataclass
class Run:
    exit_code: int
    output: str

    @property
    def flat(self) -> str:
        """The output on one line (Rich wraps long lines at the terminal width)."""
        return " ".join(self.output.split())


def run(*args: str) -> Run:
    result = CliRunner().invoke(telegram_app, list(args))
    return Run(result.exit_code, result.output)


def test_set_webhook_sends_url_secret_and_update_kinds(api: FakeTelegramApi) -> None:
    result = run("set-webhook", URL)
    assert result.exit_code == 0, result.output
    [call] = api.calls("setWebhook")
    assert call["url"] == URL
    assert call["secret_token"] == SECRET
    assert call["allowed_updates"] == list(ALLOWED_UPDATES)
    assert call["drop_pending_updates"] is False
    assert f"webhook set: {URL}" in result.flat
    assert SECRET not in result.output and api.token not in result.output


def test_a_bare_host_gets_the_webhook_path(api: FakeTelegramApi) -> None:
    assert run("set-webhook", "https://bot.example.com").exit_code == 0
    assert api.webhook["url"] == f"https://bot.example.com{WEBHOOK_PATH}"


def test_http_is_refused_unless_insecure(api: FakeTelegramApi) -> None:
    refused = run("set-webhook", "http://127.0.0.1:5005/webhooks/telegram/webhook")
    assert refused.exit_code == 2
    assert "https" in refused.flat and "--insecure" in refused.flat
    assert api.calls() == []
    allowed = run(
        "set-webhook", "http://127.0.0.1:5005/webhooks/telegram/webhook", "--insecure"
    )
    assert allowed.exit_code == 0, allowed.output
    assert api.webhook["url"] == "http://127.0.0.1:5005/webhooks/telegram/webhook"


@pytest.mark.parametrize(
    "url", ["bot.example.com", "ftp://bot.example.com", "", "https://"]
)
def test_not_a_url_is_refused(api: FakeTelegramApi, url: str) -> None:
    result = run("set-webhook", url)
    assert result.exit_code == 2 and "error:" in result.flat
    assert api.calls() == []


@pytest.mark.parametrize("missing", ["TELEGRAM_BOT_TOKEN", "TELEGRAM_WEBHOOK_SECRET"])
def test_without_token_or_secret_exit_2_with_a_clear_message(
    api: FakeTelegramApi, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.delenv(missing)
    get_settings.cache_clear()
    result = run("set-webhook", URL)
    assert result.exit_code == 2
    assert f"error: {missing} is not set" in result.flat
    assert "Traceback" not in result.output
    assert api.calls() == []


def test_refusal_by_telegram_exits_1(api: FakeTelegramApi) -> None:
    api.fail_next(
        "setWebhook",
        400,
        description="Bad Request: bad webhook: Failed to resolve host",
    )
    result = run("set-webhook", URL)
    assert result.exit_code == 1
    assert "Telegram refused" in result.flat and "resolve host" in result.flat


def test_wrong_token_exits_1(
    api: FakeTelegramApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "1:not-the-token")
    get_settings.cache_clear()
    result = run("info")
    assert result.exit_code == 1 and "Telegram refused" in result.flat
    assert "not-the-token" not in result.output
    assert api.unauthorized == 1


def test_info_shows_url_pending_count_and_last_error(api: FakeTelegramApi) -> None:
    assert run("info").flat.startswith("url: (none)")
    assert run("set-webhook", URL).exit_code == 0
    api.set_webhook_info(
        pending_update_count=3,
        last_error_date=1767225600,
        last_error_message="Wrong response from the webhook: 503 Service Unavailable",
    )
    result = run("info")
    assert result.exit_code == 0, result.output
    assert f"url: {URL}" in result.flat
    assert "pending updates: 3" in result.flat
    assert "updates: message, edited_message, callback_query" in result.flat
    assert "2026-01-01 00:00:00 UTC" in result.flat
    assert "503 Service Unavailable" in result.flat


def test_info_without_token_exits_2(
    api: FakeTelegramApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN")
    get_settings.cache_clear()
    result = run("info")
    assert result.exit_code == 2 and "TELEGRAM_BOT_TOKEN is not set" in result.flat
