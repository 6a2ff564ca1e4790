"""``install_all``: the pinned Rasa version, every patch once, checked values."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rasa
from rasa.core.actions.action import RemoteAction
from rasa.core.policies.ted_policy import TEDPolicy
from rasa.core.processor import MessageProcessor
from rasa.core.tracker_store import TrackerStore
from rasa.nlu.selectors.response_selector import ResponseSelector

from bot.patches import PINNED_RASA_VERSION, RasaVersionError, install_all

PATCHED = [
    (MessageProcessor, "handle_message"),
    (TEDPolicy, "predict_action_probabilities"),
    (RemoteAction, "_validate_action_result"),
    (ResponseSelector, "process"),
    (TrackerStore, "get_or_create_tracker"),
    (TrackerStore, "stream_events"),
    (MessageProcessor, "_parse_message_with_graph"),
]
ROOT = Path(__file__).resolve().parents[2]


def current() -> list[Any]:
    return [owner.__dict__[name] for owner, name in PATCHED]


@pytest.fixture()
def stock_rasa() -> Iterator[list[Any]]:
    """Rasa's own methods before and after the test."""
    saved = current()
    yield saved
    for (owner, name), method in zip(PATCHED, saved, strict=True):
        setattr(owner, name, method)


def test_pinned_version_is_the_installed_one() -> None:
    assert rasa.__version__ == PINNED_RASA_VERSION == "3.6.21"


def test_install_all_patches_every_method_once(stock_rasa: list[Any]) -> None:
    install_all(max_concurrent_turns=4, policy_cache_size=128)
    first = current()
    assert all(ours is not stock for ours, stock in zip(first, stock_rasa, strict=True))
    install_all(max_concurrent_turns=4, policy_cache_size=128)
    assert current() == first  # a second install changes nothing
    assert MessageProcessor.handle_message.__wrapped__ is stock_rasa[0]
    assert TEDPolicy.predict_action_probabilities.__wrapped_stock__ is stock_rasa[1]


def test_zero_turns_off_the_gate_and_the_cache(stock_rasa: list[Any]) -> None:
    install_all(max_concurrent_turns=4, policy_cache_size=128)
    install_all(max_concurrent_turns=0, policy_cache_size=0)
    now = current()
    assert now[:2] == stock_rasa[:2]
    assert all(
        ours is not stock for ours, stock in zip(now[2:], stock_rasa[2:], strict=True)
    )


def test_another_rasa_version_is_refused(
    monkeypatch: pytest.MonkeyPatch, stock_rasa: list[Any]
) -> None:
    monkeypatch.setattr(rasa, "__version__", "3.6.20")
    with pytest.raises(RasaVersionError) as refused:
        install_all(max_concurrent_turns=4, policy_cache_size=128)
    assert "3.6.20" in str(refused.value)
    assert "3.6.21" in str(refused.value)
    assert current() == stock_rasa  # nothing patched


@pytest.mark.parametrize(
    ("turns", "cache", "setting"),
    [(-1, 128, "max_concurrent_turns"), (4, -1, "policy_cache_size")],
)
def test_negative_values_name_the_setting(
    stock_rasa: list[Any], turns: int, cache: int, setting: str
) -> None:
    with pytest.raises(ValueError, match=setting):
        install_all(max_concurrent_turns=turns, policy_cache_size=cache)
    assert current() == stock_rasa  # nothing patched


def test_server_refuses_to_start_on_another_rasa_version(tmp_path: Path) -> None:
    """``python -m bot.server`` exits with 2 and says why, before loading a model."""
    script = (
        "import sys, rasa; rasa.__version__ = '3.6.20'\n"
        "from bot.server import main\n"
        "sys.exit(main(['--model', 'missing.tar.gz', '--endpoints', 'none.yml']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "error: Rasa 3.6.20 is installed" in done.stderr
    assert "Rasa 3.6.21" in done.stderr
