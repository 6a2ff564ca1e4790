"""Model fingerprint: what triggers a retrain and what reuses the cached model."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bot.training import (
    TrainingError,
    _exclusive,
    cached_model,
    ensure_model,
    fingerprint,
)


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "config.yml").write_text("recipe: default.v1\nlanguage: en\n")
    (tmp_path / "domain").mkdir()
    (tmp_path / "domain" / "core.yml").write_text('version: "3.1"\nintents: [greet]\n')
    (tmp_path / "data" / "nlu").mkdir(parents=True)
    (tmp_path / "data" / "nlu" / "basics.yml").write_text("nlu: []\n")
    (tmp_path / "data" / "rules.yml").write_text("rules: []\n")
    (tmp_path / "data" / "demo").mkdir()
    (tmp_path / "data" / "demo" / "customers.csv").write_text("customer_id\nC1\n")
    return tmp_path


@pytest.mark.parametrize(
    ("path", "changes"),
    [
        ("data/nlu/basics.yml", True),
        ("data/rules.yml", True),
        ("data/stories.yml", True),
        ("domain/core.yml", True),
        ("config.yml", True),
        ("data/demo/customers.csv", False),
        ("data/demo/orders.csv", False),
        ("README.md", False),
    ],
)
def test_fingerprint_covers_training_inputs_only(
    project: Path, path: str, changes: bool
) -> None:
    before = fingerprint(project)
    target = project / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text((target.read_text() if target.exists() else "") + "# edit\n")
    assert (fingerprint(project) != before) is changes


def test_cached_model_is_reused_without_training(project: Path) -> None:
    models = project / "models"
    models.mkdir()
    print_ = fingerprint(project)
    model = models / f"crm-{print_[:16]}.tar.gz"
    model.write_bytes(b"model")
    # A model without its fingerprint marker is not trusted.
    assert cached_model(models, print_) is None
    model.with_name(f"crm-{print_[:16]}.fingerprint").write_text(print_ + "\n")
    # The fake project cannot be trained: reaching rasa would raise.
    assert ensure_model(project, log=lambda _: None) == model.resolve()


def test_changed_data_does_not_reuse_the_old_model(project: Path) -> None:
    models = project / "models"
    models.mkdir()
    old = fingerprint(project)
    model = models / f"crm-{old[:16]}.tar.gz"
    model.write_bytes(b"model")
    model.with_name(f"crm-{old[:16]}.fingerprint").write_text(old + "\n")
    (project / "data" / "nlu" / "basics.yml").write_text("nlu: [broken\n")
    with pytest.raises(TrainingError):
        ensure_model(project, log=lambda _: None)


def test_missing_project_files_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="no config.yml"):
        ensure_model(tmp_path, log=lambda _: None)


def test_training_lock_is_exclusive(tmp_path: Path) -> None:
    lock = tmp_path / ".train.lock"
    order: list[str] = []

    def second() -> None:
        with _exclusive(lock):
            order.append("second")

    with _exclusive(lock):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        order.append("first done")
    thread.join(5)
    assert order == ["first done", "second"]
