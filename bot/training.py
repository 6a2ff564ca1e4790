"""Train the Rasa model only when its inputs changed (fingerprint cache).

The fingerprint is a SHA-256 over the relative paths and bytes of ``config.yml``,
the domain (``domain.yml`` and/or ``domain/``) and the training data under
``data/`` (NLU, rules, stories), excluding ``data/demo`` (the CRM fixture, which
does not affect the model). The model is trained into
``models/crm-<fingerprint[:16]>.tar.gz`` with the full fingerprint stored next to
it in a ``.fingerprint`` file; an exclusive file lock makes sure two processes
(``crm run`` and the test harness, say) never train at the same time.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from crm_settings import PROJECT_ROOT

logger = logging.getLogger(__name__)

MODEL_PREFIX = "crm-"
EXCLUDED_DATA_DIRS = ("demo",)
TRAINING_SUFFIXES = (".yml", ".yaml", ".md", ".json")


class TrainingError(RuntimeError):
    """``rasa train`` failed or the project has no training inputs."""


def training_inputs(project: Path) -> list[Path]:
    """Return the files that determine the model, sorted, relative to nothing."""
    files: list[Path] = []
    config = project / "config.yml"
    if config.is_file():
        files.append(config)
    if (project / "domain.yml").is_file():
        files.append(project / "domain.yml")
    for root in (project / "domain", project / "data"):
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if root.name == "data" and rel.parts[0] in EXCLUDED_DATA_DIRS:
                continue
            if path.is_file() and path.suffix in TRAINING_SUFFIXES:
                files.append(path)
    return files


def data_paths(project: Path) -> list[Path]:
    """The ``--data`` arguments for ``rasa train``: ``data/`` minus the fixture."""
    data = project / "data"
    if not data.is_dir():
        return []
    return [
        child
        for child in sorted(data.iterdir())
        if child.name not in EXCLUDED_DATA_DIRS and not child.name.startswith(".")
    ]


def domain_path(project: Path) -> Path:
    """The domain: a ``domain/`` directory if present, else ``domain.yml``."""
    directory = project / "domain"
    return directory if directory.is_dir() else project / "domain.yml"


def fingerprint(project: Path) -> str:
    """Return the SHA-256 of the training inputs of ``project``."""
    digest = hashlib.sha256()
    for path in training_inputs(project):
        digest.update(str(path.relative_to(project)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def cached_model(models_dir: Path, print_: str) -> Path | None:
    """Return the model trained for fingerprint ``print_``, if there is one."""
    model = models_dir / f"{MODEL_PREFIX}{print_[:16]}.tar.gz"
    marker = model.with_name(model.name.replace(".tar.gz", ".fingerprint"))
    if model.is_file() and marker.is_file() and marker.read_text().strip() == print_:
        return model
    return None


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_model(
    project: Path = PROJECT_ROOT,
    models_dir: Path | None = None,
    *,
    log: Callable[[str], None] = print,
    force: bool = False,
) -> Path:
    """Return a model for the current training inputs, training it if needed.

    Args:
        project: the Rasa project directory (config.yml, domain, data/).
        models_dir: where models are cached (default ``<project>/models``).
        log: receives one-line progress messages.
        force: train even if a model with the same fingerprint exists.

    Raises:
        TrainingError: no training inputs, or ``rasa train`` failed.
    """
    project = Path(project).resolve()
    models_dir = Path(models_dir or project / "models").resolve()
    if not (project / "config.yml").is_file() or not domain_path(project).exists():
        raise TrainingError(f"{project} has no config.yml and domain to train from")
    print_ = fingerprint(project)
    with _exclusive(models_dir / ".train.lock"):
        model = None if force else cached_model(models_dir, print_)
        if model is not None:
            log(f"model up to date: {model.name} (fingerprint {print_[:12]})")
            return model
        name = f"{MODEL_PREFIX}{print_[:16]}"
        log(f"training data changed (fingerprint {print_[:12]}); training {name}")
        argv = [
            sys.executable,
            "-m",
            "rasa",
            "train",
            "--config",
            str(project / "config.yml"),
            "--domain",
            str(domain_path(project)),
            "--out",
            str(models_dir),
            "--fixed-model-name",
            name,
            "--data",
            *[str(path) for path in data_paths(project)],
        ]
        env = {**os.environ, "RASA_TELEMETRY_ENABLED": "false"}
        result = subprocess.run(argv, cwd=project, env=env, check=False)
        model = models_dir / f"{name}.tar.gz"
        if result.returncode != 0 or not model.is_file():
            raise TrainingError(f"rasa train failed with exit code {result.returncode}")
        # Written last: a model without its marker is never reused.
        model.with_name(f"{name}.fingerprint").write_text(print_ + "\n")
        after = fingerprint(project)
        if after != print_:
            # Rasa writes its default pipeline/policies into a config.yml that has
            # none; register the model under the new fingerprint too, so the next
            # start does not retrain for that.
            alias = models_dir / f"{MODEL_PREFIX}{after[:16]}.tar.gz"
            if not alias.exists():
                os.link(model, alias)
            alias.with_name(alias.name.replace(".tar.gz", ".fingerprint")).write_text(
                after + "\n"
            )
        log(f"model trained: {model}")
        return model
