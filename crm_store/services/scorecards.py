"""Quality scorecards of conversations (manager review).

The criteria come from ``config/scorecard.yml`` (``load_criteria``). A reviewer
gives every criterion a whole number of points from 0 to its ``max_points``;
the score is ``100 * sum(points) / sum(max_points)`` rounded to 1 decimal. A
reviewer has one scorecard per conversation: saving again updates it
(``updated_at`` moves, ``created_at`` stays). Every save is written to
``audit_log`` (``scorecard_saved``). Listings and the export filter on when the
scorecard was first given (``created_at``); points are stored by criterion
key, so a criterion added or renamed later shows as empty in older scorecards.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput, NotFound
from crm_store.models import AuditLog, Conversation, Scorecard, StaffUser, utcnow
from crm_store.settings import PROJECT_ROOT

DEFAULT_CRITERIA_PATH = PROJECT_ROOT / "config" / "scorecard.yml"
KEY_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")
CRITERION_FIELDS = ("key", "label", "description", "max_points")
MAX_CRITERIA = 20
MAX_CRITERION_POINTS = 10
MAX_LABEL = 80
MAX_DESCRIPTION = 1000
MAX_COMMENT = 4000
MAX_LIST = 1000
DIGITS = re.compile(r"[0-9]{1,6}")
# C0 controls but newline and tab (PostgreSQL refuses NUL in text).
CONTROL = re.compile("[\x00-\x08\x0b-\x1f]")
LEADING_COLUMNS = ("conversation_id", "reviewer", "score")
TRAILING_COLUMNS = ("comment", "created_at", "updated_at")
RESERVED_KEYS = frozenset(LEADING_COLUMNS + TRAILING_COLUMNS)
AUDIT_ACTION = "scorecard_saved"


@dataclass(frozen=True)
class Criterion:
    """One thing a reviewer scores, worth 0..``max_points`` points."""

    key: str
    label: str
    description: str
    max_points: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "key": self.key,
            "label": self.label,
            "description": self.description,
            "max_points": self.max_points,
        }


@dataclass(frozen=True)
class ScorecardCriteria:
    """The configured criteria, in the order reviewers see them."""

    criteria: tuple[Criterion, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        """The criterion keys, in order."""
        return tuple(c.key for c in self.criteria)

    @property
    def max_total(self) -> int:
        """The sum of every criterion's ``max_points``."""
        return sum(c.max_points for c in self.criteria)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "criteria": [c.as_dict() for c in self.criteria],
            "max_total": self.max_total,
        }


