"""Sending one mail through the configured SMTP relay (blocking; run it in a thread).

STARTTLS is used whenever the relay offers it (certificate checked). A user and
password are sent only over TLS, or to a relay on the loopback interface (a
local MTA). Every failure becomes a :class:`RelayError` whose ``final`` says
whether trying again can help: 5xx answers and refused recipients are final;
4xx answers, timeouts and connection errors are not.
"""

from __future__ import annotations

import ipaddress
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage


class RelayError(Exception):
    """A mail the relay did not take; ``final``: retrying cannot help."""

    def __init__(self, reason: str, *, final: bool = False) -> None:
        """Keep a short reason (no addresses, no content) and finality."""
        super().__init__(reason)
        self.final = final


@dataclass(frozen=True)
class RelayConfig:
    """Where and how to hand mail over."""

    host: str
    port: int = 25
    user: str | None = None
    password: str | None = None
    timeout: float = 10.0
    # Tests and local MTAs: a TLS context that trusts a self-signed relay.
    tls_context: ssl.SSLContext | None = None

    @classmethod
    def from_settings(cls, settings: object) -> RelayConfig | None:
        """The relay of ``SMTP_RELAY_*``; None when ``SMTP_RELAY_HOST`` is unset."""
        host = getattr(settings, "smtp_relay_host", None)
        if not host:
            return None
        password = getattr(settings, "smtp_relay_password", None)
        return cls(
            host=host,
            port=getattr(settings, "smtp_relay_port", 25),
            user=getattr(settings, "smtp_relay_user", None) or None,
            password=password.get_secret_value() if password else None,
            timeout=getattr(settings, "smtp_relay_timeout", 10.0),
        )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _code_error(code: int, what: str) -> RelayError:
    return RelayError(f"{what}: SMTP {code}", final=500 <= code < 600)


def send_via_relay(
    message: EmailMessage, *, config: RelayConfig, sender: str, recipients: list[str]
) -> None:
    """Hand ``message`` to the relay for ``recipients`` (envelope from ``sender``).

    Raises:
        RelayError: the relay did not accept the mail (see module docstring).
    """
    try:
        with smtplib.SMTP(config.host, config.port, timeout=config.timeout) as smtp:
            smtp.ehlo()
            secure = False
            if smtp.has_extn("starttls"):
                smtp.starttls(
                    context=config.tls_context or ssl.create_default_context()
                )
                smtp.ehlo()
                secure = True
            if config.user:
                if not secure and not _loopback(config.host):
                    raise RelayError(
                        "the relay offers no STARTTLS: the password is not sent "
                        "in clear text",
                        final=False,
                    )
                smtp.login(config.user, config.password or "")
            refused = smtp.send_message(message, from_addr=sender, to_addrs=recipients)
            if refused:
                codes = [code for code, _ in refused.values()]
                raise _code_error(max(codes), "recipient refused")
    except RelayError:
        raise
    except smtplib.SMTPRecipientsRefused as error:
        codes = [code for code, _ in error.recipients.values()] or [550]
        raise _code_error(min(codes), "recipient refused") from None
    except smtplib.SMTPAuthenticationError as error:
        raise RelayError(f"authentication failed: SMTP {error.smtp_code}") from None
    except smtplib.SMTPResponseException as error:
        raise _code_error(error.smtp_code, "relay refused the mail") from None
    except (smtplib.SMTPException, OSError, ssl.SSLError) as error:
        raise RelayError(f"relay unreachable ({type(error).__name__})") from None
