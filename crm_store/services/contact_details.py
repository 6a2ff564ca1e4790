"""Contact details a verified customer may change: email address and phone number.

A change is a two-step affair (:func:`request_contact_change`, then
:func:`confirm_contact_change`): the new address gets a one-time code and stays a
*pending change* (the code row) until the customer types that code; only then
does it become the customer's address and a verified channel identity. The old
address is told at the time of the request. Both steps need a strong, recent
verification (:func:`recent_strong_verification`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.errors import InvalidInput, NotFound, StoreError
from crm_store.models import AuditLog, ChannelIdentity, Customer, utcnow
from crm_store.services.consents import sms_allowed
from crm_store.services.normalize import mask, normalize_identity
from crm_store.services.notifier import Notifier
from crm_store.services.one_time_codes import (
    CODE_TTL,
    CodeCheck,
    check_code,
    issue_code,
)

FIELDS = ("email", "phone")
# Verification methods that only prove control of a phone line (caller id).
CALLER_ID_METHODS = ("identity:phone",)
# Verifications strong enough for changes (contact details, cancellations,
# returns): order number + delivery postcode, or a registered channel identity
# that is not a phone line (caller id can be spoofed or the phone borrowed), or
# a one-time code sent to the registered e-mail (``code:login``).
STRONG_METHODS = (
    "order_postcode",
    "code:login",
    "identity:email",
    "identity:telegram",
    "identity:webchat",
)
LABELS = {"email": "e-mail address", "phone": "phone number"}
CHANNEL_OF = {"email": "email", "phone": "sms"}


class IdentityInUse(StoreError):
    """The new address is registered to another customer."""

    default_message = "That address is already in use on another account."


class RecipientOptedOut(StoreError):
    """The new phone number replied STOP to our texts: no code can be sent to it."""

    default_message = "That number has opted out of our text messages."


class StepUpRequired(StoreError):
    """The change needs a stronger verification than the sender has."""

    default_message = "This change needs additional verification."


class SameAsCurrent(StoreError):
    """The new address is the one already on the account."""

    default_message = "That address is already on your account."


@dataclass(frozen=True)
class PendingChange:
    """A requested change waiting for its code: the field and masked new value."""

    field: str
    masked_value: str
    notified_old: bool


def recent_strong_verification(
    *,
    method: str | None,
    verified_at: float | None,
    max_age_minutes: float,
    now: float,
) -> bool:
    """Tell whether a verification may authorise a change.

    Args:
        method: how the sender was verified (``order_postcode``, ``identity:<kind>``).
        verified_at: when, as Unix epoch seconds (UTC); None counts as never.
        max_age_minutes: the step-up window (``CRM_STEP_UP_MINUTES``).
        now: the current Unix time.
    """
    if method not in STRONG_METHODS:
        return False
    if isinstance(verified_at, bool) or not isinstance(verified_at, (int, float)):
        return False
    age = now - float(verified_at)
    return -60 <= age <= max_age_minutes * 60


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
    old identity of that kind is re-pointed to the new value, verified: callers
    must have proven the new address first (the bot: :func:`confirm_contact_change`
    after the one-time code; staff: their own check).

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
    _audit(
        session,
        action=f"customer.update_{field}",
        customer_id=customer_id,
        field=field,
        old=old,
        new=canonical,
        actor=actor,
        verification_method=verification_method,
        at=at,
    )
    session.flush()
    return customer


def _audit(
    session: Session,
    *,
    action: str,
    customer_id: str,
    field: str,
    old: str | None,
    new: str,
    actor: str,
    verification_method: str | None,
    at: dt.datetime,
) -> None:
    """Add the audit row of a contact change (addresses masked)."""
    session.add(
        AuditLog(
            occurred_at=at,
            actor=actor,
            action=action,
            entity_type="customer",
            entity_id=customer_id,
            details={
                "from": mask(field, old) if old else None,
                "to": mask(field, new),
                "verification": verification_method,
            },
        )
    )


def _purpose(field: str) -> str:
    return f"change_{field}"


def request_contact_change(
    session: Session,
    *,
    customer_id: str,
    field: str,
    value: str,
    actor: str,
    verification_method: str | None,
    verified_at: float | None,
    step_up_minutes: float,
    notifier: Notifier | None = None,
    now: dt.datetime | None = None,
) -> PendingChange:
    """Start changing a customer's email or phone: code to the new, notice to the old.

    Nothing about the customer changes yet: the new value waits in a one-time
    code row (purpose ``change_<field>``) until :func:`confirm_contact_change`.

    Raises:
        InvalidInput: unknown field, malformed value, missing actor.
        StepUpRequired: the verification is not strong and recent.
        RecipientOptedOut: a new phone number that replied STOP (no code sent).
        SameAsCurrent: the value is already the customer's.
        IdentityInUse: another customer owns that address.
        NotFound: unknown customer.
        TooManyCodes: too many codes requested in the last hour.
    """
    if field not in FIELDS:
        raise InvalidInput(f"field must be one of {FIELDS}")
    if not actor:
        raise InvalidInput("actor is required for an audited change")
    if not recent_strong_verification(
        method=verification_method,
        verified_at=verified_at,
        max_age_minutes=step_up_minutes,
        now=(now or utcnow()).replace(tzinfo=dt.timezone.utc).timestamp(),
    ):
        raise StepUpRequired()
    canonical = normalize_identity(field, value)
    customer = session.get(Customer, customer_id)
    if customer is None or customer.erased_at is not None:
        raise NotFound(f"customer {customer_id} not found")
    old = getattr(customer, field)
    if old == canonical:
        raise SameAsCurrent()
    if field == "phone" and not sms_allowed(session, phone=canonical):
        raise RecipientOptedOut()
    taken = session.execute(
        select(ChannelIdentity.customer_id).where(
            ChannelIdentity.kind == field, ChannelIdentity.value == canonical
        )
    ).scalar_one_or_none()
    if taken is not None and taken != customer_id:
        raise IdentityInUse()
    at = now or utcnow()
    notifier = notifier or Notifier()
    code = issue_code(
        session,
        customer_id=customer_id,
        purpose=_purpose(field),
        kind=field,
        value=canonical,
        now=at,
    )
    label = LABELS[field]
    minutes = int(CODE_TTL.total_seconds() // 60)
    notifier.notify(
        session,
        customer_id=customer_id,
        channel=CHANNEL_OF[field],
        recipient=canonical,
        purpose="contact_change_code",
        subject="Your Northwind Goods verification code",
        body=(
            f"Your Northwind Goods code is {code}. Type it in the chat to confirm "
            f"this {label} for your account. It expires in {minutes} minutes. "
            "If you didn't ask for this, ignore this message."
        ),
        now=at,
    )
    if old:
        # An old number that replied STOP gets no text: the notice goes to the
        # account's e-mail instead (the customer is told another way).
        channel, recipient = CHANNEL_OF[field], old
        if field == "phone" and not sms_allowed(session, phone=old) and customer.email:
            channel, recipient = "email", customer.email
        notifier.notify(
            session,
            customer_id=customer_id,
            channel=channel,
            recipient=recipient,
            purpose="contact_change_notice",
            subject="Your contact details are being changed",
            body=(
                f"Someone asked to change the {label} on your Northwind Goods "
                f"account to {mask(field, canonical)}. If this wasn't you, "
                "contact us right away so we can stop the change."
            ),
            now=at,
        )
    _audit(
        session,
        action=f"customer.request_update_{field}",
        customer_id=customer_id,
        field=field,
        old=old,
        new=canonical,
        actor=actor,
        verification_method=verification_method,
        at=at,
    )
    session.flush()
    return PendingChange(field, mask(field, canonical), bool(old))


def confirm_contact_change(
    session: Session,
    *,
    customer_id: str,
    field: str,
    code: str,
    actor: str,
    now: dt.datetime | None = None,
) -> CodeCheck:
    """Check the code typed for a pending change; on success, apply the change.

    The new value comes from the code row, never from the caller, so only the
    address the code was sent to can be confirmed. See :func:`check_code` for
    the outcomes; on ``ok`` the customer's address and verified identity are
    updated by :func:`update_contact_detail` (audited, ``verification`` =
    ``code:<field>``).

    Raises:
        InvalidInput: unknown field or a code that is not 6 digits.
        IdentityInUse: another customer took the address meanwhile.
    """
    if field not in FIELDS:
        raise InvalidInput(f"field must be one of {FIELDS}")
    result = check_code(
        session, customer_id=customer_id, purpose=_purpose(field), code=code, now=now
    )
    if result.status == "ok":
        update_contact_detail(
            session,
            customer_id=customer_id,
            field=result.kind or field,
            value=result.value or "",
            actor=actor,
            verification_method=f"code:{field}",
            at=now,
        )
    return result
