"""The Rasa server refuses to run without its contact-history broker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bot.rasa_server import BROKER_GUARD_EXIT
from bot.runtime import free_port, process_env
from bot.training import ensure_model

ROOT = Path(__file__).resolve().parents[2]


def start_rasa(
    tmp_path: Path,
    broker_type: str,
    model: Path,
    timeout: float,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text(
        yaml.safe_dump(
            {
                "action_endpoint": {"url": "http://127.0.0.1:9/webhook"},
                "event_broker": {"type": broker_type},
            }
        )
    )
    argv = [
        sys.executable,
        "-m",
        "bot.rasa_server",
        "--model",
        str(model),
        "--endpoints",
        str(endpoints),
        "--port",
        str(free_port()),
    ]
    env = process_env(
        database_url=f"sqlite:///{tmp_path / 'crm.db'}", extra=extra_env or {}
    )
    return subprocess.run(
        argv,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("broker_type", "message"),
    [
        ("bot.brokers_typo.ContactHistoryBroker", "cannot be imported"),
        ("bot.broker.NoSuchBroker", "cannot be imported"),
        ("bot.runtime.ServerProcess", "is not a Rasa EventBroker"),
    ],
)
def test_unloadable_broker_stops_the_server_before_start(
    tmp_path: Path, broker_type: str, message: str
) -> None:
    result = start_rasa(tmp_path, broker_type, tmp_path / "no-model.tar.gz", 120)
    assert result.returncode == BROKER_GUARD_EXIT, result.stderr[-2000:]
    assert message in result.stderr
    assert broker_type in result.stderr
    assert "Rasa server is up and running" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [("CRM_MAX_CONCURRENT_TURNS", "eight"), ("CRM_POLICY_CACHE_SIZE", "-5")],
)
def test_bad_tuning_settings_stop_the_server_with_a_clear_error(
    tmp_path: Path, variable: str, value: str
) -> None:
    result = start_rasa(
        tmp_path,
        "bot.broker.ContactHistoryBroker",
        tmp_path / "no-model.tar.gz",
        120,
        {variable: value},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"{variable} must be" in result.stderr
    assert "Rasa server is up and running" not in result.stdout + result.stderr


@pytest.mark.slow
def test_broker_that_fails_while_loading_stops_the_server(tmp_path: Path) -> None:
    model = ensure_model(Path(__import__("os").environ.get("CRM_E2E_PROJECT", ROOT)))
    result = start_rasa(tmp_path, "tests.e2e.lazy_broker.LazyImportBroker", model, 240)
    output = result.stdout + result.stderr
    assert result.returncode == BROKER_GUARD_EXIT, output[-3000:]
    assert "was not created" in output
