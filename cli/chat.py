"""``crm chat``: a terminal client for the bot's REST webhook."""

from __future__ import annotations

import uuid

import requests
from rich.console import Console
from rich.markup import escape

REQUEST_TIMEOUT = 30.0
QUIT = ("/quit", "/exit")


def send(url: str, sender: str, text: str) -> list[dict]:
    """POST one message to ``<url>/webhooks/rest/webhook``; return the replies."""
    response = requests.post(
        f"{url.rstrip('/')}/webhooks/rest/webhook",
        json={"sender": sender, "message": text},
        timeout=REQUEST_TIMEOUT,
    )
    response.raise_for_status()
    return response.json()


def render(reply: dict) -> str:
    """One bot reply as terminal text (buttons as a numbered list)."""
    lines = [reply["text"]] if reply.get("text") else []
    for index, button in enumerate(reply.get("buttons") or [], start=1):
        lines.append(f"  {index}. {button.get('title')}")
    if reply.get("image"):
        lines.append(f"  [image] {reply['image']}")
    if reply.get("custom") is not None:
        lines.append(f"  [custom] {reply['custom']}")
    return "\n".join(lines)


def run_chat(url: str, sender: str | None, *, console: Console) -> int:
    """Read lines from the terminal and print the bot's answers until EOF."""
    sender = sender or f"cli-{uuid.uuid4().hex[:12]}"
    console.print(
        f"chatting with {url} as {sender}; /quit or Ctrl-D to leave", highlight=False
    )
    last_buttons: list[dict] = []
    while True:
        try:
            text = console.input("[bold]you>[/] ").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return 0
        if not text:
            continue
        if text in QUIT:
            return 0
        if text.isdigit() and 0 < int(text) <= len(last_buttons):
            text = last_buttons[int(text) - 1].get("payload") or text
        try:
            replies = send(url, sender, text)
        except requests.RequestException as error:
            console.print(
                f"[red]cannot reach the bot at {url}: {escape(str(error))}[/]"
            )
            return 1
        last_buttons = []
        for reply in replies:
            last_buttons = reply.get("buttons") or last_buttons
            console.print(
                f"[bold cyan]bot>[/] {escape(render(reply))}", highlight=False
            )
        if not replies:
            console.print("[dim](no reply)[/]")