@dataclass(frozen=True)
class ScorecardView:
    """A saved scorecard with its reviewer's username."""

    id: int
    conversation_id: str
    reviewer: str
    scores: dict[str, int]
    score: float
    comment: str | None
    created_at: dt.datetime
    updated_at: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (datetimes as ISO 8601 with "Z")."""
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "reviewer": self.reviewer,
            "scores": dict(self.scores),
            "score": self.score,
            "comment": self.comment,
            "created_at": self.created_at.isoformat() + "Z",
            "updated_at": self.updated_at.isoformat() + "Z",
        }


def load_criteria(path: Path | str | None = None) -> ScorecardCriteria:
    """Read and validate the criteria of ``path`` (default ``config/scorecard.yml``).

    The file holds ``criteria:``, a list of 1 to 20 entries with ``key``
    (unique, ``^[a-z][a-z0-9_]{0,31}$``, not a fixed export column), ``label``,
    optional ``description`` and ``max_points`` (1..10).

    Raises:
        InvalidInput: missing or unreadable file, or a bad entry (the message
            names the file and the entry).
    """
    resolved = Path(path) if path else DEFAULT_CRITERIA_PATH
    try:
        raw = resolved.read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidInput(
            f"scorecard criteria file {resolved} cannot be read ({error.strerror})"
        ) from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise InvalidInput(f"{resolved}: not valid YAML ({error})") from None
    if not isinstance(data, dict) or set(data) != {"criteria"}:
        raise InvalidInput(f"{resolved}: expected one key, criteria: a list")
    entries = data["criteria"]
    if not isinstance(entries, list) or not entries:
        raise InvalidInput(f"{resolved}: criteria must be a non-empty list")
    if len(entries) > MAX_CRITERIA:
        raise InvalidInput(
            f"{resolved}: {len(entries)} criteria; at most {MAX_CRITERIA} are allowed"
        )
    criteria: list[Criterion] = []
    for number, entry in enumerate(entries, start=1):
        criterion = _criterion(entry, f"{resolved}: criterion {number}")
        if criterion.key in {c.key for c in criteria}:
            raise InvalidInput(
                f"{resolved}: criterion {number}: key {criterion.key!r} is used twice"
            )
        criteria.append(criterion)
    return ScorecardCriteria(tuple(criteria))


def _criterion(entry: Any, where: str) -> Criterion:
    if not isinstance(entry, dict):
        raise InvalidInput(
            f"{where}: expected a mapping with {', '.join(CRITERION_FIELDS)}"
        )
    key = entry.get("key")
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise InvalidInput(
            f"{where}: key must match ^[a-z][a-z0-9_]{{0,31}}$ (got {key!r})"
        )
    where = f"{where} ({key})"
    unknown = sorted(map(str, set(entry) - set(CRITERION_FIELDS)))
    if unknown:
        raise InvalidInput(
            f"{where}: unknown fields {unknown}; known: {', '.join(CRITERION_FIELDS)}"
        )
    if key in RESERVED_KEYS:
        raise InvalidInput(
            f"{where}: key {key!r} is a column of the scorecard export; choose another"
        )
    label = entry.get("label")
    if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL:
        raise InvalidInput(
            f"{where}: label must be text of 1 to {MAX_LABEL} characters"
        )
    description = entry.get("description")
    if description is None:
        description = ""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise InvalidInput(
            f"{where}: description must be text of at most {MAX_DESCRIPTION} characters"
        )
    points = entry.get("max_points")
    if (
        not isinstance(points, int)
        or isinstance(points, bool)
        or not 1 <= points <= MAX_CRITERION_POINTS
    ):
        raise InvalidInput(
            f"{where}: max_points must be a whole number from 1 to "
            f"{MAX_CRITERION_POINTS} (got {points!r})"
        )
    return Criterion(
        key=key, label=label.strip(), description=description.strip(), max_points=points
    )


@lru_cache(maxsize=1)
def default_criteria() -> ScorecardCriteria:
    """The criteria of ``config/scorecard.yml``, read once per process."""
    return load_criteria(None)


def scorecard_columns(criteria: ScorecardCriteria | None = None) -> tuple[str, ...]:
    """The export header: the fixed columns around one column per criterion key."""
    criteria = criteria or default_criteria()
    return LEADING_COLUMNS + criteria.keys + TRAILING_COLUMNS


def __getattr__(name: str) -> Any:
    """``SCORECARD_COLUMNS``: the header of the configured criteria (read lazily)."""
    if name == "SCORECARD_COLUMNS":
        return scorecard_columns()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def save_scorecard(
    session: Session,
    *,
    conversation_id: str,
    reviewer_id: int,
    scores: Mapping[str, object],
    comment: str | None,
    criteria: ScorecardCriteria,
    at: dt.datetime | None = None,
) -> ScorecardView:
    """Give or update the reviewer's scorecard of a conversation; audited.

    ``scores`` maps every criterion key to a whole number of points
    (0..max_points; a string of digits, as a form sends it, is fine).

    Raises:
        NotFound: unknown conversation or reviewer.
        InvalidInput: a missing, unknown or out-of-range score, or a comment
            over 4000 characters.
    """
    points = validated_scores(scores, criteria)
    comment = _comment(comment)
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        raise NotFound(f"conversation {conversation_id!r} not found")
    reviewer = session.get(StaffUser, reviewer_id)
    if reviewer is None:
        raise NotFound(f"reviewer {reviewer_id} not found")
    at = _naive_utc(at or utcnow())
    score = round(100 * sum(points.values()) / criteria.max_total, 1)
    card = _card_of(session, conversation_id, reviewer_id)
    if card is None:
        try:
            with session.begin_nested():
                card = Scorecard(
                    conversation_id=conversation_id,
                    reviewer_id=reviewer_id,
                    scores=points,
                    score=score,
                    comment=comment,
                    created_at=at,
                    updated_at=at,
                )
                session.add(card)
                session.flush()
        except IntegrityError:  # the same reviewer saved at the same moment
            card = _card_of(session, conversation_id, reviewer_id)
            if card is None:
                raise
            _update(card, points, score, comment, at)
    else:
        _update(card, points, score, comment, at)
    session.add(
        AuditLog(
            occurred_at=at,
            actor=reviewer.username,
            action=AUDIT_ACTION,
            entity_type="conversation",
            entity_id=conversation_id,
            details={"score": score},
        )
    )
    session.flush()
    return _view(card, reviewer.username)


def _update(
    card: Scorecard,
    points: dict[str, int],
    score: float,
    comment: str | None,
    at: dt.datetime,
) -> None:
    card.scores = points
    card.score = score
    card.comment = comment
    card.updated_at = at


def validated_scores(
    scores: Mapping[str, object], criteria: ScorecardCriteria
) -> dict[str, int]:
    """Every criterion's points as ints, in criteria order; InvalidInput otherwise."""
    if not isinstance(scores, Mapping):
        raise InvalidInput("scores must map each criterion to its points")
    unknown = sorted(str(k) for k in scores if k not in criteria.keys)
    if unknown:
        raise InvalidInput(
            f"unknown criteria {unknown}; the criteria are {', '.join(criteria.keys)}"
        )
    missing = [k for k in criteria.keys if k not in scores]
    if missing:
        raise InvalidInput(
            f"every criterion needs points; missing: {', '.join(missing)}"
        )
    points: dict[str, int] = {}
    for criterion in criteria.criteria:
        value = _whole_number(scores[criterion.key])
        if value is None or not 0 <= value <= criterion.max_points:
            raise InvalidInput(
                f"{criterion.label} ({criterion.key}): points must be a whole "
                f"number from 0 to {criterion.max_points}"
            )
        points[criterion.key] = value
    return points


