"""De-duplication of inbound channel items (table ``channel_receipts``).

Telegram re-delivers updates, mail servers re-send messages, Twilio retries
webhooks. A channel claims the item's id (``update_id``, ``Message-ID``,
``MessageSid``) before it acts; the first claim wins, in the store, so a
re-delivery is handled once across restarts and across several processes.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete
from sqlalchemy.orm import Session

from crm_store.db import dialect_insert
from crm_store.errors import InvalidInput
from crm_store.models import ChannelReceipt, utcnow

MAX_CHANNEL = 16
MAX_EXTERNAL_ID = 255


def _checked(channel: object, external_id: object) -> tuple[str, str]:
    if not isinstance(channel, str) or not 0 < len(channel) <= MAX_CHANNEL:
        raise InvalidInput(f"a receipt channel is 1 to {MAX_CHANNEL} characters")
    if not isinstance(external_id, str) or not 0 < len(external_id) <= MAX_EXTERNAL_ID:
        raise InvalidInput(f"a receipt id is 1 to {MAX_EXTERNAL_ID} characters")
    return channel, external_id


def claim_receipt(
    session: Session,
    *,
    channel: str,
    external_id: str,
    at: dt.datetime | None = None,
) -> bool:
    """Record that ``channel`` received ``external_id``; False if it had already.

    Safe under concurrency: the insert ignores a duplicate key and its row
    count tells which caller won. The caller commits.

    Raises:
        InvalidInput: an empty or over-long channel or id.
    """
    channel, external_id = _checked(channel, external_id)
    insert = dialect_insert(session)(ChannelReceipt.__table__).values(
        channel=channel, external_id=external_id, received_at=at or utcnow()
    )
    result = session.execute(
        insert.on_conflict_do_nothing(index_elements=["channel", "external_id"])
    )
    return (result.rowcount or 0) == 1


def release_receipt(session: Session, *, channel: str, external_id: str) -> bool:
    """Forget a claim, so a re-delivery is handled (after a temporary failure).

    Returns whether a receipt was removed.
    """
    channel, external_id = _checked(channel, external_id)
    result = session.execute(
        delete(ChannelReceipt).where(
            ChannelReceipt.channel == channel,
            ChannelReceipt.external_id == external_id,
        )
    )
    return (result.rowcount or 0) > 0


def prune_receipts(session: Session, *, older_than: dt.datetime) -> int:
    """Delete receipts received before ``older_than``; return how many."""
    result = session.execute(
        delete(ChannelReceipt).where(ChannelReceipt.received_at < older_than)
    )
    return result.rowcount or 0
