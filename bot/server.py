"""Start the Rasa server with two guards that plain ``rasa run`` lacks.

``python -m bot.server --model M --endpoints E --credentials C --port P``

1. Event broker guard: Rasa only logs a warning when a custom event broker
   (``event_broker.type: bot.broker.ContactHistoryBroker``) cannot be imported,
   then runs without contact history. Here the class is resolved before start;
   if that fails the process exits with code 3 and a clear message. After the
   agent is loaded, a listener checks that the broker really exists.
2. Action server fallback: when the action server is down, times out or fails
   (5xx), Rasa logs the error and the customer gets nothing. Here the action
   endpoint is wrapped (``FallbackActionEndpoint``): such a failure becomes a
   normal action result carrying an apology and the offer of a human (slots
   ``human_offered`` and ``handoff_reason: action_failure``, so accepting hands
   off with that reason), so the customer hears back at once and the turn is
   logged by the broker like any other. Validation rejections (HTTP 400) keep
   Rasa's own handling. Every call carries
   ``Authorization: Bearer <CRM_ACTION_TOKEN>``; a refused token (401/403) is
   handled like an outage.
3. Less work per turn: keep-alive connections to the action server and a
   response validator compiled once (``bot.patches.action_calls``); the response
   selector only runs for FAQ messages (``bot.patches.response_selection``); at most
   ``CRM_MAX_CONCURRENT_TURNS`` turns run at once (``bot.patches.turn_gate``); a
   turn's new events reach the broker without re-reading the tracker
   (``bot.patches.event_streaming``); TEDPolicy predictions are remembered per
   dialogue state (``bot.patches.policy_cache``, ``CRM_POLICY_CACHE_SIZE``).
4. Edge limits and log privacy: request bodies above ``CRM_MAX_REQUEST_BYTES``
   get HTTP 413 (Sanic's default is 100 MB); Rasa's warnings and structured
   log fields that would print customer text are dropped or redacted
   (``bot.log_privacy``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from rasa.utils.endpoints import ClientResponseError, EndpointConfig

from bot import log_privacy
from bot.patches import RasaVersionError, install_all
from bot.patches.action_calls import PooledSession
from crm_settings import Settings, SettingsError, get_settings

logger = logging.getLogger(__name__)

BROKER_GUARD_EXIT = 3
APOLOGY = (
    "Sorry, something went wrong on our side and I can't finish that right now. "
    'Would you like to talk to a person? Just say "human" and a member of our '
    "team will take over, or try again in a few minutes."
)
HUMAN_BUTTON = {"title": "Talk to a person", "payload": "I want to talk to a human"}
FALLBACK_MARK = "action_server_unavailable"
FAILURE_REASON = "action_failure"
# Without credentials.yml the server still namespaces REST senders (rest:<id>).
REST_CHANNEL = "channels.rest.NamespacedRestInput"
REPEAT_WINDOW_SECONDS = 5.0
# The action server refused the call (missing or wrong CRM_ACTION_TOKEN).
REFUSED_STATUSES = frozenset({401, 403})


class BrokerGuardError(RuntimeError):
    """The configured event broker cannot be loaded."""


def check_event_broker(endpoints_path: str | None) -> type | None:
    """Resolve the custom event broker class configured in ``endpoints_path``.

    Returns the class, or ``None`` when no custom broker is configured.

    Raises:
        BrokerGuardError: the class cannot be imported or is not an EventBroker.
    """
    from rasa.core.brokers.broker import EventBroker
    from rasa.core.utils import AvailableEndpoints
    from rasa.shared.utils.common import class_from_module_path

    if not endpoints_path or not Path(endpoints_path).is_file():
        return None
    endpoints = AvailableEndpoints.read_endpoints(endpoints_path)
    config = endpoints.event_broker
    if config is None or not config.type:
        return None
    if config.type.lower() in ("pika", "sql", "file", "kafka"):
        return None
    try:
        broker_class = class_from_module_path(config.type)
    except (AttributeError, ImportError) as error:
        raise BrokerGuardError(
            f"event broker {config.type!r} from {endpoints_path} cannot be "
            f"imported ({type(error).__name__}: {error}); refusing to start "
            "without contact history"
        ) from error
    if not (isinstance(broker_class, type) and issubclass(broker_class, EventBroker)):
        raise BrokerGuardError(f"{config.type!r} is not a Rasa EventBroker subclass")
    return broker_class


class FallbackActionEndpoint(EndpointConfig):
    """Action endpoint that answers with an apology when the action server fails.

    Every call carries the shared action token as a bearer header.
    """

    def __init__(
        self,
        *args: Any,
        action_timeout: float,
        auth_token: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Same arguments as ``EndpointConfig`` plus the per-call timeout and token."""
        super().__init__(*args, **kwargs)
        self.action_timeout = action_timeout
        if auth_token:
            self.headers = {**self.headers, "Authorization": f"Bearer {auth_token}"}
        self._apologized: dict[str, float] = {}
        auth = (
            aiohttp.BasicAuth(self.basic_auth["username"], self.basic_auth["password"])
            if self.basic_auth
            else None
        )
        self.pool = PooledSession(self.headers, auth)

    def session(self) -> Any:
        """The pooled keep-alive session instead of a new one per call."""
        return self.pool

    @classmethod
    def wrap(
        cls,
        config: EndpointConfig,
        action_timeout: float,
        auth_token: str | None = None,
    ) -> Any:
        """Return a fallback endpoint with the settings of ``config``."""
        return cls(
            config.url,
            config.params,
            config.headers,
            config.basic_auth,
            config.token,
            config.token_name,
            config.cafile,
            action_timeout=action_timeout,
            auth_token=auth_token,
            **config.kwargs,
        )

    async def request(
        self,
        method: str = "post",
        subpath: str | None = None,
        content_type: str | None = "application/json",
        compress: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Call the action server; turn outages into a fallback response."""
        kwargs["timeout"] = aiohttp.ClientTimeout(total=self.action_timeout)
        try:
            return await super().request(
                method, subpath, content_type, compress, **kwargs
            )
        except ClientResponseError as error:
            if error.status in REFUSED_STATUSES:
                reason = f"HTTP {error.status}: action token refused"
            elif error.status < 500:
                raise
            else:
                reason = f"HTTP {error.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            reason = type(error).__name__
        body = kwargs.get("json") or {}
        action = body.get("next_action", "?")
        logger.error(
            "action server failed on %s (%s); answering with the fallback",
            action,
            reason,
        )
        return self._fallback(str(body.get("sender_id", "")))

    def _fallback(self, sender_id: str) -> dict[str, Any]:
        """One apology per sender and turn; later failed calls stay silent."""
        now = time.monotonic()
        self._apologized = {
            k: v for k, v in self._apologized.items() if now - v < REPEAT_WINDOW_SECONDS
        }
        # Deactivate any form so the bot does not keep calling the dead server.
        events = [{"event": "active_loop", "name": None}]
        if sender_id in self._apologized:
            return {"events": events, "responses": []}
        self._apologized[sender_id] = now
        message = {
            "text": APOLOGY,
            "buttons": [dict(HUMAN_BUTTON)],
            "fallback": FALLBACK_MARK,
        }
        # The apology offers a person: "yes" or the button hands off with the
        # reason action_failure (actions/handoff.py reads handoff_reason).
        offer = [
            {"event": "slot", "name": "human_offered", "value": True},
            {"event": "slot", "name": "handoff_reason", "value": FAILURE_REASON},
        ]
        return {"events": [*events, *offer], "responses": [message]}


def _close_pool(endpoint: FallbackActionEndpoint) -> Any:
    async def close(_app: Any, _loop: Any) -> None:
        await endpoint.pool.close()

    return close


def _limit_request_size(max_bytes: int) -> Any:
    async def limit(app: Any, _loop: Any) -> None:
        # Read by Sanic per connection (HttpProtocol), so setting it before the
        # server accepts any is enough; larger bodies get 413.
        app.config.REQUEST_MAX_SIZE = max_bytes

    return limit


def _after_start_check(expected: type | None) -> Any:
    async def check(app: Any, _loop: Any) -> None:
        if expected is None:
            return
        agent = getattr(app.ctx, "agent", None)
        broker = getattr(getattr(agent, "tracker_store", None), "event_broker", None)
        if not isinstance(broker, expected):
            logger.critical(
                "event broker %s was not created; stopping (no contact history)",
                expected.__name__,
            )
            sys.stderr.flush()
            os._exit(BROKER_GUARD_EXIT)

    return check


def parse_args(
    argv: list[str] | None = None, settings: Settings | None = None
) -> argparse.Namespace:
    """Parse the subset of ``rasa run`` options this project uses.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).
        settings: defaults of ``--port``, ``--interface`` and ``--action-timeout``
            (default: :func:`crm_settings.get_settings`, which may raise
            ``SettingsError``).
    """
    settings = settings or get_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Model file (.tar.gz).")
    parser.add_argument("--endpoints", default="endpoints.yml")
    parser.add_argument("--credentials", default=None)
    parser.add_argument("--port", type=int, default=settings.rasa_port)
    parser.add_argument("--interface", default=settings.rasa_interface)
    parser.add_argument("--cors", nargs="*", default=None)
    parser.add_argument("--enable-api", action="store_true")
    parser.add_argument(
        "--action-timeout",
        type=float,
        default=settings.action_timeout,
        help="Seconds before an action call counts as failed.",
    )
    parser.add_argument("--debug", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Check the broker, wrap the action endpoint and serve (blocks)."""
    try:
        settings = get_settings()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    args = parse_args(argv, settings)
    from rasa.utils.common import configure_logging_and_warnings
    from rasa.utils.log_utils import configure_structlog

    level = logging.DEBUG if args.debug else logging.INFO
    configure_logging_and_warnings(level)
    # `rasa run` does this in its CLI entry point. Without it structlog prints
    # every debug event (message texts, slot values: personal data) to stdout
    # and costs several ms per turn.
    configure_structlog(level)
    log_privacy.install()
    logging.getLogger(__name__).setLevel(logging.INFO)
    try:
        broker_class = check_event_broker(args.endpoints)
    except BrokerGuardError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return BROKER_GUARD_EXIT

    import rasa.core.run
    from rasa.core.utils import AvailableEndpoints

    try:
        install_all(
            max_concurrent_turns=settings.turn_limit,
            policy_cache_size=settings.policy_cache_size,
        )
    except (RasaVersionError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    endpoints = AvailableEndpoints.read_endpoints(args.endpoints)
    listeners = [
        (_limit_request_size(settings.max_request_bytes), "before_server_start"),
        (_after_start_check(broker_class), "after_server_start"),
    ]
    if endpoints.action is not None:
        token = settings.action_token
        if token is None:
            logger.warning(
                "CRM_ACTION_TOKEN is not set: the action server will refuse the "
                "bot's calls"
            )
        endpoints.action = FallbackActionEndpoint.wrap(
            endpoints.action,
            args.action_timeout,
            auth_token=token.get_secret_value() if token else None,
        )
        listeners.append((_close_pool(endpoints.action), "after_server_stop"))
    rasa.core.run.serve_application(
        model_path=args.model,
        interface=args.interface,
        port=args.port,
        credentials=args.credentials,
        channel=None if args.credentials else REST_CHANNEL,
        cors=args.cors,
        enable_api=args.enable_api,
        endpoints=endpoints,
        server_listeners=listeners,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
