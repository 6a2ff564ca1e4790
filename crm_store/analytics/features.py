"""Load the analytics inputs with a few aggregate SELECTs into pandas frames.

Only per-customer aggregates leave the database for orders (one GROUP BY), so a
refresh of a million customers moves a million rows, not every order. Contacts are
one row per conversation plus the few customer messages flagged as complaints or
unresolved.
"""

from __future__ import annotations

import datetime as dt
import io

import pandas as pd
from sqlalchemy import Float, Integer, and_, case, cast, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from crm_store.models import Conversation, Customer, Interaction, Order

#: Orders that do not count as purchases at all.
PURCHASE_EXCLUDED = ("cancelled",)
#: Purchases whose value the customer did not keep (no spend, no margin).
NOT_KEPT = ("cancelled", "returned")
#: Customer intents that count as complaints in the contact history.
COMPLAINT_INTENTS = ("complaint", "damaged_item", "delivery_delay")
#: Conversation outcomes meaning the customer's issue was not resolved.
UNRESOLVED_OUTCOMES = ("abandoned", "unresolved")
LOW_CSAT = 2


def read_frame(session: Session, stmt: Select) -> pd.DataFrame:
    """Run ``stmt`` and return its rows as a DataFrame (column names = labels).

    On PostgreSQL the rows travel as CSV through ``COPY (...) TO STDOUT``, several
    times faster than row objects for a million rows; values then come back as
    text and are typed by the callers (``pd.to_datetime``, ``astype``).
    """
    columns = list(stmt.selected_columns.keys())
    if session.get_bind().dialect.name != "postgresql":
        return pd.DataFrame(session.execute(stmt).all(), columns=columns)
    connection = session.connection()
    compiled = stmt.compile(
        dialect=connection.dialect, compile_kwargs={"render_postcompile": True}
    )
    cursor = connection.connection.cursor()
    buffer = io.StringIO()
    try:
        sql = cursor.mogrify(str(compiled), compiled.params).decode()
        cursor.copy_expert(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", buffer)
    finally:
        cursor.close()
    buffer.seek(0)
    if not buffer.getvalue():
        return pd.DataFrame(columns=columns)
    ids = {name: str for name in columns if name.endswith("id")}
    return pd.read_csv(buffer, names=columns, header=None, dtype=ids, na_values=[""])


def newest_order_time(session: Session) -> dt.datetime | None:
    """Return when the newest order was placed, or None when there are no orders."""
    return session.execute(select(func.max(Order.placed_at))).scalar()


def load_customers(session: Session) -> pd.DataFrame:
    """Return the customers to score (not erased), indexed by id."""
    frame = read_frame(
        session,
        select(
            Customer.id.label("customer_id"), Customer.created_at, Customer.is_prospect
        ).where(Customer.erased_at.is_(None)),
    )
    frame["created_at"] = pd.to_datetime(frame["created_at"], format="ISO8601")
    frame["is_prospect"] = frame["is_prospect"].isin([True, 1, "t", "true"])
    return frame.set_index("customer_id").sort_index()


def load_order_summary(
    session: Session, *, until: dt.datetime, recent_days: int = 365
) -> pd.DataFrame:
    """Aggregate each customer's orders placed before ``until``.

    Columns: orders (all), purchases (not cancelled; returned orders still show
    the customer is active), first_purchase, last_purchase, kept (purchases
    neither cancelled nor returned), spend (subtotals of kept purchases),
    spend_recent (kept spend in the last ``recent_days``), returned, cancelled,
    last_update (for the input hash).
    """
    valid = Order.status.notin_(PURCHASE_EXCLUDED)
    kept = Order.status.notin_(NOT_KEPT)
    recent = until - dt.timedelta(days=recent_days)
    money = cast(Order.subtotal, Float)
    stmt = (
        select(
            Order.customer_id,
            func.count().label("orders"),
            func.sum(case((valid, 1), else_=0)).label("purchases"),
            func.sum(case((kept, 1), else_=0)).label("kept"),
            func.sum(case((kept, money), else_=0.0)).label("spend"),
            func.min(case((valid, Order.placed_at))).label("first_purchase"),
            func.max(case((valid, Order.placed_at))).label("last_purchase"),
            func.sum(
                case((and_(kept, Order.placed_at >= recent), money), else_=0.0)
            ).label("spend_recent"),
            func.sum(case((Order.status == "returned", 1), else_=0)).label("returned"),
            func.sum(case((Order.status == "cancelled", 1), else_=0)).label(
                "cancelled"
            ),
            func.max(Order.updated_at).label("last_update"),
        )
        .where(Order.placed_at < until)
        .group_by(Order.customer_id)
    )
    frame = read_frame(session, stmt)
    for column in ("first_purchase", "last_purchase", "last_update"):
        frame[column] = pd.to_datetime(frame[column], format="ISO8601")
    for column in ("orders", "purchases", "kept", "returned", "cancelled"):
        frame[column] = frame[column].astype("int64")
    for column in ("spend", "spend_recent"):
        frame[column] = frame[column].astype("float64")
    return frame.set_index("customer_id")


def load_purchases_between(
    session: Session, *, start: dt.datetime, end: dt.datetime
) -> pd.DataFrame:
    """Purchases and kept spend per customer with ``start <= placed_at < end``."""
    kept = Order.status.notin_(NOT_KEPT)
    stmt = (
        select(
            Order.customer_id,
            func.count().label("purchases"),
            func.sum(case((kept, cast(Order.subtotal, Float)), else_=0.0)).label(
                "spend"
            ),
        )
        .where(
            Order.placed_at >= start,
            Order.placed_at < end,
            Order.status.notin_(PURCHASE_EXCLUDED),
        )
        .group_by(Order.customer_id)
    )
    frame = read_frame(session, stmt)
    frame["spend"] = frame["spend"].astype("float64")
    return frame.set_index("customer_id")


def load_contacts(session: Session, *, until: dt.datetime) -> pd.DataFrame:
    """Return one row per conversation before ``until`` with problem flags.

    Columns: customer_id, at, escalated (handed to a human), unresolved, low_csat
    (CSAT <= 2) and complaint (a customer message with a complaint intent).
    """
    conv = read_frame(
        session,
        select(
            Conversation.id.label("conversation_id"),
            Conversation.customer_id,
            Conversation.started_at.label("at"),
            Conversation.outcome,
            Conversation.csat,
        ).where(Conversation.customer_id.isnot(None), Conversation.started_at < until),
    )
    outcome = Interaction.meta["outcome"].as_string()
    flagged = read_frame(
        session,
        select(
            Interaction.conversation_id,
            cast(Interaction.intent.in_(COMPLAINT_INTENTS), Integer).label("complaint"),
            cast(outcome == "unresolved", Integer).label("unresolved_msg"),
        ).where(
            Interaction.author == "customer",
            Interaction.occurred_at < until,
            Interaction.conversation_id.isnot(None),
            or_(Interaction.intent.in_(COMPLAINT_INTENTS), outcome == "unresolved"),
        ),
    )
    flags = (
        flagged.fillna(0)
        .groupby("conversation_id")[["complaint", "unresolved_msg"]]
        .max()
        .astype(bool)
    )
    conv = conv.join(flags, on="conversation_id")
    conv["at"] = pd.to_datetime(conv["at"], format="ISO8601")
    csat = pd.to_numeric(conv["csat"], errors="coerce")
    conv["escalated"] = conv["outcome"].eq("escalated")
    conv["unresolved"] = conv["outcome"].isin(UNRESOLVED_OUTCOMES) | conv[
        "unresolved_msg"
    ].fillna(False).astype(bool)
    conv["low_csat"] = csat.le(LOW_CSAT).fillna(False)
    conv["complaint"] = conv["complaint"].fillna(False).astype(bool)
    return conv[
        ["customer_id", "at", "escalated", "unresolved", "low_csat", "complaint"]
    ]


def contact_features(
    contacts: pd.DataFrame,
    *,
    index: pd.Index,
    last_purchase: pd.Series,
) -> pd.DataFrame:
    """Per-customer contact-history counts for customers in ``index``.

    Columns: contacts, complaints, unresolved, low_csat, escalations and
    contacts_since_purchase / problems_since_purchase (after the last purchase).
    """
    c = contacts[contacts["customer_id"].isin(index)].copy()
    c["problem"] = c["unresolved"] | c["low_csat"] | c["complaint"]
    last = c["customer_id"].map(last_purchase)
    c["since"] = last.isna() | (c["at"] > last)
    c["problem_since"] = c["problem"] & c["since"]
    grouped = c.groupby("customer_id")
    out = pd.DataFrame(
        {
            "contacts": grouped.size(),
            "complaints": grouped["complaint"].sum(),
            "unresolved": grouped["unresolved"].sum(),
            "low_csat": grouped["low_csat"].sum(),
            "escalations": grouped["escalated"].sum(),
            "contacts_since_purchase": grouped["since"].sum(),
            "problems_since_purchase": grouped["problem_since"].sum(),
        }
    )
    return out.reindex(index).fillna(0).astype("int64")
