"""Building blocks of the bot's processes (``runtime.stack`` assembles them).

Builds the command lines of the Rasa server (through ``bot.server``) and the
action server, their environment, a runtime copy of ``endpoints.yml`` pointing
at the action server's actual port, and ``ServerProcess``: one child process
with readiness polling and a clean stop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from crm_settings import PROJECT_ROOT

DEFAULT_CREDENTIALS = PROJECT_ROOT / "credentials.yml"


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def action_url(port: int, host: str = "127.0.0.1") -> str:
    """The action server's webhook URL (IPv6 addresses in brackets)."""
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/webhook"


def write_runtime_endpoints(
    destination: Path,
    *,
    action_webhook: str,
    source: Path = PROJECT_ROOT / "endpoints.yml",
    overrides: dict[str, Any] | None = None,
) -> Path:
    """Write ``source`` to ``destination`` with the action endpoint's URL replaced.

    Everything else (event broker, tracker and lock stores, ``${ENV}`` references)
    is copied as is; ``overrides`` replaces whole top-level sections (``None``
    removes one).
    """
    config: dict[str, Any] = {}
    if source.is_file():
        config = yaml.safe_load(source.read_text()) or {}
    action = dict(config.get("action_endpoint") or {})
    action["url"] = action_webhook
    config["action_endpoint"] = action
    for key, value in (overrides or {}).items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(yaml.safe_dump(config, sort_keys=False))
    return destination


def rasa_server_argv(
    *,
    model: Path,
    endpoints: Path,
    port: int,
    credentials: Path | None = None,
    cors: str | None = None,
    enable_api: bool = False,
    interface: str = "127.0.0.1",
) -> list[str]:
    """Command line of the guarded Rasa server (``python -m bot.server``).

    ``credentials`` defaults to the project's ``credentials.yml``; it is passed
    only when the file exists.
    """
    credentials = credentials or DEFAULT_CREDENTIALS
    argv = [
        sys.executable,
        "-m",
        "bot.server",
        "--model",
        str(model),
        "--endpoints",
        str(endpoints),
        "--port",
        str(port),
        "--interface",
        interface,
    ]
    if credentials.is_file():
        argv += ["--credentials", str(credentials)]
    if cors:
        argv += ["--cors", cors]
    if enable_api:
        argv.append("--enable-api")
    return argv


def action_server_argv(
    *, port: int, interface: str = "127.0.0.1", actions: str = "actions"
) -> list[str]:
    """Command line of the guarded action server (``python -m actions.server``).

    The token it requires comes from the environment (``CRM_ACTION_TOKEN``),
    never from the command line, which other local users can read.
    """
    return [
        sys.executable,
        "-m",
        "actions.server",
        "--actions",
        actions,
        "--port",
        str(port),
        "--interface",
        interface,
    ]


def console_argv() -> list[str]:
    """Command line of the agent console (``python -m console``).

    Port, interface, store and secrets come from the environment.
    """
    return [sys.executable, "-m", "console"]


def email_argv() -> list[str]:
    """Command line of the SMTP listener and mail worker (``python -m channels.email``).

    Port, recipients, relay, store and secrets come from the environment.
    """
    return [sys.executable, "-m", "channels.email"]


def process_env(
    *,
    database_url: str,
    project: Path = PROJECT_ROOT,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Environment for the bot processes: this process's, plus store URL and path.

    The only place in ``runtime`` that touches ``os.environ``: children inherit
    it, so their own ``crm_settings`` see the same variables.
    """
    paths = [str(PROJECT_ROOT)]
    if project.resolve() != PROJECT_ROOT:
        paths.insert(0, str(project))
    existing = os.environ.get("PYTHONPATH")
    if existing:
        paths.append(existing)
    env = {
        **os.environ,
        "CRM_DATABASE_URL": database_url,
        "PYTHONPATH": os.pathsep.join(paths),
        "RASA_TELEMETRY_ENABLED": "false",
        "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra or {})
    return env


def smtp_ok(url: str, timeout: float = 2.0) -> bool:
    """True if the SMTP server at ``smtp://host:port`` greets with 220."""
    host, _, port = url.removeprefix("smtp://").rstrip("/").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout) as sock:
            sock.settimeout(timeout)
            greeting = sock.recv(512)
            with contextlib.suppress(OSError):
                sock.sendall(b"QUIT\r\n")
            return greeting.startswith(b"220")
    except (OSError, ValueError):
        return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True if GET ``url`` answers 2xx (an ``smtp://`` URL: greets with 220)."""
    if url.startswith("smtp://"):
        return smtp_ok(url, timeout)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            return 200 <= response.status < 300
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def wait_until_ready(
    url: str,
    *,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    interval: float = 0.25,
) -> bool:
    """Poll ``url`` until it answers 2xx; False on timeout or if ``alive()`` fails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_ok(url):
            return True
        if not alive():
            return False
        time.sleep(interval)
    return False


class ServerProcess:
    """A server child process: start, readiness, log tail and a clean stop."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: Path,
        ready_url: str,
        log_path: Path | None = None,
        new_session: bool = True,
    ) -> None:
        """Describe the process; ``start`` launches it.

        Args:
            name: shown in messages.
            argv: command line.
            env: the child's whole environment (see ``process_env``).
            cwd: working directory.
            ready_url: answers 2xx once the server is ready.
            log_path: file the output is appended to (None: this process's
                stdout and stderr).
            new_session: run in a session of its own, so a Ctrl-C in the
                terminal does not reach it (the owner stops it); False leaves it
                in the terminal's process group.
        """
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.ready_url = ready_url
        self.new_session = new_session
        self.popen: subprocess.Popen | None = None

    def start(self) -> None:
        """Launch the process."""
        if self.log_path is None:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                start_new_session=self.new_session,
            )
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.new_session,
            )

    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has exited, else None."""
        return self.popen.poll() if self.popen is not None else None

    def ready(self) -> bool:
        """True if ``ready_url`` answers 2xx now."""
        return http_ok(self.ready_url)

    def wait_ready(self, timeout: float) -> None:
        """Wait for ``ready_url``; raise with the log's tail if it never answers."""
        if not wait_until_ready(self.ready_url, timeout=timeout, alive=self.alive):
            code = self.popen.poll() if self.popen else None
            raise RuntimeError(
                f"{self.name} did not become ready at {self.ready_url} within "
                f"{timeout:.0f}s (exit code {code}); last lines of {self.log_path}:\n"
                + self.log_tail()
            )

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the process log."""
        if self.log_path is None or not self.log_path.is_file():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def terminate(self) -> None:
        """Send SIGTERM if the process runs (``wait`` collects it)."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 20.0) -> int | None:
        """Wait up to ``timeout`` for the exit (then SIGKILL); return the exit code."""
        if self.popen is None:
            return None
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
        return self.popen.returncode

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (then SIGKILL after ``timeout``); return the exit code."""
        self.terminate()
        return self.wait(timeout)


def stop_all(processes: list[ServerProcess], timeout: float = 20.0) -> None:
    """Stop ``processes`` together: SIGTERM to all first, then wait for each."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout)
