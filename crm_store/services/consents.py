"""SMS consent per phone number: STOP and START as carriers expect.

An opt-out belongs to the phone number's customer (a prospect is made for an
unknown number), as a ``consents`` row of kind ``sms``. Nothing may be texted to
a number whose customer has ``granted = False`` until it sends START again.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.models import Consent, utcnow
from crm_store.services.identities import find_customer_by_identity, resolve_identity

SMS = "sms"


def set_sms_consent(
    session: Session,
    *,
    phone: str,
    granted: bool,
    source: str,
    at: dt.datetime | None = None,
) -> str:
    """Record STOP (``granted=False``) or START for ``phone``; return the customer id.

    Raises:
        InvalidInput: not a phone number.
    """
    match = resolve_identity(session, kind="phone", value=phone)
    row = session.execute(
        select(Consent).where(
            Consent.customer_id == match.customer_id, Consent.kind == SMS
        )
    ).scalar_one_or_none()
    if row is None:
        row = Consent(customer_id=match.customer_id, kind=SMS)
        session.add(row)
    row.granted = granted
    row.source = source[:32]
    row.updated_at = at or utcnow()
    session.flush()
    return match.customer_id


def sms_allowed(session: Session, *, phone: str) -> bool:
    """False when the number's customer sent STOP (and no START since).

    Raises:
        InvalidInput: not a phone number.
    """
    match = find_customer_by_identity(session, kind="phone", value=phone)
    if match is None:
        return True
    granted = session.execute(
        select(Consent.granted).where(
            Consent.customer_id == match.customer_id, Consent.kind == SMS
        )
    ).scalar_one_or_none()
    return granted is not False
