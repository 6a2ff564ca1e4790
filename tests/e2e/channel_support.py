"""Customers on Telegram and e-mail, as the e2e tests drive them.

``TelegramUser`` posts updates to the Rasa server's Telegram webhook the way
Telegram does (secret header) and reads the bot's answers from the fake Bot
API; ``MailCustomer`` sends mail to the SMTP listener with ``smtplib`` and
reads the answers from the test relay.
"""

from __future__ import annotations

import itertools
import secrets
import smtplib
import time
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import requests

from tests.fakes.smtp_sink import Received

SUPPORT = "support@northwind.example"
_UPDATE_IDS = itertools.count(int(time.time()) % 1_000_000 * 1000)


def new_telegram_id() -> int:
    """A Telegram user id no fixture customer has."""
    return 800_000_000 + secrets.randbelow(99_999_999)


class TelegramUser:
    """One Telegram user in a private chat with the bot."""

    def __init__(self, stack: Any, user_id: int, first_name: str = "Kim") -> None:
        self.stack = stack
        self.user_id = user_id
        self.first_name = first_name
        self.url = f"{stack.rasa_url}/webhooks/telegram/webhook"

    @property
    def tracker_key(self) -> str:
        """The conversation's tracker key."""
        return f"telegram:{self.user_id}"

    def update(self, text: str) -> dict[str, Any]:
        """A Telegram update carrying ``text`` from this user."""
        update_id = next(_UPDATE_IDS)
        return {
            "update_id": update_id,
            "message": {
                "message_id": update_id % 100000,
                "date": int(time.time()),
                "chat": {"id": self.user_id, "type": "private"},
                "from": {
                    "id": self.user_id,
                    "is_bot": False,
                    "first_name": self.first_name,
                },
                "text": text,
            },
        }

    def post(
        self, update: dict[str, Any], secret: str | None = None
    ) -> requests.Response:
        """POST an update to the webhook (with the right secret unless given)."""
        headers = {
            "X-Telegram-Bot-Api-Secret-Token": self.stack.telegram_secret
            if secret is None
            else secret
        }
        return requests.post(self.url, json=update, headers=headers, timeout=30)

    def answers(self) -> list[str]:
        """Every text the bot sent to this chat so far, as the user sees it."""
        from tests.fakes.telegram_api import unescape_markdown_v2

        texts = []
        for params in self.stack.telegram.delivered("sendMessage"):
            if str(params.get("chat_id")) == str(self.user_id):
                text = str(params.get("text", ""))
                if params.get("parse_mode") == "MarkdownV2":
                    text = unescape_markdown_v2(text)
                texts.append(text)
        return texts

    def say(self, text: str) -> str:
        """Send ``text``; return the bot's answers to it, joined."""
        before = len(self.answers())
        answer = self.post(self.update(text))
        assert answer.status_code == 200, answer.text
        return " ".join(self.answers()[before:])


class MailCustomer:
    """A customer writing to the support address from ``address``."""

    def __init__(self, stack: Any, address: str) -> None:
        self.stack = stack
        self.address = address
        self.sent: list[EmailMessage] = []

    def mail(
        self,
        text: str,
        *,
        subject: str = "Question about my order",
        reply_to: Received | None = None,
    ) -> EmailMessage:
        """Compose a mail (a reply to ``reply_to`` quotes it, like a mail client)."""
        message = EmailMessage()
        message["From"] = f"Customer <{self.address}>"
        message["To"] = SUPPORT
        message["Message-ID"] = make_msgid(domain="customer.example")
        if reply_to is not None:
            ours = reply_to.message
            message["Subject"] = str(ours["Subject"])
            message["In-Reply-To"] = str(ours["Message-ID"])
            chain = str(ours.get("References", "")).split()
            message["References"] = " ".join([*chain, str(ours["Message-ID"])])
            quoted = "\n".join("> " + line for line in reply_to.text.splitlines())
            text = f"{text}\n\nOn Tue, Dec 1, 2026, Northwind Goods wrote:\n{quoted}\n"
        else:
            message["Subject"] = subject
        message.set_content(text)
        return message

    def send(self, message: EmailMessage) -> None:
        """Hand the mail to the SMTP listener (raises on a refusal)."""
        with smtplib.SMTP("127.0.0.1", self.stack.smtp_port, timeout=30) as smtp:
            smtp.send_message(message, from_addr=self.address, to_addrs=[SUPPORT])
        self.sent.append(message)

    def replies(self) -> list[Received]:
        """Mail the relay got for this customer, oldest first."""
        return self.stack.relay.to(self.address)

    def ask(
        self, text: str, *, reply_to: Received | None = None, **kw: Any
    ) -> Received:
        """Send a mail and wait for the one reply to it."""
        before = len(self.replies())
        self.send(self.mail(text, reply_to=reply_to, **kw))
        return self.stack.relay.wait_for(self.address, before + 1, timeout=30)[before]
