"""Numeric settings read from the environment, with errors that name the variable."""

from __future__ import annotations

import os


def non_negative_int(name: str, default: int) -> int:
    """The environment variable ``name`` as a whole number >= 0 (``default`` if unset).

    Raises ValueError naming the variable and the bad value, so the server can
    stop with a clear message instead of a traceback.
    """
    raw = os.environ.get(name, str(default)).strip()
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number >= 0, not {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must be >= 0, not {value}")
    return value