def _whole_number(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and DIGITS.fullmatch(value.strip()):
        return int(value.strip())
    return None


def _comment(comment: str | None) -> str | None:
    if comment is None:
        return None
    if not isinstance(comment, str):
        raise InvalidInput("comment must be text")
    cleaned = CONTROL.sub("", comment).strip()
    if len(cleaned) > MAX_COMMENT:
        raise InvalidInput(f"comment is too long (at most {MAX_COMMENT} characters)")
    return cleaned or None


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is not None:
        return moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return moment


def _card_of(
    session: Session, conversation_id: str, reviewer_id: int
) -> Scorecard | None:
    return session.execute(
        select(Scorecard).where(
            Scorecard.conversation_id == conversation_id,
            Scorecard.reviewer_id == reviewer_id,
        )
    ).scalar_one_or_none()


def _view(card: Scorecard, reviewer: str) -> ScorecardView:
    return ScorecardView(
        id=card.id,
        conversation_id=card.conversation_id,
        reviewer=reviewer,
        scores=dict(card.scores or {}),
        score=float(card.score),
        comment=card.comment,
        created_at=card.created_at,
        updated_at=card.updated_at,
    )


def scorecards_of(session: Session, *, conversation_id: str) -> list[ScorecardView]:
    """The scorecards of one conversation, oldest first (none: empty list)."""
    stmt = (
        select(Scorecard, StaffUser.username)
        .join(StaffUser, StaffUser.id == Scorecard.reviewer_id)
        .where(Scorecard.conversation_id == conversation_id)
        .order_by(Scorecard.created_at, Scorecard.id)
    )
    return [_view(card, username) for card, username in session.execute(stmt)]


def list_scorecards(
    session: Session,
    *,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    reviewer: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[ScorecardView]:
    """Scorecards first given in ``[start, end)``, newest first, by ``reviewer``.

    ``reviewer`` is a username (None: everyone's).

    Raises:
        InvalidInput: ``start`` not before ``end``, ``limit`` outside 1..1000 or
            a negative ``offset``.
    """
    _check_period(start, end)
    if (
        isinstance(limit, bool)
        or not isinstance(limit, int)
        or not 1 <= limit <= MAX_LIST
    ):
        raise InvalidInput(f"limit must be from 1 to {MAX_LIST}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidInput("offset must be 0 or more")
    stmt = select(Scorecard, StaffUser.username).join(
        StaffUser, StaffUser.id == Scorecard.reviewer_id
    )
    stmt = _in_period(stmt, start, end)
    if reviewer:
        stmt = stmt.where(StaffUser.username == reviewer)
    stmt = (
        stmt.order_by(Scorecard.created_at.desc(), Scorecard.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [_view(card, username) for card, username in session.execute(stmt)]


def scorecard_rows(
    session: Session,
    *,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    criteria: ScorecardCriteria | None = None,
    batch_size: int = 1000,
) -> Iterator[tuple]:
    """Stream scorecards first given in ``[start, end)`` as export rows, oldest first.

    Values follow ``scorecard_columns(criteria)`` (default: the configured
    criteria); a criterion a scorecard has no points for is None. Rows are
    fetched ``batch_size`` at a time (a server-side cursor on PostgreSQL).

    Raises:
        InvalidInput: ``start`` not before ``end``.
    """
    _check_period(start, end)
    keys = (criteria or default_criteria()).keys
    stmt = select(
        Scorecard.conversation_id,
        StaffUser.username,
        Scorecard.score,
        Scorecard.scores,
        Scorecard.comment,
        Scorecard.created_at,
        Scorecard.updated_at,
    ).join(StaffUser, StaffUser.id == Scorecard.reviewer_id)
    stmt = _in_period(stmt, start, end).order_by(Scorecard.created_at, Scorecard.id)
    result = session.execute(
        stmt.execution_options(stream_results=True, yield_per=batch_size)
    )
    for row in result:
        scores = row.scores if isinstance(row.scores, dict) else {}
        yield (
            row.conversation_id,
            row.username,
            row.score,
            *(scores.get(key) for key in keys),
            row.comment,
            row.created_at,
            row.updated_at,
        )


def _check_period(start: dt.datetime | None, end: dt.datetime | None) -> None:
    for name, moment in (("start", start), ("end", end)):
        if moment is not None and not isinstance(moment, dt.datetime):
            raise InvalidInput(f"the period's {name} must be a date and time")
    if start is not None and end is not None and _naive_utc(start) >= _naive_utc(end):
        raise InvalidInput("the period's start must be before its end")


def _in_period(stmt: Any, start: dt.datetime | None, end: dt.datetime | None) -> Any:
    if start is not None:
        stmt = stmt.where(Scorecard.created_at >= _naive_utc(start))
    if end is not None:
        stmt = stmt.where(Scorecard.created_at < _naive_utc(end))
    return stmt
