"""Console staff: accounts, password logins with throttling, and sessions.

Passwords are bcrypt hashes (passlib). A login is refused (``LoginThrottled``)
while the username has ``max_failures`` failed logins within ``lock_minutes``, or
the client address ``CLIENT_FACTOR`` times as many (one office or proxy serves
many agents), even with the right password; a successful login
clears the username's count (not the address's). Every login and failed login
is an ``audit_log`` row (actions ``login`` / ``login_failed``, details
``{"ip"}``; the address is matched by its salted hash, IPv6 per /64).

Sessions: the token is handed out once; only its SHA-256 is stored, with a
CSRF token for the cookie session.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
import secrets
from dataclasses import dataclass
from functools import cache

from passlib.context import CryptContext
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crm_store.errors import Conflict, InvalidInput, LoginFailed, LoginThrottled
from crm_store.models import AuditLog, StaffSession, StaffUser, utcnow
from crm_store.services.verification import client_key_for

# A client address may fail this many times the per-user limit.
CLIENT_FACTOR = 4

ROLES = ("agent", "manager", "admin")
USERNAME = re.compile(r"^[a-z0-9._-]{3,64}$")
MIN_PASSWORD = 10
MAX_PASSWORD_BYTES = 72  # bcrypt ignores anything longer
DEMO_STAFF = (("admin", "admin"), ("manager", "manager"), ("agent", "agent"))
TOUCH_EVERY = dt.timedelta(minutes=1)
UNKNOWN_CLIENT = "unknown"

_context = CryptContext(schemes=["bcrypt"], deprecated="auto")


def role_at_least(role: str, needed: str) -> bool:
    """Tell whether ``role`` ranks at or above ``needed`` (agent < manager < admin).

    Raises:
        InvalidInput: ``needed`` is not a role (unknown ``role`` ranks nowhere).
    """
    if needed not in ROLES:
        raise InvalidInput(f"role must be one of {ROLES}")
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def _check_password(password: object) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise InvalidInput(f"a password has at least {MIN_PASSWORD} characters")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise InvalidInput(f"a password has at most {MAX_PASSWORD_BYTES} bytes")
    return password


def hash_password(password: str) -> str:
    """Return the bcrypt hash of a valid password (>= 10 characters, <= 72 bytes)."""
    return _context.hash(_check_password(password))


@cache
def _dummy_hash() -> str:
    return _context.hash(secrets.token_urlsafe(16))


def _check_username(username: object) -> str:
    if not isinstance(username, str) or not USERNAME.match(username):
        raise InvalidInput(
            "a username has 3-64 characters: lowercase letters, digits, '.', '_', '-'"
        )
    return username


@dataclass(frozen=True)
class StaffAccount:
    """A console user as plain values (no secrets)."""

    id: int
    username: str
    role: str


def create_staff(
    session: Session, *, username: str, password: str, role: str
) -> StaffAccount:
    """Create an active console user.

    Raises:
        InvalidInput: bad username, short password or unknown role.
        Conflict: the username is taken.
    """
    _check_username(username)
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {ROLES}")
    hashed = hash_password(password)
    taken = session.execute(
        select(StaffUser.id).where(StaffUser.username == username)
    ).first()
    if taken is not None:
        raise Conflict(f"a staff user named {username} already exists")
    staff = StaffUser(username=username, password_hash=hashed, role=role, active=True)
    try:
        with session.begin_nested():
            session.add(staff)
            session.flush()
    except IntegrityError:
        raise Conflict(f"a staff user named {username} already exists") from None
    return StaffAccount(staff.id, staff.username, staff.role)


def ensure_demo_staff(session: Session, password: str) -> list[str]:
    """Create or reset ``admin``, ``manager`` and ``agent`` with ``password``.

    Existing demo users get the new hash, their role back and are reactivated.
    Returns the usernames.
    """
    hashed = hash_password(password)
    names = []
    for username, role in DEMO_STAFF:
        staff = session.execute(
            select(StaffUser).where(StaffUser.username == username)
        ).scalar_one_or_none()
        if staff is None:
            session.add(
                StaffUser(
                    username=username, password_hash=hashed, role=role, active=True
                )
            )
        else:
            staff.password_hash = hashed
            staff.role = role
            staff.active = True
        names.append(username)
    session.flush()
    return names


def _retry_after(
    session: Session,
    condition: object,
    *,
    since: dt.datetime,
    now: dt.datetime,
    max_failures: int,
    lock: dt.timedelta,
) -> float | None:
    """Seconds until fewer than ``max_failures`` failures match, or None if fewer."""
    nth = session.execute(
        select(AuditLog.occurred_at)
        .where(
            AuditLog.action == "login_failed",
            condition,
            AuditLog.occurred_at > since,
            AuditLog.occurred_at <= now,
        )
        .order_by(AuditLog.occurred_at.desc())
        .offset(max_failures - 1)
        .limit(1)
    ).scalar_one_or_none()
    if nth is None:
        return None
    return max((nth + lock - now).total_seconds(), 1.0)


def authenticate(
    session: Session,
    *,
    username: str,
    password: str,
    client_ip: str | None,
    now: dt.datetime | None = None,
    max_failures: int = 5,
    lock_minutes: float = 15,
) -> StaffAccount:
    """Check a console login; record it in ``audit_log``.

    The failure is recorded in ``session`` before ``LoginFailed`` is raised:
    the caller must commit even then, or the throttle never counts it.

    Raises:
        LoginThrottled: too many recent failures for the username or the client
            address (checked first, even when the password is right).
        LoginFailed: unknown or inactive user, or wrong password (one message;
            unknown users cost a hash check too).
    """
    if max_failures < 1 or lock_minutes <= 0:
        raise InvalidInput("max_failures >= 1 and lock_minutes > 0 are required")
    now = now or utcnow()
    lock = dt.timedelta(minutes=lock_minutes)
    name = (username or "").strip().lower()[:64] if isinstance(username, str) else ""
    client = client_key_for(client_ip) or UNKNOWN_CLIENT
    staff = (
        session.execute(select(StaffUser).where(StaffUser.username == name))
        .scalars()
        .first()
        if name
        else None
    )
    user_since = now - lock
    if staff is not None and staff.last_login_at and staff.last_login_at > user_since:
        user_since = staff.last_login_at
    waits = [
        _retry_after(
            session,
            AuditLog.actor == name,
            since=user_since,
            now=now,
            max_failures=max_failures,
            lock=lock,
        ),
        _retry_after(
            session,
            (AuditLog.entity_type == "client") & (AuditLog.entity_id == client),
            since=now - lock,
            now=now,
            max_failures=max_failures * CLIENT_FACTOR,
            lock=lock,
        ),
    ]
    blocked = [w for w in waits if w is not None]
    if blocked:
        raise LoginThrottled(math.ceil(max(blocked)))
    given = password if isinstance(password, str) else ""
    known = staff is not None and staff.active
    hashed = staff.password_hash if known else _dummy_hash()
    try:
        ok = _context.verify(given, hashed)
    except ValueError:  # e.g. passlib's size limit on absurdly long input
        ok = False
    ip = client_ip[:64] if isinstance(client_ip, str) else None
    if not (ok and known):
        session.add(
            AuditLog(
                occurred_at=now,
                actor=name or "-",
                action="login_failed",
                entity_type="client",
                entity_id=client,
                details={"ip": ip},
            )
        )
        session.flush()
        raise LoginFailed()
    staff.last_login_at = now
    session.add(
        AuditLog(
            occurred_at=now,
            actor=staff.username,
            action="login",
            entity_type="staff_user",
            entity_id=str(staff.id),
            details={"ip": ip},
        )
    )
    session.flush()
    return StaffAccount(staff.id, staff.username, staff.role)


@dataclass(frozen=True)
class StaffIdentity:
    """A logged-in console user and their session."""

    staff_id: int
    username: str
    role: str
    session_id: int
    csrf_token: str
    expires_at: dt.datetime


def token_hash(token: str) -> str:
    """The stored form of a session token (SHA-256 hex)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def open_session(
    session: Session, staff_id: int, *, hours: float, now: dt.datetime | None = None
) -> tuple[str, StaffIdentity]:
    """Start a console session; return the token (shown once) and the identity.

    The staff user's expired sessions are deleted on the way.

    Raises:
        InvalidInput: ``hours`` not in (0, 168], or no such active staff user.
    """
    if not isinstance(hours, int | float) or not 0 < hours <= 168:
        raise InvalidInput("session hours must be in (0, 168]")
    staff = session.get(StaffUser, staff_id)
    if staff is None or not staff.active:
        raise InvalidInput(f"staff user {staff_id} not found or inactive")
    now = now or utcnow()
    session.execute(
        delete(StaffSession)
        .where(StaffSession.staff_id == staff.id, StaffSession.expires_at <= now)
        .execution_options(synchronize_session="fetch")
    )
    token = secrets.token_urlsafe(32)
    row = StaffSession(
        token_hash=token_hash(token),
        staff_id=staff.id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + dt.timedelta(hours=hours),
        last_seen_at=now,
    )
    session.add(row)
    session.flush()
    return token, StaffIdentity(
        staff.id, staff.username, staff.role, row.id, row.csrf_token, row.expires_at
    )


