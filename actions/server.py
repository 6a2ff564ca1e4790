"""The action server: rasa_sdk's app for ``actions``, bound to loopback, behind a token.

``python -m actions.server [--port P] [--interface HOST] [rasa_sdk options]``

Serves like ``python -m rasa_sdk --actions actions`` (same app, logging and
options) with two differences:

- it binds to ``ACTION_INTERFACE`` (default 127.0.0.1) instead of 0.0.0.0, so
  the custom actions are not reachable from other machines by default;
- every request except ``GET /health`` (readiness) must carry
  ``Authorization: Bearer <CRM_ACTION_TOKEN>``; anything else gets
  ``401 {"error": "unauthorized"}`` and no action runs. Without a token
  configured the server refuses to start (exit code 2); ``crm run`` always
  provides one.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import sys
from collections.abc import Awaitable, Callable

from rasa_sdk import utils
from rasa_sdk.constants import APPLICATION_ROOT_LOGGER_NAME
from rasa_sdk.endpoint import create_app, create_argument_parser, create_ssl_context
from rasa_sdk.plugin import plugin_manager
from sanic import Sanic, response
from sanic.request import Request
from sanic.response import HTTPResponse

from crm_settings import SettingsError, get_settings

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health"})
NO_TOKEN_EXIT = 2
UNAUTHORIZED = {"error": "unauthorized"}


def bearer_matches(header: str | None, token: bytes) -> bool:
    """True if ``header`` is ``Bearer <token>`` (constant-time comparison)."""
    if not header:
        return False
    scheme, _, supplied = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(supplied.strip().encode("utf-8", "replace"), token)


def token_guard(token: str) -> Callable[[Request], Awaitable[HTTPResponse | None]]:
    """Request middleware refusing every call without the token (but ``/health``)."""
    expected = token.encode("utf-8")

    async def guard(request: Request) -> HTTPResponse | None:
        if request.path in OPEN_PATHS:
            return None
        if bearer_matches(request.headers.get("authorization"), expected):
            return None
        logger.warning(
            "refused %s %s: missing or wrong action token",
            request.method,
            request.path,
        )
        return response.json(UNAUTHORIZED, status=401)

    return guard


def build_app(
    token: str, actions: str = "actions", cors: list[str] | None = None
) -> Sanic:
    """rasa_sdk's app for the ``actions`` package with the token guard installed."""
    if not token:
        raise ValueError("an action token is required")
    app = create_app(actions, cors_origins=cors)
    app.register_middleware(token_guard(token), "request")
    plugin_manager().hook.attach_sanic_app_extensions(app=app)
    return app


def parse_args(argv: list[str] | None, port: int, interface: str) -> argparse.Namespace:
    """rasa_sdk's options plus ``--interface``; defaults from the settings."""
    parser = create_argument_parser()
    parser.add_argument("--interface", default=interface, help="Address to bind to.")
    parser.set_defaults(port=port, actions="actions")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Check the token, build the guarded app and serve (blocks)."""
    try:
        settings = get_settings()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    if settings.action_token is None:
        print(
            "error: CRM_ACTION_TOKEN is not set; the action server refuses to start "
            "without it (`crm run` generates one in var/action-token)",
            file=sys.stderr,
            flush=True,
        )
        return NO_TOKEN_EXIT
    args = parse_args(argv, settings.action_port, settings.action_interface)
    # As rasa_sdk's own entry point (rasa_sdk.__main__.main_from_args).
    logging.getLogger("matplotlib").setLevel(logging.WARN)
    utils.configure_colored_logging(args.loglevel)
    utils.configure_file_logging(
        logging.getLogger(APPLICATION_ROOT_LOGGER_NAME),
        args.log_file,
        args.loglevel,
        args.logging_config_file,
    )
    utils.update_sanic_log_level()
    app = build_app(settings.action_token.get_secret_value(), args.actions, args.cors)
    ssl_context = create_ssl_context(
        args.ssl_certificate, args.ssl_keyfile, args.ssl_password
    )
    protocol = "https" if ssl_context else "http"
    logger.info(
        "action server on %s://%s:%s (token required)",
        protocol,
        args.interface,
        args.port,
    )
    app.run(
        args.interface,
        args.port,
        ssl=ssl_context,
        workers=utils.number_of_sanic_workers(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
