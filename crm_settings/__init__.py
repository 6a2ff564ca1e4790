"""The one typed settings object of every process, read from the environment once.

``get_settings()`` returns the process-wide ``Settings`` (read on first call);
entry points (``crm``, the Rasa server, the action server, the writer process)
call it at start-up and pass the values down. Nothing else reads ``os.environ``.
Every variable is validated; a bad value raises ``SettingsError`` naming the
variable, which entry points print before exiting with code 2.

This package imports nothing of ours, so every other package may import it
(``crm_store`` does not: it takes its values as arguments).
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseSettings, Field, SecretStr, ValidationError, validator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SQLITE_URL = f"sqlite:///{PROJECT_ROOT / 'var' / 'crm.db'}"

__all__ = [
    "PROJECT_ROOT",
    "Settings",
    "SettingsError",
    "env_names",
    "get_settings",
    "load_settings",
]


class SettingsError(ValueError):
    """An environment variable holds a value the application cannot use."""


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class Settings(BaseSettings):
    """Every setting of the application; the env name of each is in ``env=``."""

    # Customer store
    database_url: str = Field(DEFAULT_SQLITE_URL, env="CRM_DATABASE_URL")
    echo_sql: bool = Field(False, env="CRM_ECHO_SQL")

    # Processes and ports
    rasa_port: int = Field(5005, env="RASA_PORT", ge=1, le=65535)
    rasa_interface: str = Field("0.0.0.0", env="RASA_INTERFACE")
    action_port: int = Field(5055, env="ACTION_PORT", ge=1, le=65535)
    action_timeout: float = Field(5.0, env="CRM_ACTION_TIMEOUT", gt=0)
    action_interface: str = Field("127.0.0.1", env="ACTION_INTERFACE")
    # Shared secret Rasa -> action server; `crm run` generates one under var/
    # when unset. The action server refuses every call without it.
    action_token: SecretStr | None = Field(None, env="CRM_ACTION_TOKEN")

    # Rasa server tuning
    max_concurrent_turns: int | None = Field(None, env="CRM_MAX_CONCURRENT_TURNS", ge=0)
    policy_cache_size: int = Field(4096, env="CRM_POLICY_CACHE_SIZE", ge=0)

    # Contact-history writer
    history_writer: Literal["process", "thread"] | None = Field(
        None, env="CRM_HISTORY_WRITER"
    )
    inactivity_timeout_minutes: float | None = Field(
        None, env="CRM_INACTIVITY_TIMEOUT_MINUTES", gt=0
    )
    idle_check_seconds: float | None = Field(None, env="CRM_IDLE_CHECK_SECONDS", gt=0)

    # Verification
    identity_secret: SecretStr | None = Field(None, env="CRM_IDENTITY_SECRET")
    identity_assertion_ttl_seconds: int = Field(
        300, env="CRM_IDENTITY_ASSERTION_TTL_SECONDS", gt=0, le=86400
    )
    verification_idle_minutes: float = Field(
        30, env="CRM_VERIFICATION_IDLE_MINUTES", gt=0
    )
    step_up_minutes: float = Field(15, env="CRM_STEP_UP_MINUTES", gt=0)
    order_lock_failures: int = Field(5, env="CRM_ORDER_LOCK_FAILURES", ge=1)
    order_lock_minutes: float = Field(60, env="CRM_ORDER_LOCK_MINUTES", gt=0)
    customer_lock_failures: int = Field(10, env="CRM_CUSTOMER_LOCK_FAILURES", ge=1)
    verify_sender_limit: int = Field(10, env="CRM_VERIFY_SENDER_LIMIT", ge=1)
    verify_client_limit: int = Field(30, env="CRM_VERIFY_CLIENT_LIMIT", ge=1)
    handoff_sender_limit: int = Field(3, env="CRM_HANDOFF_SENDER_LIMIT", ge=1)

    # Input limits at the edge (REST and every channel)
    max_message_chars: int = Field(4000, env="CRM_MAX_MESSAGE_CHARS", ge=1)
    max_metadata_bytes: int = Field(2048, env="CRM_MAX_METADATA_BYTES", ge=0)
    max_request_bytes: int = Field(65536, env="CRM_MAX_REQUEST_BYTES", ge=1024)
    broker_queue_limit: int = Field(10000, env="CRM_BROKER_QUEUE_LIMIT", ge=1)

    # Analytics
    analytics_config: Path | None = Field(None, env="CRM_ANALYTICS_CONFIG")
    churn_model: Path | None = Field(None, env="CRM_CHURN_MODEL")
    treatment_rules: Path | None = Field(None, env="CRM_TREATMENT_RULES")

    # Handoff queue and agent console
    console_port: int = Field(8000, env="CONSOLE_PORT", ge=1, le=65535)
    console_interface: str = Field("127.0.0.1", env="CONSOLE_INTERFACE")
    # Shared by the console and the Rasa server: signs web-chat session tokens
    # and authenticates the console's calls to the Rasa server (derived keys).
    # `crm run` generates one under var/ when unset.
    console_secret: SecretStr | None = Field(None, env="CRM_CONSOLE_SECRET")
    # e.g. "mon-fri 08:00-20:00; sat 09:00-17:00 Europe/Amsterdam" or "always";
    # unset: the hours of policies.md.
    agent_hours: str | None = Field(None, env="CRM_AGENT_HOURS")
    queue_config: Path | None = Field(None, env="CRM_QUEUE_CONFIG")
    demo_password: SecretStr | None = Field(None, env="CRM_DEMO_PASSWORD")
    environment: Literal["development", "production"] = Field(
        "development", env="CRM_ENV"
    )
    session_hours: float = Field(8, env="CRM_CONSOLE_SESSION_HOURS", gt=0, le=168)
    login_failures: int = Field(5, env="CRM_LOGIN_FAILURES", ge=1)
    login_lock_minutes: float = Field(15, env="CRM_LOGIN_LOCK_MINUTES", gt=0)
    # Origins allowed to open the web chat socket (comma-separated); unset: the
    # console's own address on localhost and 127.0.0.1.
    chat_origins: str | None = Field(None, env="CRM_CHAT_ORIGINS")
    # Where the console reaches the Rasa server (default http://127.0.0.1:RASA_PORT)
    # and where browsers reach its socket (default: same host as the page, RASA_PORT).
    rasa_internal_url: str | None = Field(None, env="CRM_RASA_URL")
    chat_socket_url: str | None = Field(None, env="CRM_CHAT_SOCKET_URL")

    # Telegram (channels.telegram). Without a token and a secret the channel is off.
    telegram_bot_token: SecretStr | None = Field(None, env="TELEGRAM_BOT_TOKEN")
    telegram_webhook_secret: SecretStr | None = Field(
        None, env="TELEGRAM_WEBHOOK_SECRET"
    )
    telegram_api_url: str = Field("https://api.telegram.org", env="TELEGRAM_API_URL")

    # E-mail (channels.email): the SMTP listener and the outbound relay.
    smtp_port: int = Field(2525, env="SMTP_PORT", ge=1, le=65535)
    smtp_interface: str = Field("127.0.0.1", env="SMTP_INTERFACE")
    smtp_recipients: str = Field("support@northwind.example", env="SMTP_RECIPIENTS")
    smtp_max_bytes: int = Field(10 * 1024 * 1024, env="SMTP_MAX_BYTES", ge=1024)
    # Mails from one address answered per hour (more: accepted, not answered).
    smtp_replies_per_hour: int = Field(20, env="SMTP_REPLIES_PER_HOUR", ge=1)
    # The From of our mail (default: the first of SMTP_RECIPIENTS).
    smtp_from: str | None = Field(None, env="SMTP_FROM")
    # Unset: replies wait in the outbox (`crm outbox list`) and nothing is sent.
    smtp_relay_host: str | None = Field(None, env="SMTP_RELAY_HOST")
    smtp_relay_port: int = Field(25, env="SMTP_RELAY_PORT", ge=1, le=65535)
    smtp_relay_user: str | None = Field(None, env="SMTP_RELAY_USER")
    smtp_relay_password: SecretStr | None = Field(None, env="SMTP_RELAY_PASSWORD")
    smtp_relay_timeout: float = Field(10.0, env="SMTP_RELAY_TIMEOUT", gt=0)
    # Outbound mail and SMS: tries before a message is marked failed, and the
    # first retry delay in seconds (doubling, at most 10 minutes).
    delivery_attempts: int = Field(8, env="CRM_DELIVERY_ATTEMPTS", ge=1, le=100)
    delivery_retry_seconds: float = Field(
        2.0, env="CRM_DELIVERY_RETRY_SECONDS", gt=0, le=3600
    )

    # Twilio SMS and voice (channels.twilio_sms, channels.twilio_voice). Without
    # the account SID and auth token both channels are off.
    twilio_account_sid: str | None = Field(None, env="TWILIO_ACCOUNT_SID")
    twilio_auth_token: SecretStr | None = Field(None, env="TWILIO_AUTH_TOKEN")
    twilio_from_number: str | None = Field(None, env="TWILIO_FROM_NUMBER")
    # The public base URL Twilio calls (signatures are over base + webhook path).
    twilio_public_url: str | None = Field(None, env="TWILIO_PUBLIC_URL")
    twilio_api_url: str = Field("https://api.twilio.com", env="TWILIO_API_URL")
    # The agent line voice handoffs are put through to (E.164); unset: callback.
    twilio_agent_number: str | None = Field(None, env="TWILIO_AGENT_NUMBER")
    twilio_voice: str = Field("Polly.Joanna", env="TWILIO_VOICE")
    twilio_language: str = Field("en-US", env="TWILIO_LANGUAGE")

    # Tools
    chat_url: str | None = Field(None, env="CRM_CHAT_URL")
    bench_pg_url: str = Field(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
        env="CRM_BENCH_PG_URL",
    )

    class Config:
        """Read the environment only; unknown variables are ignored."""

        case_sensitive = True

    @validator("database_url", "rasa_interface", "chat_url", "bench_pg_url")
    def _not_blank(cls, value: str | None) -> str | None:  # noqa: N805
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value.strip() if value is not None else None

    @validator("identity_secret", "action_token", "console_secret")
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:  # noqa: N805
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 bytes (e.g. `openssl rand -hex 32`)")
        return value

    @validator("telegram_webhook_secret")
    def _telegram_secret(cls, value: SecretStr | None) -> SecretStr | None:  # noqa: N805
        # Telegram's rule for secret_token: 1-256 characters A-Z, a-z, 0-9, _ and -.
        if value is not None and not re.fullmatch(
            r"[A-Za-z0-9_-]{16,256}", value.get_secret_value()
        ):
            raise ValueError("must be 16 to 256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @validator("smtp_recipients")
    def _recipients(cls, value: str) -> str:  # noqa: N805
        addresses = [a.strip().lower() for a in value.split(",") if a.strip()]
        if not addresses or any("@" not in a for a in addresses):
            raise ValueError("must be one or more e-mail addresses, comma-separated")
        return ",".join(addresses)

    @property
    def recipient_addresses(self) -> tuple[str, ...]:
        """The addresses the SMTP listener accepts mail for (lower case)."""
        return tuple(self.smtp_recipients.split(","))

    @property
    def mail_from(self) -> str:
        """The From address of our mail."""
        return self.smtp_from or self.recipient_addresses[0]

    @property
    def twilio_enabled(self) -> bool:
        """True when the Twilio channels have an account, a token and a public URL."""
        return bool(
            self.twilio_account_sid
            and self.twilio_auth_token
            and self.twilio_public_url
        )

    @property
    def telegram_enabled(self) -> bool:
        """True when the Telegram channel has its token and webhook secret."""
        return bool(self.telegram_bot_token and self.telegram_webhook_secret)

    @property
    def turn_limit(self) -> int:
        """Turns in flight at once: the setting, or two per usable core (0 = off)."""
        if self.max_concurrent_turns is not None:
            return self.max_concurrent_turns
        return 2 * _usable_cores()

    @property
    def rasa_control_url(self) -> str:
        """Base URL of the Rasa server as the console calls it."""
        return (self.rasa_internal_url or f"http://127.0.0.1:{self.rasa_port}").rstrip(
            "/"
        )

    @property
    def rasa_url(self) -> str:
        """Base URL of the local Rasa server (``crm chat`` default)."""
        return self.chat_url or f"http://127.0.0.1:{self.rasa_port}"


def env_names() -> dict[str, str]:
    """Map each environment variable to its ``Settings`` field."""
    fields = Settings.__fields__.items()
    return {field.field_info.extra["env"]: name for name, field in fields}


def load_settings() -> Settings:
    """Read and validate the environment now.

    Raises:
        SettingsError: one line per bad variable, naming it and its value.
    """
    try:
        return Settings()
    except ValidationError as error:
        by_field = {name: env for env, name in env_names().items()}
        lines = []
        for problem in error.errors():
            field = str(problem["loc"][0])
            env = by_field.get(field, field)
            raw = os.environ.get(env, "")
            shown = (
                "(hidden)"
                if any(w in env for w in ("SECRET", "TOKEN", "PASSWORD"))
                else repr(raw)
            )
            lines.append(f"{env}={shown}: {problem['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read on first call (see ``load_settings``)."""
    return load_settings()
