"""``crm run``: prepare the embedded store and supervise the bot's processes.

The store is prepared first (migrations, demo data, scores), then the Rasa model
is trained if its training data changed (``bot.training``). A ``BotStack`` (the
action server on ``ACTION_PORT``, the Rasa server on ``RASA_PORT``, from
``crm_settings``) is then started, watched and stopped together on Ctrl-C; if
one process exits, all are stopped. Their logs go to stdout.

The action server only answers calls carrying ``CRM_ACTION_TOKEN``; when that
setting is unset, a random token is generated once and kept in
``var/action-token`` (mode 0600) for later runs. ``CRM_CONSOLE_SECRET`` (web-chat
tokens, console -> Rasa control calls) is kept the same way in
``var/console-secret``.

The agent console runs on ``CONSOLE_PORT``. Outside production mode the demo
accounts ``admin``, ``manager`` and ``agent`` are (re)set to ``CRM_DEMO_PASSWORD``,
or to a password generated at start and printed once.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from crm_settings import PROJECT_ROOT, Settings, get_settings
from runtime.stack import BotStack

DEMO_DIR = PROJECT_ROOT / "data" / "demo"
RUNTIME_DIR = PROJECT_ROOT / "var" / "run"
TOKEN_FILE = PROJECT_ROOT / "var" / "action-token"
CONSOLE_SECRET_FILE = PROJECT_ROOT / "var" / "console-secret"
STOP_TIMEOUT = 15.0

Log = Callable[[str], None]


def prepare_store(url: str, demo_dir: Path = DEMO_DIR) -> str:
    """Migrate the store, load the demo data and refresh the analytics scores.

    Scores feed the bot's treatment rules (``treatment_for_customer``), so they are
    refreshed here (incrementally: only customers whose inputs changed are written).
    Returns a one-line summary.
    """
    from crm_store.analytics.config import load_config
    from crm_store.analytics.refresh import refresh_scores
    from crm_store.db import engine_for, safe_url, session_factory
    from crm_store.migrate import upgrade
    from crm_store.seeding import seed_directory

    upgrade(engine_for(url))
    with session_factory(url).begin() as session:
        report = seed_directory(session, directory=demo_dir)
    with session_factory(url).begin() as session:
        settings = get_settings()
        scores = refresh_scores(
            session,
            config=load_config(settings.analytics_config),
            model_file=settings.churn_model,
        )
    loaded = sum(report.inserted.values())
    return (
        f"store ready at {safe_url(url)} (demo data: {loaded} rows loaded, "
        f"{sum(report.skipped.values())} already there; scores: {scores.written} of "
        f"{scores.customers} customers updated)"
    )


def stored_action_token(path: Path = TOKEN_FILE) -> str:
    """The action token kept in ``path``, created (random, mode 0600) if missing.

    A file that is not private to its owner, or holds less than 32 bytes, is
    replaced by a new token.
    """
    try:
        token = path.read_text().strip()
        private = path.stat().st_mode & 0o077 == 0
    except FileNotFoundError:
        token, private = "", False
    if private and len(token.encode()) >= 32:
        return token
    token = secrets.token_hex(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    return token


def action_token() -> str:
    """``CRM_ACTION_TOKEN`` if set, else the one stored under ``var/``."""
    configured = get_settings().action_token
    if configured is not None:
        return configured.get_secret_value()
    return stored_action_token()


def console_secret() -> str:
    """``CRM_CONSOLE_SECRET`` if set, else the one stored under ``var/``."""
    configured = get_settings().console_secret
    if configured is not None:
        return configured.get_secret_value()
    return stored_action_token(CONSOLE_SECRET_FILE)


def prepare_demo_staff(url: str) -> str | None:
    """Set the demo accounts' password; return the line to print (None in production).

    The password is ``CRM_DEMO_PASSWORD`` or, when unset, a new random one that is
    printed only here.
    """
    from crm_store.db import session_factory
    from crm_store.services.staff import ensure_demo_staff

    settings = get_settings()
    if settings.environment == "production":
        return None
    configured = settings.demo_password
    password = (
        configured.get_secret_value() if configured else secrets.token_urlsafe(12)
    )
    with session_factory(url).begin() as session:
        names = ensure_demo_staff(session, password)
    if configured:
        return f"demo accounts: {', '.join(names)} (password: CRM_DEMO_PASSWORD)"
    return (
        f"demo accounts: {', '.join(names)}, password {password} "
        "(generated at this start; set CRM_DEMO_PASSWORD to choose one)"
    )


def runtime_stack(url: str, model: Path) -> BotStack:
    """The stack ``crm run`` supervises: ports and interface from the settings.

    The children stay in this process's group (a Ctrl-C in the terminal reaches
    them too) and log to stdout; endpoints go to ``var/run/endpoints.yml``.
    """
    settings = get_settings()
    return BotStack(
        database_url=url,
        model=model,
        workdir=RUNTIME_DIR,
        log_dir=None,
        rasa_port=settings.rasa_port,
        action_port=settings.action_port,
        rasa_interface=settings.rasa_interface,
        action_interface=settings.action_interface,
        action_token=action_token(),
        cors="*",
        new_session=False,
        console_secret=console_secret(),
        console_port=settings.console_port,
        console_interface=settings.console_interface,
        smtp_port=settings.smtp_port,
    )


def channel_lines(settings: Settings, rasa_url: str) -> list[str]:
    """One line per optional channel: on (and where) or off (and how to turn it on)."""
    if settings.telegram_enabled:
        telegram = (
            f"telegram: on; webhook {rasa_url}/webhooks/telegram/webhook "
            "(register the public https URL with `crm telegram set-webhook URL`)"
        )
    else:
        telegram = (
            "telegram: off (set TELEGRAM_BOT_TOKEN and TELEGRAM_WEBHOOK_SECRET "
            "to turn it on)"
        )
    relay = (
        f"replies via {settings.smtp_relay_host}:{settings.smtp_relay_port}"
        if settings.smtp_relay_host
        else "no SMTP_RELAY_HOST: replies wait in the outbox (`crm outbox list`)"
    )
    email = (
        f"email: SMTP listener on {settings.smtp_interface}:{settings.smtp_port} "
        f"for {', '.join(settings.recipient_addresses)}; {relay}"
    )
    if settings.twilio_enabled:
        base = (settings.twilio_public_url or "").rstrip("/")
        twilio = (
            f"twilio: on; SMS webhook {base}/webhooks/twilio_sms/webhook, voice "
            f"webhook {base}/webhooks/twilio_voice/webhook (status callback "
            f"{base}/webhooks/twilio_voice/status)"
        )
    else:
        twilio = (
            "twilio: off (set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and "
            "TWILIO_PUBLIC_URL to turn SMS and voice on)"
        )
    return [telegram, email, twilio]


def supervise(stack: BotStack, log: Log = print, staff_line: str | None = None) -> int:
    """Start ``stack``, wait until a process exits or Ctrl-C, then stop them all.

    Announces once the Rasa server answers, and the console (with ``staff_line``,
    the demo accounts) once it answers. Returns 0 after Ctrl-C (or SIGTERM),
    else the exit code of the process that stopped first (1 if it was 0).
    """
    stopping = False

    def stop(*_args: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for process in stack.processes:
        log(f"starting {process.name}: {' '.join(process.argv)}")
    stack.start()
    exit_code = 0
    announced = False
    console_announced = stack.console is None
    while not stopping:
        gone = stack.exited()
        if gone is not None:
            log(f"{gone.name} exited with code {gone.returncode}; stopping all")
            exit_code = gone.returncode or 1
            break
        if not announced and stack.rasa.ready():
            announced = True
            log(
                f"bot ready: POST {stack.rasa_url}/webhooks/rest/webhook "
                "(try `crm chat`); Ctrl-C stops everything"
            )
            for line in channel_lines(get_settings(), stack.rasa_url):
                log(line)
        if not console_announced and stack.console is not None:
            if stack.console.ready():
                console_announced = True
                log(
                    f"console ready: {stack.console_url}/ (agents, managers); "
                    f"customer web chat: {stack.console_url}/chat"
                )
                if staff_line:
                    log(staff_line)
        time.sleep(0.5)
    stack.stop(STOP_TIMEOUT)
    log("stopped")
    return exit_code


def run(url: str) -> int:
    """Prepare the store and the model, then supervise the bot until Ctrl-C."""
    from bot.training import TrainingError, ensure_model

    def say(line: str) -> None:
        print(line, flush=True)

    say(prepare_store(url))
    staff_line = prepare_demo_staff(url)
    try:
        model = ensure_model(log=say)
    except TrainingError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    return supervise(runtime_stack(url, model), say, staff_line)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1]))
