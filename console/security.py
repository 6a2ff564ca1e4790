"""Security headers on every response (pure ASGI, so streaming is untouched).

The content security policy allows scripts, styles and connections only from
the console itself, plus the Rasa server's socket for the customer web chat:
``CRM_CHAT_SOCKET_URL`` when set, else the page's own host on ``RASA_PORT``
(both ``http(s)`` for socket.io's polling and ``ws(s)`` for its websocket).
No inline script or style is allowed, so an injected ``<script>`` cannot run
even if escaping failed somewhere.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crm_settings import Settings

HOSTNAME = re.compile(r"^[A-Za-z0-9.:-]{1,253}$")
BASE_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)


def _origins(url: str) -> list[str]:
    parts = urlsplit(url)
    secure = parts.scheme in ("https", "wss")
    host = parts.netloc
    return [
        f"{'https' if secure else 'http'}://{host}",
        f"{'wss' if secure else 'ws'}://{host}",
    ]


def socket_origins(settings: Settings, scheme: str, host_header: str) -> list[str]:
    """The origins the chat page's socket may connect to."""
    if settings.chat_socket_url:
        return _origins(settings.chat_socket_url)
    try:
        hostname = urlsplit(f"//{host_header}").hostname or ""
    except ValueError:
        hostname = ""
    if not HOSTNAME.match(hostname):
        hostname = "127.0.0.1"
    if ":" in hostname:  # IPv6 literal
        hostname = f"[{hostname}]"
    return _origins(f"{scheme}://{hostname}:{settings.rasa_port}")


def content_security_policy(settings: Settings, scheme: str, host: str) -> str:
    """The CSP header value for a request to ``host`` over ``scheme``."""
    connect = " ".join(["'self'", *socket_origins(settings, scheme, host)])
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        f"img-src 'self'; connect-src {connect}; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'; object-src 'none'"
    )


class SecurityHeaders:
    """Add CSP, nosniff, referrer and framing headers to every HTTP response."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the headers to the response start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"127.0.0.1").decode("latin-1")
        csp = content_security_policy(self.settings, scope.get("scheme", "http"), host)
        extra = [*BASE_HEADERS, (b"content-security-policy", csp.encode("latin-1"))]
        if self.settings.environment == "production":
            extra.append((b"strict-transport-security", b"max-age=31536000"))
        path = scope.get("path", "")
        if not path.startswith("/static/"):
            extra.append((b"cache-control", b"no-store"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message = dict(message)
                message["headers"] = [
                    *message.get("headers", []),
                    *(item for item in extra if item[0] not in present),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)
