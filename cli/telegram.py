"""``crm telegram``: register the Telegram webhook and show what Telegram has.

``set-webhook URL`` calls ``setWebhook`` with the ``TELEGRAM_WEBHOOK_SECRET`` as
``secret_token`` (Telegram sends it back in every update's header), the update
kinds the channel handles and ``drop_pending_updates=False`` (nothing waiting is
lost). A URL that is only a host (``https://bot.example.com``) gets the
webhook path ``/webhooks/telegram/webhook``. Telegram accepts only https;
``--insecure`` allows http for a local fake Bot API. ``info`` prints
``getWebhookInfo``: the URL, the pending update count and the last error.
Without ``TELEGRAM_BOT_TOKEN`` (or, for ``set-webhook``, the secret) both exit 2.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from urllib.parse import urlsplit

import typer
from telegram import WebhookInfo

from channels.telegram_sender import DeliveryFailed, TelegramSender
from cli.common import err, out, settings

WEBHOOK_PATH = "/webhooks/telegram/webhook"
ALLOWED_UPDATES = ("message", "edited_message", "callback_query")

telegram_app = typer.Typer(help="The Telegram webhook (Bot API).", no_args_is_help=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"error: {message}", markup=False, highlight=False)
    return typer.Exit(code)


def _token() -> tuple[str, str]:
    """``(token, api_url)`` from the settings; exit 2 without a token."""
    config = settings()
    if config.telegram_bot_token is None:
        raise _fail("TELEGRAM_BOT_TOKEN is not set (the Telegram channel is off)")
    return config.telegram_bot_token.get_secret_value(), config.telegram_api_url


def webhook_url(url: str, *, insecure: bool) -> str:
    """The full webhook URL of ``url`` (the webhook path added to a bare host).

    Raises:
        ValueError: not an absolute http(s) URL, or http without ``insecure``.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ValueError(f"not an absolute https URL: {url!r}")
    if parts.scheme == "http" and not insecure:
        raise ValueError(
            "Telegram needs an https URL (use --insecure only for a local fake Bot API)"
        )
    if parts.path in ("", "/") and not parts.query:
        return parts._replace(path=WEBHOOK_PATH).geturl()
    return parts.geturl()


@telegram_app.command("set-webhook")
def set_webhook(
    url: str = typer.Argument(
        ..., help="Public https URL of the webhook (or just the host)."
    ),
    insecure: bool = typer.Option(
        False, "--insecure", help="Allow an http URL (a local fake Bot API only)."
    ),
) -> None:
    """Register the webhook with Telegram, with the secret token."""
    token, api_url = _token()
    secret = settings().telegram_webhook_secret
    if secret is None:
        raise _fail("TELEGRAM_WEBHOOK_SECRET is not set (the Telegram channel is off)")
    try:
        target = webhook_url(url, insecure=insecure)
    except ValueError as error:
        raise _fail(str(error)) from None

    async def register() -> bool:
        async with TelegramSender(token, api_url, max_attempts=3) as sender:
            return await sender.set_webhook(
                target,
                secret_token=secret.get_secret_value(),
                allowed_updates=list(ALLOWED_UPDATES),
                drop_pending_updates=False,
            )

    try:
        done = asyncio.run(register())
    except DeliveryFailed as error:
        raise _fail(f"Telegram refused: {error.reason}", 1) from None
    if not done:
        raise _fail("Telegram did not confirm the webhook", 1)
    out.print(f"webhook set: {target}", markup=False, highlight=False)
    out.print(f"updates: {', '.join(ALLOWED_UPDATES)}", markup=False, highlight=False)


@telegram_app.command("info")
def info() -> None:
    """Show the webhook Telegram has: URL, pending updates, last error."""
    token, api_url = _token()

    async def fetch() -> WebhookInfo:
        async with TelegramSender(token, api_url, max_attempts=3) as sender:
            return await sender.webhook_info()

    try:
        webhook = asyncio.run(fetch())
    except DeliveryFailed as error:
        raise _fail(f"Telegram refused: {error.reason}", 1) from None
    lines = [
        f"url: {webhook.url or '(none)'}",
        f"pending updates: {webhook.pending_update_count}",
    ]
    if webhook.allowed_updates:
        lines.append(f"updates: {', '.join(webhook.allowed_updates)}")
    if webhook.last_error_message:
        when = webhook.last_error_date
        stamp = (
            f"{when.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC: "
            if when
            else ""
        )
        lines.append(f"last error: {stamp}{webhook.last_error_message}")
    else:
        lines.append("last error: none")
    for line in lines:
        out.print(line, markup=False, highlight=False)
