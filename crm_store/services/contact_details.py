"""Contact details a verified customer may change: email address and phone number."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput, NotFound, StoreError
from crm_store.models import AuditLog, ChannelIdentity, Customer, utcnow
from crm_store.services.normalize import mask, normalize_identity

FIELDS = ("email", "phone")
# Verification methods that only prove control of a phone line (caller id).
CALLER_ID_METHODS = ("identity:phone",)


class IdentityInUse(StoreError):
    """The new address is registered to another customer."""

    default_message = "That address is already in use on another account."


class StepUpRequired(StoreError):
    """The change needs a stronger verification than the sender has."""

    default_message = "This change needs additional verification."


def change_requires_step_up(*, verification_method: str | None, field: str) -> bool:
    """Tell whether changing ``field`` needs more than the current verification.

    Caller id (SMS/voice) alone may not change the phone number it proves: whoever
    holds the line could otherwise lock the real owner out. Order number plus
    postcode, or a registered email/Telegram identity, is enough.
    """
    return field == "phone" and verification_method in CALLER_ID_METHODS


def update_contact_detail(
    session: Session,
    *,
    customer_id: str,
    field: str,
    value: str,
    actor: str,
    verification_method: str | None = None,
    at: dt.datetime | None = None,
) -> Customer:
    """Change a customer's email or phone, keep the channel identity in step, audit it.

    The new value is normalised (lower-case email, E.164 phone). The customer's
    old identity of that kind is re-pointed to the new value, verified, since
    the customer asked for it while verified.

    Raises:
        InvalidInput: unknown field or malformed value.
        StepUpRequired: see :func:`change_requires_step_up`.
        IdentityInUse: another customer owns that address.
        NotFound: unknown customer.
    """
    if field not in FIELDS:
        raise InvalidInput(f"field must be one of {FIELDS}")
    if not actor:
        raise InvalidInput("actor is required for an audited change")
    if change_requires_step_up(verification_method=verification_method, field=field):
        raise StepUpRequired()
    canonical = normalize_identity(field, value)
    customer = session.get(Customer, customer_id)
    if customer is None or customer.erased_at is not None:
        raise NotFound(f"customer {customer_id} not found")
    taken = session.execute(
        select(ChannelIdentity).where(
            ChannelIdentity.kind == field, ChannelIdentity.value == canonical
        )
    ).scalar_one_or_none()
    if taken is not None and taken.customer_id != customer_id:
        raise IdentityInUse()
    at = at or utcnow()
    old = getattr(customer, field)
    setattr(customer, field, canonical)
    if taken is None:
        current = (
            session.execute(
                select(ChannelIdentity).where(
                    ChannelIdentity.customer_id == customer_id,
                    ChannelIdentity.kind == field,
                    ChannelIdentity.value == old,
                )
            ).scalar_one_or_none()
            if old
            else None
        )
        if current is not None:
            current.value = canonical
            current.verified = True
        else:
            session.add(
                ChannelIdentity(
                    kind=field,
                    value=canonical,
                    customer_id=customer_id,
                    verified=True,
                    created_at=at,
                )
            )
    session.add(
        AuditLog(
            occurred_at=at,
            actor=actor,
            action=f"customer.update_{field}",
            entity_type="customer",
            entity_id=customer_id,
            details={
                "from": mask(field, old) if old else None,
                "to": mask(field, canonical),
                "verification": verification_method,
            },
        )
    )
    session.flush()
    return customer
