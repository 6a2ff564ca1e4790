"""A real conversation from the contact history as a Rasa test story (YAML).

``conversation_story`` turns one conversation into a Rasa 3.1 test-story
document with one story, in the format of ``tests/conversations/*.yml``: each
message row's ``meta["steps"]`` (recorded by ``contact_history``) become the
``action`` / ``slot_was_set`` / ``active_loop`` steps before it, each customer
message a ``user`` step with its intent and its entities annotated inline as
``[text](entity)`` (``_annotated``). A bot message adds nothing of its own:
the action that uttered it is in its steps.

Only the bot's dialogue is exported: customer and bot rows. The story stops
at the first customer message without an intent or sent once a human agent
had claimed the conversation (Rasa is paused then). Rows Rasa never saw are
skipped: what a channel answered itself (``channel_history.record_exchange``:
event ids ending ``:in`` / ``:out``), the rating ``action_record_csat``
stores beside the customer's own message (``meta["kind"] == "csat"``) and the
texts Rasa makes for triggered intents ("EXTERNAL: …"). Rows recorded before
steps were kept have none: their story lacks the actions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput, NotFound
from crm_store.models import Conversation, Handoff, Interaction

STORY_FORMAT_VERSION = "3.1"
EXTERNAL_PREFIX = "EXTERNAL: "
# Predicted by Rasa's UnexpecTED policy, never part of an expected story.
UNSTORIED_ACTIONS = ("action_listen", "action_session_start", "action_unlikely_intent")
CHANNEL_ONLY_SUFFIXES = (":in", ":out")
ENTITY_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
ACTION_NAME = re.compile(r"\S+")
# "]" directly before "(", "[" or "{" would read as Rasa's entity markup.
MARKUP_LOOKALIKE = re.compile(r"\](?=[(\[{])")
# Plain scalars YAML 1.2 (Rasa's reader) takes for numbers, PyYAML (1.1) not.
YAML12_NUMBER = re.compile(
    r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|0o[0-7]+|0x[0-9a-fA-F]+|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)
FILE_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
MAX_FILE_STEM = 100


class _Literal(str):
    """A user text, written as a YAML literal block (``user: |``)."""


class _Quoted(str):
    """A string written in double quotes (the format version, as Rasa writes it)."""


class _StoryDumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` with literal blocks for user texts and 1.2-safe quoting."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "'" if YAML12_NUMBER.fullmatch(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _represent_literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style="|")


def _represent_quoted(dumper: yaml.SafeDumper, value: _Quoted) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style='"')


_StoryDumper.add_representer(str, _represent_str)
_StoryDumper.add_representer(_Quoted, _represent_quoted)
_StoryDumper.add_representer(_Literal, _represent_literal)


def story_file_name(conversation_id: str) -> str:
    """A safe file name for a conversation's story: ``story_<sanitised id>.yml``."""
    stem = FILE_NAME_UNSAFE.sub("_", conversation_id).strip("_")[:MAX_FILE_STEM]
    return f"story_{stem or 'conversation'}.yml"


def conversation_story(session: Session, *, conversation_id: str) -> str:
    """The conversation as a Rasa 3.1 test-story YAML document with one story.

    Raises:
        NotFound: no conversation has this id.
        InvalidInput: the conversation has no customer message with an intent.
    """
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        raise NotFound(f"conversation {conversation_id!r} not found")
    claimed_at = session.execute(
        select(func.min(Handoff.claimed_at)).where(
            Handoff.conversation_id == conversation_id
        )
    ).scalar_one()
    rows = session.execute(
        select(
            Interaction.event_id,
            Interaction.author,
            Interaction.text,
            Interaction.intent,
            Interaction.occurred_at,
            Interaction.meta,
        )
        .where(
            Interaction.conversation_id == conversation_id,
            Interaction.author.in_(("customer", "bot")),
        )
        .order_by(Interaction.occurred_at, Interaction.id)
    ).all()
    steps = story_steps(rows, claimed_at=claimed_at)
    if not any("intent" in step for step in steps):
        raise InvalidInput(
            f"conversation {conversation_id!r} has no customer message with an "
            "intent: there is no dialogue to export as a story"
        )
    started = conversation.started_at.date().isoformat()
    document = {
        "version": _Quoted(STORY_FORMAT_VERSION),
        "stories": [
            {
                "story": f"conversation {conversation.id} "
                f"({conversation.channel}, {started})",
                "steps": steps,
            }
        ],
    }
    return yaml.dump(
        document,
        Dumper=_StoryDumper,
        sort_keys=False,
        allow_unicode=True,
        width=10_000,
    )


