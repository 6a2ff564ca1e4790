"""A web-chat customer and a console agent for end-to-end tests (real servers).

``WebChatCustomer`` speaks the page's protocol to the Rasa server's socket.io
channel (``channels.webchat``) with a token from the console's ``GET /chat``;
``ConsoleAgent`` uses the console's JSON API with a bearer token.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import requests
import socketio

from channels.chat_tokens import verify_chat_token

TOKEN_PATTERN = re.compile(r'data-token="([^"]+)"')


def chat_token(console_url: str) -> tuple[str, requests.Session]:
    """Open the chat page like a browser; return the token it holds and the cookies."""
    browser = requests.Session()
    page = browser.get(f"{console_url}/chat", timeout=10)
    page.raise_for_status()
    found = TOKEN_PATTERN.search(page.text)
    assert found, "the chat page carries no token"
    return found.group(1), browser


class WebChatCustomer:
    """One customer on the web chat page (socket.io over websocket)."""

    def __init__(self, rasa_url: str, console_url: str, secret: str) -> None:
        """Get a session token from the console; ``connect`` opens the socket.

        ``secret`` (the stack's console secret) only lets the test read the
        session id out of the token, as the Rasa server does.
        """
        self.secret = secret
        self.rasa_url = rasa_url
        self.console_url = console_url
        self.token, self.browser = chat_token(console_url)
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("bot_uttered", self._on_message)

    async def _on_message(self, data: dict[str, Any]) -> None:
        await self.received.put(data)

    async def connect(self) -> WebChatCustomer:
        """Open the socket with the page's token and origin."""
        await self.sio.connect(
            self.rasa_url,
            auth={"token": self.token},
            transports=["polling"],  # aiohttp 3.8 (Rasa pin) lacks the WS timeout API
            headers={"Origin": self.console_url},
            wait_timeout=10,
        )
        return self

    async def say(self, text: str) -> None:
        """Send one customer message."""
        await self.sio.emit("user_uttered", {"message": text})

    async def replies(
        self, *, settle: float = 1.5, timeout: float = 30.0
    ) -> list[dict]:
        """Messages received until none came for ``settle`` s (after the first)."""
        first = await asyncio.wait_for(self.received.get(), timeout)
        got = [first]
        while True:
            try:
                got.append(await asyncio.wait_for(self.received.get(), settle))
            except asyncio.TimeoutError:
                return got

    async def silence(self, seconds: float) -> list[dict]:
        """Whatever arrives within ``seconds`` (expected: nothing)."""
        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(await asyncio.wait_for(self.received.get(), left))
            except asyncio.TimeoutError:
                break
        return got

    async def close(self) -> None:
        """Close the socket."""
        await self.sio.disconnect()

    @property
    def tracker_key(self) -> str:
        """The conversation's tracker key: ``web:`` + the session in the token."""
        return "web:" + verify_chat_token(self.secret, self.token)


def texts(messages: list[dict]) -> str:
    """All texts of ``messages`` in one string."""
    return " ".join(m.get("text") or "" for m in messages)


class ConsoleAgent:
    """A staff member using the console's JSON API."""

    def __init__(self, console_url: str, username: str, password: str) -> None:
        """Log in for a bearer token."""
        self.url = console_url + "/api"
        self.http = requests.Session()
        answer = self.http.post(
            f"{self.url}/auth/token",
            json={"username": username, "password": password},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        self.http.headers["Authorization"] = "Bearer " + answer.json()["access_token"]

    def get(self, path: str, **params: Any) -> Any:
        """GET a JSON resource (asserts 200)."""
        answer = self.http.get(self.url + path, params=params, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def post(self, path: str, body: dict | None = None) -> requests.Response:
        """POST JSON; return the response."""
        return self.http.post(self.url + path, json=body or {}, timeout=15)

    def waiting_for(self, tracker_key: str) -> dict | None:
        """The waiting queue entry of ``tracker_key``, if any."""
        for item in self.get("/handoffs", status="waiting")["items"]:
            if item["tracker_key"] == tracker_key:
                return item
        return None
