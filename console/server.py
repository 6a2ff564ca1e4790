"""Serving the console with uvicorn, ending live streams promptly on shutdown.

Server-sent event streams never finish on their own, and uvicorn waits for
running responses before it stops. ``ConsoleServer`` sets
``app.state.stopping`` as soon as shutdown begins; every stream checks it on
each tick and ends (the browsers reconnect to whatever serves next), so Ctrl-C
or SIGTERM stops the console within a second. ``timeout_graceful_shutdown``
bounds the wait for anything else.
"""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI

GRACEFUL_SECONDS = 5


class ConsoleServer(uvicorn.Server):
    """A uvicorn server that tells the app's streams to end when it stops."""

    def __init__(self, app: FastAPI, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.console_app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Flag the app as stopping, then shut down as uvicorn does."""
        self.console_app.state.stopping = True
        await super().shutdown(sockets)


def server_for(
    app: FastAPI, *, host: str, port: int, log_level: str = "info"
) -> ConsoleServer:
    """A server for ``app``: no access log (paths can carry search terms)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
    )
    return ConsoleServer(app, config)