def story_steps(rows: Iterable[Any], *, claimed_at: Any = None) -> list[dict[str, Any]]:
    """The story steps of customer and bot rows (module docstring), oldest first.

    ``rows`` have ``event_id``, ``author``, ``text``, ``intent``,
    ``occurred_at`` and ``meta``; ``claimed_at`` (a datetime or None) is when
    an agent first claimed the conversation.
    """
    steps: list[dict[str, Any]] = []
    for row in rows:
        meta = row.meta if isinstance(row.meta, dict) else {}
        if _not_seen_by_rasa(row.event_id, meta):
            continue
        customer = row.author == "customer"
        if customer and (
            not row.intent or (claimed_at is not None and row.occurred_at >= claimed_at)
        ):
            break
        _add_steps(steps, meta.get("steps"))
        text = row.text or ""
        if not customer or text.startswith(EXTERNAL_PREFIX):
            continue
        step: dict[str, Any] = {}
        if text.strip():
            annotated = _annotated(text, meta.get("entities"))
            step["user"] = _Literal(annotated.strip() + "\n")
        step["intent"] = row.intent
        steps.append(step)
    return steps


def _not_seen_by_rasa(event_id: str | None, meta: dict[str, Any]) -> bool:
    if meta.get("kind") == "csat":
        return True
    return bool(event_id) and str(event_id).endswith(CHANNEL_ONLY_SUFFIXES)


def _add_steps(steps: list[dict[str, Any]], recorded: Any) -> None:
    """Append a row's recorded steps; consecutive slots share one slot_was_set."""
    if not isinstance(recorded, list):
        return
    for item in recorded:
        if not isinstance(item, dict):
            continue
        if "action" in item:
            name = item["action"]
            if (
                isinstance(name, str)
                and ACTION_NAME.fullmatch(name)
                and name not in UNSTORIED_ACTIONS
            ):
                steps.append({"action": name})
        elif "slot" in item:
            name = item["slot"]
            if not isinstance(name, str) or not name:
                continue
            slot = {name: item.get("value")}
            if steps and "slot_was_set" in steps[-1]:
                steps[-1]["slot_was_set"].append(slot)
            else:
                steps.append({"slot_was_set": [slot]})
        elif "active_loop" in item:
            loop = item["active_loop"]
            steps.append({"active_loop": loop if isinstance(loop, str) else None})


def _annotated(text: str, entities: Any) -> str:
    """``text`` with its entities annotated inline as Rasa's training markup.

    An entity whose start/end hold exactly its value becomes ``[value](name)``;
    one whose value differs from its span (a synonym NLU mapped) becomes
    ``[span]{"entity": name, "value": value}``, so ``rasa test`` expects what
    NLU found. A button payload ("/intent…") is kept as it is. Entities with
    no valid span, overlapping another or that markup cannot carry are left
    out; a "]" right before "(", "[" or "{" in the customer's own words gets a
    space after it, so Rasa does not read it as markup.
    """
    if text.startswith("/"):
        return text
    spans: list[tuple[int, int, str]] = []
    candidates = (
        [e for e in entities if isinstance(e, dict)]
        if isinstance(entities, list)
        else []
    )
    for entity in sorted(candidates, key=lambda e: _int(e.get("start"))):
        start, end = entity.get("start"), entity.get("end")
        name, value = entity.get("entity"), entity.get("value")
        if not (
            _is_int(start)
            and _is_int(end)
            and 0 <= start < end <= len(text)
            and isinstance(name, str)
            and ENTITY_NAME.fullmatch(name)
            and isinstance(value, str)
            and not any(c in text[start:end] for c in "[]")
            and (not spans or start >= spans[-1][1])
        ):
            continue
        span = text[start:end]
        if span == value:
            spans.append((start, end, f"[{span}]({name})"))
        elif value and not any(c in value for c in "{}"):
            markup = json.dumps({"entity": name, "value": value}, ensure_ascii=False)
            spans.append((start, end, f"[{span}]{markup}"))
    parts: list[str] = []
    position = 0
    for start, end, markup in spans:
        plain = MARKUP_LOOKALIKE.sub("] ", text[position:start])
        if plain.endswith("]"):
            plain += " "
        parts.append(plain)
        parts.append(markup)
        position = end
    parts.append(MARKUP_LOOKALIKE.sub("] ", text[position:]))
    return "".join(parts)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(value: Any) -> int:
    return value if _is_int(value) else -1
