"""Customer profile reads (for staff, and masked for the customers themselves)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from crm_store.errors import NotFound
from crm_store.models import ChannelIdentity, Customer, Order
from crm_store.services.normalize import mask


@dataclass(frozen=True)
class IdentityView:
    """A channel identity as shown to staff."""

    kind: str
    value: str
    verified: bool


@dataclass(frozen=True)
class CustomerProfile:
    """A customer's profile with identities and order totals."""

    id: str
    name: str
    email: str | None
    phone: str | None
    postcode: str | None
    preferred_channel: str | None
    is_prospect: bool
    created_at: object
    order_count: int
    identities: list[IdentityView] = field(default_factory=list)


def get_customer(session: Session, *, customer_id: str) -> Customer:
    """Return the customer or raise ``NotFound``."""
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise NotFound(f"customer {customer_id} not found")
    return customer


def customer_profile(session: Session, *, customer_id: str) -> CustomerProfile:
    """Return a customer's profile, identities and order count."""
    customer = get_customer(session, customer_id=customer_id)
    identities = session.execute(
        select(ChannelIdentity)
        .where(ChannelIdentity.customer_id == customer_id)
        .order_by(ChannelIdentity.kind, ChannelIdentity.value)
    ).scalars()
    order_count = session.execute(
        select(func.count()).select_from(Order).where(Order.customer_id == customer_id)
    ).scalar_one()
    return CustomerProfile(
        id=customer.id,
        name=customer.display_name,
        email=customer.email,
        phone=customer.phone,
        postcode=customer.postcode,
        preferred_channel=customer.preferred_channel,
        is_prospect=customer.is_prospect,
        created_at=customer.created_at,
        order_count=order_count,
        identities=[IdentityView(i.kind, i.value, i.verified) for i in identities],
    )


def search_customers(
    session: Session, *, query: str, limit: int = 20
) -> list[Customer]:
    """Find customers whose id, name, email or phone contains ``query``."""
    needle = f"%{query.strip().lower()}%"
    stmt = (
        select(Customer)
        .where(
            or_(
                func.lower(Customer.id).like(needle),
                func.lower(Customer.first_name + " " + Customer.last_name).like(needle),
                func.lower(Customer.email).like(needle),
                Customer.phone.like(needle),
            )
        )
        .order_by(Customer.id)
        .limit(limit)
    )
    return list(session.execute(stmt).scalars())


def customer_first_name(session: Session, *, customer_id: str) -> str | None:
    """Return the customer's first name, or None for an unknown customer."""
    customer = session.get(Customer, customer_id)
    return customer.first_name if customer is not None else None


@dataclass(frozen=True)
class ContactOnFile:
    """The contact details a verified customer may see about themselves, masked.

    E-mail and phone receive one-time codes, and the postcode proves orders, so
    none of them is shown in full: enough to recognise, not enough to misuse.
    """

    email: str | None
    phone: str | None
    postcode: str | None
    telegram_linked: bool


def mask_postcode(postcode: str | None) -> str | None:
    """Mask a postcode for display: ``5500 LE`` -> ``5500 L*``, ``1000`` -> ``10**``."""
    if not postcode:
        return None
    digits, _, letters = postcode.strip().partition(" ")
    if letters:
        return f"{digits} {letters[:1]}{'*' * (len(letters) - 1)}"
    return digits[:2] + "*" * (len(digits) - 2)


def contact_on_file(session: Session, *, customer_id: str) -> ContactOnFile:
    """Return the customer's own contact details, masked (``ContactOnFile``).

    Raises:
        NotFound: no such customer.
    """
    customer = get_customer(session, customer_id=customer_id)
    telegram = session.execute(
        select(func.count())
        .select_from(ChannelIdentity)
        .where(
            ChannelIdentity.customer_id == customer_id,
            ChannelIdentity.kind == "telegram",
        )
    ).scalar_one()
    return ContactOnFile(
        email=mask("email", customer.email) if customer.email else None,
        phone=mask("phone", customer.phone) if customer.phone else None,
        postcode=mask_postcode(customer.postcode),
        telegram_linked=bool(telegram),
    )