def identity_for_token(
    session: Session, token: str | None, *, now: dt.datetime | None = None
) -> StaffIdentity | None:
    """Return who holds ``token``; None if unknown, expired or the user inactive.

    ``last_seen_at`` is updated at most once a minute (cheap on every request).
    """
    if not isinstance(token, str) or not token or len(token) > 256:
        return None
    now = now or utcnow()
    row = session.execute(
        select(StaffSession, StaffUser)
        .join(StaffUser, StaffUser.id == StaffSession.staff_id)
        .where(StaffSession.token_hash == token_hash(token))
    ).first()
    if row is None:
        return None
    found, staff = row
    if found.expires_at <= now or not staff.active:
        return None
    if now - found.last_seen_at >= TOUCH_EVERY:
        found.last_seen_at = now
        session.flush()
    return StaffIdentity(
        staff.id,
        staff.username,
        staff.role,
        found.id,
        found.csrf_token,
        found.expires_at,
    )


def close_session(session: Session, token: str | None) -> bool:
    """End the session of ``token`` (log out); tell whether there was one."""
    if not isinstance(token, str) or not token:
        return False
    result = session.execute(
        delete(StaffSession)
        .where(StaffSession.token_hash == token_hash(token))
        .execution_options(synchronize_session="fetch")
    )
    return bool(result.rowcount)


def agents_online(
    session: Session, *, now: dt.datetime | None = None, minutes: float = 5
) -> int:
    """Count staff (any role) with a live session seen in the last ``minutes``."""
    now = now or utcnow()
    return session.execute(
        select(func.count(func.distinct(StaffSession.staff_id)))
        .join(StaffUser, StaffUser.id == StaffSession.staff_id)
        .where(
            StaffUser.active.is_(True),
            StaffSession.expires_at > now,
            StaffSession.last_seen_at >= now - dt.timedelta(minutes=minutes),
        )
    ).scalar_one()
