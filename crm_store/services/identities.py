"""Find customers by channel identity; create and link prospects."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput, NotFound
from crm_store.models import AuditLog, ChannelIdentity, Customer, utcnow
from crm_store.services.normalize import normalize_identity


@dataclass(frozen=True)
class IdentityMatch:
    """Who a channel identity belongs to, and whether it is verified."""

    customer_id: str
    identity_id: int
    verified: bool
    is_prospect: bool


def find_customer_by_identity(
    session: Session, *, kind: str, value: str
) -> IdentityMatch | None:
    """Return the customer behind a channel identity, or ``None`` if unknown."""
    canonical = normalize_identity(kind, value)
    row = session.execute(
        select(ChannelIdentity, Customer.is_prospect)
        .join(Customer, Customer.id == ChannelIdentity.customer_id)
        .where(ChannelIdentity.kind == kind, ChannelIdentity.value == canonical)
    ).first()
    if row is None:
        return None
    identity, is_prospect = row
    return IdentityMatch(
        identity.customer_id, identity.id, identity.verified, is_prospect
    )


def resolve_identity(session: Session, *, kind: str, value: str) -> IdentityMatch:
    """Return the customer behind an identity, creating a prospect if unknown.

    Concurrent first contacts from the same identity create one prospect: the
    unique (kind, value) constraint decides, and the loser re-reads the winner.
    """
    found = find_customer_by_identity(session, kind=kind, value=value)
    if found is not None:
        return found
    canonical = normalize_identity(kind, value)
    prospect = Customer(id=f"P{uuid.uuid4().hex[:12].upper()}", is_prospect=True)
    try:
        with session.begin_nested():
            session.add(prospect)
            session.flush()
            identity = ChannelIdentity(
                kind=kind, value=canonical, customer_id=prospect.id, verified=False
            )
            session.add(identity)
            session.flush()
    except IntegrityError:
        found = find_customer_by_identity(session, kind=kind, value=value)
        if found is None:
            raise
        return found
    return IdentityMatch(prospect.id, identity.id, False, True)


def link_identity(
    session: Session,
    *,
    kind: str,
    value: str,
    customer_id: str,
    actor: str,
    verified: bool = False,
) -> IdentityMatch:
    """Move an identity to ``customer_id`` (e.g. a prospect found to be a customer).

    The previous owner is recorded in the audit log so the link can be undone
    with another ``link_identity`` call.
    """
    if not actor:
        raise InvalidInput("actor is required for an audited change")
    canonical = normalize_identity(kind, value)
    if session.get(Customer, customer_id) is None:
        raise NotFound(f"customer {customer_id} not found")
    identity = session.execute(
        select(ChannelIdentity).where(
            ChannelIdentity.kind == kind, ChannelIdentity.value == canonical
        )
    ).scalar_one_or_none()
    previous = identity.customer_id if identity else None
    if identity is None:
        identity = ChannelIdentity(kind=kind, value=canonical, customer_id=customer_id)
        session.add(identity)
    identity.customer_id = customer_id
    identity.verified = verified
    session.flush()
    session.add(
        AuditLog(
            occurred_at=utcnow(),
            actor=actor,
            action="identity.link",
            entity_type="channel_identity",
            entity_id=str(identity.id),
            details={"from": previous, "to": customer_id, "kind": kind},
        )
    )
    return IdentityMatch(customer_id, identity.id, verified, False)
