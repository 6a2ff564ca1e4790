"""Patches of Rasa internals that make a turn cheaper, one module per patch.

Every patch replaces or wraps a private method of Rasa Open Source 3.6.21 and
was measured against it (each module's docstring names the Rasa functions it
replaces and the cost it removes). Private methods change between releases, so
``install_all`` refuses to run on any other Rasa version: re-measure and re-test
the patches, then move ``PINNED_RASA_VERSION``.

- ``turn_gate``: at most N turns in ``MessageProcessor.handle_message`` at once.
- ``policy_cache``: TEDPolicy predictions remembered per dialogue state.
- ``action_calls``: custom-action responses validated with a compiled validator.
- ``response_selection``: the ResponseSelector runs for ``faq`` messages only.
- ``event_streaming``: a turn's new events reach the broker without a re-read.
- ``payload_gate``: ``/intent{json}`` parsed as a payload only if the bot offered it
  (a trust boundary, not a cost: see the module docstring).
"""

from __future__ import annotations

from bot.patches.action_calls import install_cached_validation
from bot.patches.event_streaming import install_counted_streaming
from bot.patches.payload_gate import install_payload_gate
from bot.patches.policy_cache import check_size, install_policy_cache
from bot.patches.response_selection import install_intent_gated_selection
from bot.patches.turn_gate import check_limit, install_turn_gate

PINNED_RASA_VERSION = "3.6.21"

__all__ = [
    "PINNED_RASA_VERSION",
    "RasaVersionError",
    "check_rasa_version",
    "install_all",
]


class RasaVersionError(RuntimeError):
    """The installed Rasa is not the version the patches were written against."""


def check_rasa_version() -> None:
    """Refuse any Rasa but ``PINNED_RASA_VERSION``.

    Raises:
        RasaVersionError: naming the installed and the pinned version.
    """
    import rasa

    found = getattr(rasa, "__version__", "unknown")
    if found != PINNED_RASA_VERSION:
        raise RasaVersionError(
            f"Rasa {found} is installed, but bot/patches were written and measured "
            f"against Rasa {PINNED_RASA_VERSION}; refusing to patch another version "
            "(re-test the patches and update PINNED_RASA_VERSION)"
        )


def install_all(*, max_concurrent_turns: int, policy_cache_size: int) -> None:
    """Check the Rasa version, then install every patch (idempotent).

    Install before the model is loaded (Rasa's graph looks policy methods up then).

    Args:
        max_concurrent_turns: turns processed at once (0: no limit).
        policy_cache_size: TEDPolicy predictions remembered (0: no cache).

    Raises:
        RasaVersionError: Rasa is not ``PINNED_RASA_VERSION``; nothing is patched.
        ValueError: a value is negative (names the setting); nothing is patched.
    """
    check_rasa_version()
    check_limit(max_concurrent_turns)
    check_size(policy_cache_size)
    install_turn_gate(max_concurrent_turns)
    install_policy_cache(policy_cache_size)
    install_cached_validation()
    install_intent_gated_selection()
    install_counted_streaming()
    install_payload_gate()
