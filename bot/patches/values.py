"""Validation of the values handed to the patches (they come from the settings)."""

from __future__ import annotations


def whole_number(value: object, *, setting: str, env: str) -> int:
    """``value`` if it is a whole number >= 0.

    Raises:
        ValueError: naming the setting and its environment variable.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"{setting} ({env}) must be a whole number >= 0, not {value!r}"
        )
    return value
