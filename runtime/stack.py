"""The bot's processes as one unit: the action server and the guarded Rasa server.

``BotStack`` is the one way to start them, used by ``crm run``
(``runtime.supervisor``), the end-to-end harness (``tests/e2e/conftest.py``) and
the latency benchmark (``bench/latency.py``). Given a store URL, a model, ports
and a work directory, it writes a runtime copy of ``endpoints.yml`` per Rasa
server (action endpoint on the actual port, overrides applied), starts the
action server and the Rasa server(s), waits until they answer, restarts the
action server on demand and stops everything together.

The action server only serves calls that carry the stack's action token
(``CRM_ACTION_TOKEN``, given to every child through its environment, never on a
command line): the one passed in, or a fresh random one per stack. The same way
every child gets ``CRM_CONSOLE_SECRET``, from which the Rasa server and the agent
console derive the web-chat token key and the console's control token.

With ``console_port`` the stack also runs the agent console (``python -m console``),
which reaches the (first) Rasa server through ``CRM_RASA_URL``.

Several Rasa servers (``RasaVariant``: own endpoint overrides and environment)
can share one action server; the benchmark compares configurations that way.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crm_settings import PROJECT_ROOT
from runtime.processes import (
    ServerProcess,
    action_server_argv,
    action_url,
    console_argv,
    email_argv,
    free_port,
    process_env,
    rasa_server_argv,
    stop_all,
    write_runtime_endpoints,
)

LOOPBACK = "127.0.0.1"
ANY_ADDRESS = frozenset({"0.0.0.0", "::", ""})


def new_action_token() -> str:
    """A fresh random action token (64 hex digits)."""
    return secrets.token_hex(32)


@dataclass(frozen=True)
class RasaVariant:
    """One Rasa server of a stack: its name, endpoint overrides and extra env.

    ``endpoint_overrides`` replaces whole top-level sections of ``endpoints.yml``
    (``None`` as a value removes one), on top of the stack's own overrides.
    """

    name: str = "rasa"
    endpoint_overrides: Mapping[str, Any] = field(default_factory=dict)
    extra_env: Mapping[str, str] = field(default_factory=dict)


class BotStack:
    """The action server and the guarded Rasa server(s) on one store."""

    def __init__(
        self,
        *,
        database_url: str,
        model: Path,
        workdir: Path,
        log_dir: Path | None,
        rasa_port: int | None = None,
        action_port: int | None = None,
        rasa_interface: str = LOOPBACK,
        action_interface: str = LOOPBACK,
        action_token: str | None = None,
        project: Path = PROJECT_ROOT,
        extra_env: Mapping[str, str] | None = None,
        endpoint_overrides: Mapping[str, Any] | None = None,
        variants: Sequence[RasaVariant] | None = None,
        cors: str | None = None,
        new_session: bool = True,
        console_secret: str | None = None,
        console_port: int | None = None,
        console_interface: str = LOOPBACK,
        smtp_port: int | None = None,
    ) -> None:
        """Describe the stack and write its endpoint files; ``start`` launches it.

        Args:
            database_url: the customer store every process uses.
            model: the trained Rasa model.
            workdir: where the runtime ``endpoints.yml`` files are written.
            log_dir: directory of the log files (``actions.log``,
                ``<variant>.log``); None sends output to this process's stdout.
            rasa_port: port of the Rasa server (single variant only; default a
                free port).
            action_port: port of the action server (default a free port).
            rasa_interface: interface the Rasa server binds to.
            action_interface: interface the action server binds to (the Rasa
                servers call it there, or on loopback for a wildcard address).
            action_token: the shared secret between the Rasa servers and the
                action server (default: a fresh random one).
            project: the Rasa project directory (working directory, import path
                and source of ``endpoints.yml``).
            extra_env: variables added to every child's environment.
            endpoint_overrides: ``endpoints.yml`` sections replaced for every
                Rasa server.
            variants: the Rasa servers to run (default one, named ``rasa``).
            cors: the Rasa server's ``--cors`` value.
            new_session: children get sessions of their own (see
                ``ServerProcess``); ``crm run`` keeps them in its process group.
            console_secret: ``CRM_CONSOLE_SECRET`` of every child (default: a
                fresh random one).
            console_port: run the agent console on this port (None: no console).
            console_interface: interface the console binds to.
            smtp_port: run the SMTP listener and mail worker on this port
                (``python -m channels.email``; None: no e-mail process).

        Raises:
            ValueError: ``rasa_port`` with several variants, or duplicate names.
        """
        variants = list(variants or [RasaVariant()])
        names = [variant.name for variant in variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique: {names}")
        if rasa_port is not None and len(variants) > 1:
            raise ValueError("rasa_port applies to a single Rasa server only")
        self.database_url = database_url
        self.workdir = workdir
        action_port = action_port or free_port()
        action_host = LOOPBACK if action_interface in ANY_ADDRESS else action_interface
        self.action_url = action_url(action_port, action_host)
        self.action_token = action_token or new_action_token()
        self.console_secret = console_secret or new_action_token()
        first_rasa_port = rasa_port or free_port()
        shared = {
            **(extra_env or {}),
            "CRM_ACTION_TOKEN": self.action_token,
            "CRM_CONSOLE_SECRET": self.console_secret,
        }
        if console_port is not None:
            shared["CONSOLE_PORT"] = str(console_port)
        env = process_env(database_url=database_url, project=project, extra=shared)

        def log_path(name: str) -> Path | None:
            return log_dir / f"{name}.log" if log_dir is not None else None

        self.actions = ServerProcess(
            "action server",
            action_server_argv(port=action_port, interface=action_interface),
            env=env,
            cwd=project,
            ready_url=self.action_url.removesuffix("/webhook") + "/health",
            log_path=log_path("actions"),
            new_session=new_session,
        )
        self.rasa_servers: dict[str, ServerProcess] = {}
        self.urls: dict[str, str] = {}
        for index, variant in enumerate(variants):
            port = first_rasa_port if index == 0 else free_port()
            file_name = (
                "endpoints.yml"
                if len(variants) == 1
                else f"endpoints-{variant.name}.yml"
            )
            endpoints = write_runtime_endpoints(
                workdir / file_name,
                action_webhook=self.action_url,
                source=project / "endpoints.yml",
                overrides={
                    **(endpoint_overrides or {}),
                    **variant.endpoint_overrides,
                },
            )
            self.rasa_servers[variant.name] = ServerProcess(
                variant.name,
                rasa_server_argv(
                    model=model,
                    endpoints=endpoints,
                    port=port,
                    cors=cors,
                    interface=rasa_interface,
                ),
                env={**env, **variant.extra_env},
                cwd=project,
                ready_url=f"http://{LOOPBACK}:{port}/",
                log_path=log_path(variant.name),
                new_session=new_session,
            )
            self.urls[variant.name] = f"http://{LOOPBACK}:{port}"
        self.console: ServerProcess | None = None
        self.console_url: str | None = None
        if console_port is not None:
            console_host = (
                LOOPBACK if console_interface in ANY_ADDRESS else console_interface
            )
            self.console_url = f"http://{console_host}:{console_port}"
            self.console = ServerProcess(
                "console",
                console_argv(),
                env={
                    **env,
                    "CONSOLE_INTERFACE": console_interface,
                    "CRM_RASA_URL": f"http://{LOOPBACK}:{first_rasa_port}",
                    "RASA_PORT": str(first_rasa_port),
                },
                cwd=project,
                ready_url=f"{self.console_url}/healthz",
                log_path=log_path("console"),
                new_session=new_session,
            )
        self.email: ServerProcess | None = None
        if smtp_port is not None:
            self.email = ServerProcess(
                "email",
                email_argv(),
                env={
                    **env,
                    "SMTP_PORT": str(smtp_port),
                    "CRM_RASA_URL": f"http://{LOOPBACK}:{first_rasa_port}",
                },
                cwd=project,
                ready_url=f"smtp://{LOOPBACK}:{smtp_port}",
                log_path=log_path("email"),
                new_session=new_session,
            )

    @property
    def processes(self) -> list[ServerProcess]:
        """Every process: action server, Rasa server(s), console, e-mail."""
        others = [p for p in (self.console, self.email) if p is not None]
        return [self.actions, *self.rasa_servers.values(), *others]

    @property
    def rasa(self) -> ServerProcess:
        """The (first) Rasa server."""
        return next(iter(self.rasa_servers.values()))

    @property
    def rasa_url(self) -> str:
        """Base URL of the (first) Rasa server."""
        return next(iter(self.urls.values()))

    def start(self) -> None:
        """Launch every process (without waiting for readiness)."""
        for process in self.processes:
            process.start()

    def wait_ready(self, timeout: float) -> None:
        """Wait until every process answers (RuntimeError with a log tail if not)."""
        for process in self.processes:
            process.wait_ready(timeout)

    def up(self, timeout: float) -> BotStack:
        """Start and wait until ready; on failure stop everything and re-raise."""
        self.start()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def ready(self) -> bool:
        """True if every process answers now."""
        return all(process.ready() for process in self.processes)

    def exited(self) -> ServerProcess | None:
        """The first process that has exited, if any."""
        for process in self.processes:
            if process.popen is not None and not process.alive():
                return process
        return None

    def stop_action_server(self) -> None:
        """Stop the action server (the Rasa servers keep running)."""
        self.actions.stop()

    def start_action_server(self, timeout: float) -> None:
        """(Re)start the action server if it is down and wait until it is healthy."""
        if not self.actions.alive():
            self.actions.start()
        self.actions.wait_ready(timeout)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop every process: SIGTERM to all, SIGKILL after ``timeout``."""
        stop_all(self.processes, timeout)
