"""Canned replies of the conversation page, read from ``config/canned_replies.yml``.

The file is read once when the app is created; a bad file stops start-up with a
message naming the file and the entry (``InvalidInput``), not at the first use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from crm_settings import PROJECT_ROOT
from crm_store.errors import InvalidInput

DEFAULT_PATH = PROJECT_ROOT / "config" / "canned_replies.yml"
ID_PATTERN = re.compile(r"^[a-z0-9_-]{1,40}$")
MAX_TITLE = 60
MAX_TEXT = 4000


@dataclass(frozen=True)
class CannedReply:
    """One ready-made reply: a short button title and the text it inserts."""

    id: str
    title: str
    text: str


def load_canned_replies(path: Path | None = None) -> list[CannedReply]:
    """Read and validate the canned replies file (``DEFAULT_PATH`` by default).

    A missing default file gives no replies; a missing explicit path, bad YAML
    or a bad entry raises ``InvalidInput`` saying what is wrong.
    """
    source = path or DEFAULT_PATH
    if not source.exists():
        if path is None:
            return []
        raise InvalidInput(f"{source}: canned replies file not found")
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{source}: not valid YAML ({exc})") from None
    entries = data.get("replies", []) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise InvalidInput(f"{source}: expected a mapping with a 'replies' list")
    replies: list[CannedReply] = []
    for number, entry in enumerate(entries, start=1):
        replies.append(_reply(entry, f"{source}: reply {number}"))
    ids = [reply.id for reply in replies]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InvalidInput(f"{source}: duplicate reply ids {duplicates}")
    return replies


def _reply(entry: object, where: str) -> CannedReply:
    if not isinstance(entry, dict):
        raise InvalidInput(f"{where}: expected a mapping with id, title and text")
    unknown = sorted(set(entry) - {"id", "title", "text"})
    if unknown:
        raise InvalidInput(f"{where}: unknown keys {unknown}")
    reply_id, title, text = (entry.get(k) for k in ("id", "title", "text"))
    if not isinstance(reply_id, str) or not ID_PATTERN.match(reply_id):
        raise InvalidInput(
            f"{where}: id must match {ID_PATTERN.pattern}, e.g. greeting"
        )
    if not isinstance(title, str) or not 1 <= len(title.strip()) <= MAX_TITLE:
        raise InvalidInput(f"{where}: title must be 1 to {MAX_TITLE} characters")
    if not isinstance(text, str) or not 1 <= len(text.strip()) <= MAX_TEXT:
        raise InvalidInput(f"{where}: text must be 1 to {MAX_TEXT} characters")
    return CannedReply(reply_id, title.strip(), text.strip())
