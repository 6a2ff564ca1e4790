"""The Rasa server refuses to run without its contact-history broker."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from bot.server import BROKER_GUARD_EXIT
from bot.training import ensure_model
from runtime.processes import free_port, process_env, rasa_server_argv

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
    argv = rasa_server_argv(model=model, endpoints=endpoints, port=free_port())
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
        ("runtime.processes.ServerProcess", "is not a Rasa EventBroker"),
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
    assert f"error: invalid settings: {variable}='{value}'" in result.stderr
    assert "Rasa server is up and running" not in result.stdout + result.stderr


@pytest.mark.slow
def test_broker_that_fails_while_loading_stops_the_server(tmp_path: Path) -> None:
    model = ensure_model(Path(__import__("os").environ.get("CRM_E2E_PROJECT", ROOT)))
    result = start_rasa(tmp_path, "tests.e2e.lazy_broker.LazyImportBroker", model, 240)
    output = result.stdout + result.stderr
    assert result.returncode == BROKER_GUARD_EXIT, output[-3000:]
    assert "was not created" in output
