"""The SMTP relay client (``channels.email_relay``) against real aiosmtpd servers.

Every relay here is a real SMTP server on 127.0.0.1 (aiosmtpd ``Controller`` on a
free port); the TLS ones use a self-signed certificate made for 127.0.0.1 by the
test. The handler records, for each mail it takes, whether the session was TLS
and who logged in.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from channels.email_relay import RelayConfig, RelayError, _loopback, send_via_relay
from runtime.processes import free_port

HOST = "127.0.0.1"
SENDER = "support@northwind.example"
CUSTOMER = "ada@customer.example"
USER = "relay-user"
PASSWORD = "s3cret-Relay-Pw"


@dataclass
class Taken:
    """One mail the relay accepted."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    login: bytes | None


@dataclass
class Recorder:
    """aiosmtpd handler: keeps mail, can refuse RCPT/DATA, counts AUTH attempts."""

    rcpt_reply: str | None = None
    data_reply: str | None = None
    taken: list[Taken] = field(default_factory=list)
    auth_attempts: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        if self.data_reply is not None:
            return self.data_reply
        with self.lock:
            self.taken.append(
                Taken(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    envelope.original_content or envelope.content,
                    session.ssl is not None,
                    session.login_data,
                )
            )
        return "250 OK: queued"

    def authenticator(
        self,
        server: Any,
        session: Any,
        envelope: Any,
        mechanism: str,
        auth_data: LoginPassword,
    ) -> AuthResult:
        with self.lock:
            self.auth_attempts.append(auth_data.login)
        ok = auth_data.login == USER.encode() and auth_data.password == (
            PASSWORD.encode()
        )
        # handled=False: aiosmtpd answers "535 ... credentials invalid" itself.
        return AuthResult(success=ok, handled=False, auth_data=auth_data)


