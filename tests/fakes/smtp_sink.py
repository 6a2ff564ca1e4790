"""A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps every mail it receives.

Stands in for the outbound relay in tests: the e-mail worker hands its mail to
it over a real SMTP connection. ``refuse_next(code, times)`` answers the next
DATA commands with an error (e.g. 451 to test retries, 550 to test a final
refusal).
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from runtime.processes import free_port


@dataclass
class Received:
    """One mail as the relay got it."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage = field(repr=False)

    @property
    def text(self) -> str:
        """The text/plain body."""
        part = self.message.get_body(preferencelist=("plain",))
        return part.get_content() if part is not None else ""

    @property
    def html(self) -> str:
        """The text/html body ("" if none)."""
        part = self.message.get_body(preferencelist=("html",))
        return part.get_content() if part is not None else ""


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self.sink._lock:
            if self.sink._refusals:
                code = self.sink._refusals.pop(0)
                self.sink.refused += 1
                return f"{code} refused by the test relay"
            raw = envelope.original_content or envelope.content
            message = email.message_from_bytes(raw, policy=email.policy.default)
            self.sink.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), raw, message)
            )
        return "250 OK: queued"


class SmtpSink:
    """The test relay: ``start()``, send mail to ``host:port``, read ``received``."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.refused = 0
        self._refusals: list[int] = []
        self._lock = threading.Lock()
        self._port = free_port()
        self._controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=self._port
        )

    @property
    def host(self) -> str:
        """The relay's address."""
        return "127.0.0.1"

    @property
    def port(self) -> int:
        """The relay's port (after ``start``)."""
        return self._port

    def start(self) -> SmtpSink:
        """Start serving in a background thread."""
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._controller.stop()

    def refuse_next(self, code: int, times: int = 1) -> None:
        """Answer the next ``times`` mails with ``code`` instead of accepting them."""
        with self._lock:
            self._refusals.extend([code] * times)

    def to(self, address: str) -> list[Received]:
        """Mail received for ``address`` (case-insensitive), oldest first."""
        with self._lock:
            return [
                r
                for r in self.received
                if address.lower() in (a.lower() for a in r.rcpt_tos)
            ]

    def wait_for(
        self, address: str, count: int = 1, timeout: float = 15.0
    ) -> list[Received]:
        """Wait until ``count`` mails reached ``address``; AssertionError if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.to(address)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(
            f"{len(self.to(address))} of {count} mail(s) at the relay in {timeout}s"
        )
