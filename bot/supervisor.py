"""``crm run``: prepare the embedded store and supervise the runtime processes.

The store is prepared first (migrations, demo data), then the Rasa model is
trained if its training data changed (``bot.training``). Processes registered in
``runtime_processes`` (the action server on ``ACTION_PORT``, the Rasa server on
``RASA_PORT``) are then started, watched and stopped together on Ctrl-C; if one
exits, all are stopped. Their logs go to stdout.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from crm_store.settings import PROJECT_ROOT

DEMO_DIR = PROJECT_ROOT / "data" / "demo"


@dataclass
class ManagedProcess:
    """A child process the supervisor starts, watches and stops."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen | None = None


def prepare_store(url: str, demo_dir: Path = DEMO_DIR) -> str:
    """Migrate the store, load the demo data and refresh the analytics scores.

    Scores feed the bot's treatment rules (``treatment_for_customer``), so they are
    refreshed here (incrementally: only customers whose inputs changed are written).
    Returns a one-line summary.
    """
    from bot.store import engine_for, safe_url, session_factory
    from crm_store.analytics.refresh import refresh_scores
    from crm_store.migrate import upgrade
    from crm_store.seeding import seed_directory

    upgrade(engine_for(url))
    with session_factory(url).begin() as session:
        report = seed_directory(session, directory=demo_dir)
    with session_factory(url).begin() as session:
        scores = refresh_scores(session)
    loaded = sum(report.inserted.values())
    return (
        f"store ready at {safe_url(url)} (demo data: {loaded} rows loaded, "
        f"{sum(report.skipped.values())} already there; scores: {scores.written} of "
        f"{scores.customers} customers updated)"
    )


RUNTIME_DIR = PROJECT_ROOT / "var" / "run"


def runtime_processes(
    url: str | None = None, model: Path | None = None
) -> list[ManagedProcess]:
    """The processes ``crm run`` supervises besides the store.

    With a store ``url`` and a ``model``: the action server and the guarded Rasa
    server (``python -m bot.rasa_server``), ports from ``ACTION_PORT`` and
    ``RASA_PORT``, endpoints from a runtime copy of ``endpoints.yml``.
    """
    if url is None or model is None:
        return []
    import os

    from bot.runtime import (
        DEFAULT_ACTION_PORT,
        DEFAULT_RASA_PORT,
        action_server_argv,
        action_url,
        process_env,
        rasa_server_argv,
        write_runtime_endpoints,
    )

    rasa_port = int(os.environ.get("RASA_PORT", DEFAULT_RASA_PORT))
    action_port = int(os.environ.get("ACTION_PORT", DEFAULT_ACTION_PORT))
    endpoints = write_runtime_endpoints(
        RUNTIME_DIR / "endpoints.yml", action_webhook=action_url(action_port)
    )
    env = process_env(database_url=url)
    return [
        ManagedProcess("action server", action_server_argv(port=action_port), env),
        ManagedProcess(
            "rasa",
            rasa_server_argv(
                model=model,
                endpoints=endpoints,
                port=rasa_port,
                cors="*",
                interface=os.environ.get("RASA_INTERFACE", "0.0.0.0"),
            ),
            env,
        ),
    ]


def announce_when_ready(log=print) -> None:  # noqa: ANN001
    """Print once the Rasa server answers (in a background thread)."""
    import os
    import threading

    from bot.runtime import DEFAULT_RASA_PORT, wait_until_ready

    port = int(os.environ.get("RASA_PORT", DEFAULT_RASA_PORT))

    def wait() -> None:
        if wait_until_ready(f"http://127.0.0.1:{port}/", timeout=600):
            log(
                f"bot ready: POST http://127.0.0.1:{port}/webhooks/rest/webhook "
                f"(try `crm chat`); Ctrl-C stops everything"
            )

    threading.Thread(target=wait, name="announce-ready", daemon=True).start()


def supervise(processes: list[ManagedProcess], log=print) -> int:  # noqa: ANN001
    """Start ``processes``, wait until one exits or Ctrl-C, then stop them all."""
    stopping = False

    def stop(*_args: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for proc in processes:
        log(f"starting {proc.name}: {' '.join(proc.argv)}")
        proc.popen = subprocess.Popen(proc.argv, env={**_base_env(), **proc.env})
    exit_code = 0
    while not stopping:
        for proc in processes:
            if proc.popen and proc.popen.poll() is not None:
                log(
                    f"{proc.name} exited with code {proc.popen.returncode}; "
                    "stopping all"
                )
                exit_code, stopping = proc.popen.returncode or 1, True
        time.sleep(0.5)
    for proc in processes:
        if proc.popen and proc.popen.poll() is None:
            proc.popen.terminate()
    for proc in processes:
        if proc.popen:
            try:
                proc.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
    log("stopped")
    return exit_code


def _base_env() -> dict[str, str]:
    import os

    return dict(os.environ)


def run(url: str) -> int:
    """Prepare the store and the model, then supervise the runtime until Ctrl-C."""
    from bot.training import TrainingError, ensure_model

    print(prepare_store(url), flush=True)
    try:
        model = ensure_model(log=lambda line: print(line, flush=True))
    except TrainingError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    processes = runtime_processes(url, model)
    if not processes:
        print("no other services configured yet; press Ctrl-C to stop", flush=True)
    else:
        announce_when_ready(lambda line: print(line, flush=True))
    return supervise(processes)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1]))