@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only this certificate."""
        return ssl.create_default_context(cafile=str(self.cert_file))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1 (CN and IP SAN)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("relay-cert")
    cert_file = folder / "relay.pem"
    key_file = folder / "relay.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(cert_file, key_file)


class Relays:
    """Starts aiosmtpd relays on free ports and stops them all at the end."""

    def __init__(self) -> None:
        self.controllers: list[Controller] = []

    def start(self, handler: Recorder, **smtp_options: Any) -> int:
        port = free_port()
        options = {"authenticator": handler.authenticator, **smtp_options}
        controller = Controller(handler, hostname=HOST, port=port, **options)
        controller.start()
        self.controllers.append(controller)
        return port

    def stop(self) -> None:
        for controller in self.controllers:
            controller.stop()


@pytest.fixture()
def relays() -> Iterator[Relays]:
    started = Relays()
    yield started
    started.stop()


def mail(subject: str = "Your parcel") -> EmailMessage:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = CUSTOMER
    message["Subject"] = subject
    message["Message-ID"] = "<out-1@northwind.example>"
    message.set_content("It left the depot this morning.")
    return message


def send(config: RelayConfig, recipients: list[str] | None = None) -> None:
    send_via_relay(
        mail(), config=config, sender=SENDER, recipients=recipients or [CUSTOMER]
    )


def tls_relay(
    relays: Relays, certificate: Certificate, handler: Recorder, **options: Any
) -> int:
    return relays.start(
        handler,
        tls_context=certificate.server_context(),
        require_starttls=True,
        **options,
    )


# --- STARTTLS ---------------------------------------------------------------


def test_starttls_relay_gets_the_mail_over_tls(
    relays: Relays, certificate: Certificate
) -> None:
    handler = Recorder()
    port = tls_relay(relays, certificate, handler)

    send(
        RelayConfig(
            host=HOST, port=port, timeout=5, tls_context=certificate.client_context()
        )
    )

    assert len(handler.taken) == 1
    taken = handler.taken[0]
    assert taken.tls is True
    assert taken.login is None
    assert taken.mail_from == SENDER
    assert taken.rcpt_tos == [CUSTOMER]
    assert b"Subject: Your parcel" in taken.content
    assert b"It left the depot this morning." in taken.content


def test_tls_relay_with_auth_takes_the_right_password(
    relays: Relays, certificate: Certificate
) -> None:
    handler = Recorder()
    port = tls_relay(
        relays, certificate, handler, auth_required=True, auth_require_tls=True
    )

    send(
        RelayConfig(
            host=HOST,
            port=port,
            user=USER,
            password=PASSWORD,
            timeout=5,
            tls_context=certificate.client_context(),
        )
    )

    assert [(t.tls, t.login) for t in handler.taken] == [(True, USER.encode())]


def test_tls_relay_with_auth_refuses_a_wrong_password(
    relays: Relays, certificate: Certificate
) -> None:
    handler = Recorder()
    port = tls_relay(
        relays, certificate, handler, auth_required=True, auth_require_tls=True
    )
    wrong = "not-the-Relay-Pw"

    with pytest.raises(RelayError) as caught:
        send(
            RelayConfig(
                host=HOST,
                port=port,
                user=USER,
                password=wrong,
                timeout=5,
                tls_context=certificate.client_context(),
            )
        )

    reason = str(caught.value)
    assert caught.value.final is False
    assert "authentication failed" in reason
    assert wrong not in reason
    assert USER not in reason
    assert handler.auth_attempts  # the password did reach the relay, over TLS
    assert handler.taken == []


def test_untrusted_certificate_is_not_delivered_to(
    relays: Relays, certificate: Certificate
) -> None:
    handler = Recorder()
    port = tls_relay(relays, certificate, handler, auth_require_tls=True)

    # No tls_context: the default (system CAs) does not trust the test certificate.
    with pytest.raises(RelayError) as caught:
        send(RelayConfig(host=HOST, port=port, user=USER, password=PASSWORD, timeout=5))

    assert caught.value.final is False
    assert str(caught.value) == "relay unreachable (SSLCertVerificationError)"
    assert handler.auth_attempts == []  # the password never left the client
    assert handler.taken == []


# --- Login without TLS ---------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_plain_loopback_relay_gets_the_login_in_clear_text(relays: Relays) -> None:
    handler = Recorder()
    port = relays.start(handler, auth_required=True, auth_require_tls=False)

    send(RelayConfig(host=HOST, port=port, user=USER, password=PASSWORD, timeout=5))

    assert [(t.tls, t.login) for t in handler.taken] == [(False, USER.encode())]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_plain_relay_not_known_as_loopback_gets_no_password(relays: Relays) -> None:
    handler = Recorder()
    port = relays.start(handler, auth_required=True, auth_require_tls=False)

    # "127.1" reaches the same server but is not a literal loopback address to
    # the relay code, so it takes the refusal path for a remote plain relay.
    with pytest.raises(RelayError) as caught:
        send(
            RelayConfig(
                host="127.1", port=port, user=USER, password=PASSWORD, timeout=5
            )
        )

    assert caught.value.final is False
    assert "offers no STARTTLS" in str(caught.value)
    assert PASSWORD not in str(caught.value)
    assert handler.auth_attempts == []
    assert handler.taken == []


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("10.0.0.5", False),
        ("relay.example.com", False),
        ("::ffff:10.0.0.5", False),
        ("localhost", True),
        ("::1", True),
        ("127.0.0.1", True),
        ("127.3.2.1", True),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert _loopback(host) is loopback


# --- Refusals and unreachable relays --------------------------------------------


def test_550_on_rcpt_is_final(relays: Relays) -> None:
    handler = Recorder(rcpt_reply="550 5.1.1 no such user")
    port = relays.start(handler)

    with pytest.raises(RelayError) as caught:
        send(RelayConfig(host=HOST, port=port, timeout=5))

    assert caught.value.final is True
    assert str(caught.value) == "recipient refused: SMTP 550"
    assert CUSTOMER not in str(caught.value)
    assert handler.taken == []


def test_451_on_data_is_not_final(relays: Relays) -> None:
    handler = Recorder(data_reply="451 4.3.0 try again later")
    port = relays.start(handler)

    with pytest.raises(RelayError) as caught:
        send(RelayConfig(host=HOST, port=port, timeout=5))

    assert caught.value.final is False
    assert str(caught.value) == "relay refused the mail: SMTP 451"
    assert handler.taken == []


def test_554_on_data_is_final(relays: Relays) -> None:
    handler = Recorder(data_reply="554 5.7.1 rejected as spam")
    port = relays.start(handler)

    with pytest.raises(RelayError) as caught:
        send(RelayConfig(host=HOST, port=port, timeout=5))

    assert caught.value.final is True
    assert str(caught.value) == "relay refused the mail: SMTP 554"


def test_closed_port_is_unreachable_not_final() -> None:
    port = free_port()  # nothing listens there

    with pytest.raises(RelayError) as caught:
        send(RelayConfig(host=HOST, port=port, timeout=5))

    assert caught.value.final is False
    assert str(caught.value) == "relay unreachable (ConnectionRefusedError)"
