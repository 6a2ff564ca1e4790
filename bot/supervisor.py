"""``crm run``: prepare the embedded store and supervise the runtime processes.

The store is prepared first (migrations, demo data). Processes registered in
``runtime_processes`` are then started, watched and stopped together on Ctrl-C.
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
    """Migrate the store and load the demo data; return a one-line summary."""
    from bot.store import engine_for, safe_url, session_factory
    from crm_store.migrate import upgrade
    from crm_store.seeding import seed_directory

    upgrade(engine_for(url))
    with session_factory(url).begin() as session:
        report = seed_directory(session, directory=demo_dir)
    loaded = sum(report.inserted.values())
    return (
        f"store ready at {safe_url(url)} (demo data: {loaded} rows loaded, "
        f"{sum(report.skipped.values())} already there)"
    )


def runtime_processes() -> list[ManagedProcess]:
    """The processes ``crm run`` supervises besides the store."""
    return []


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
    """Prepare the store, then supervise the runtime until Ctrl-C."""
    print(prepare_store(url), flush=True)
    processes = runtime_processes()
    if not processes:
        print("no other services configured yet; press Ctrl-C to stop", flush=True)
    return supervise(processes)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1]))
