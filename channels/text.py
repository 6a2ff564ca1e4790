r"""Cleaning of untrusted text and metadata before Rasa or the store sees it.

``clean_text`` is the one cleaning rule, used by the channels at the edge and by
the contact history before rows are written: NUL and the other C0 control
characters except newline and tab are removed, lone surrogates (which JSON can
carry as ``"\ud800"`` but UTF-8 cannot encode) become U+FFFD.

``limited_metadata`` keeps what a client may send in message metadata: only the
keys in ``CLIENT_METADATA_KEYS``, and nothing at all when the metadata is
larger than the byte limit or nested deeper than ``MAX_METADATA_DEPTH``.
"""

from __future__ import annotations

import json
import re
from typing import Any

CONTROL = re.compile("[\x00-\x08\x0b-\x1f]")
SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"
# The signed identity assertion (channels.identity_assertion); nothing else
# from the client reaches Rasa, the trackers or the action server.
CLIENT_METADATA_KEYS = ("identity",)
MAX_METADATA_DEPTH = 5


def clean_text(text: str) -> str:
    """Return ``text`` without C0 controls but newline and tab; surrogates -> U+FFFD."""
    return SURROGATE.sub(REPLACEMENT, CONTROL.sub("", text))


def clean_value(value: Any) -> Any:
    """``clean_text`` applied to every string (keys too) of a JSON-like value.

    Callers bound the depth first (``depth_exceeds``); this recursion does not.
    """
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_value(k): clean_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_value(v) for v in value]
    return value


def depth_exceeds(value: Any, limit: int) -> bool:
    """True if dicts and lists nest deeper than ``limit`` (no recursion, stops early).

    ``{}`` and ``[]`` have depth 1, ``{"a": {}}`` depth 2; scalars 0.
    """
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def json_size(value: Any) -> int | None:
    """Bytes of ``value`` as compact UTF-8 JSON, None if it is not serialisable."""
    try:
        encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return None
    return len(encoded.encode("utf-8", "surrogatepass"))


def limited_metadata(raw: Any, *, max_bytes: int) -> dict[str, Any]:
    """Return the client metadata that may pass, cleaned; ``{}`` when it may not.

    Only ``CLIENT_METADATA_KEYS`` are kept, and only when the whole ``raw``
    metadata is a dict of at most ``max_bytes`` JSON bytes nested at most
    ``MAX_METADATA_DEPTH`` levels. Never raises.
    """
    if not isinstance(raw, dict) or not raw:
        return {}
    if depth_exceeds(raw, MAX_METADATA_DEPTH):
        return {}
    size = json_size(raw)
    if size is None or size > max_bytes:
        return {}
    return {k: clean_value(raw[k]) for k in CLIENT_METADATA_KEYS if k in raw}
