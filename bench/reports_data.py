"""The synthetic dataset of the reports benchmark, generated inside PostgreSQL.

Everything is ``INSERT … SELECT … FROM generate_series(…)`` (static SQL, bound
parameters), 100k rows a statement, so 1M conversations with 10M messages take
minutes. Every random choice is a hash of the row number (``bench_u``), so a
dataset of a given size is the same on every run.

Shape (over the 365 days before the anchor, a UTC midnight):
- customers: one per five conversations, 90 % with a value tier (5 % platinum,
  15 % gold, 30 % silver, 50 % bronze); a few customers have many conversations.
- conversations: 40 % chat, 15 % Telegram, 10 % SMS, 15 % voice, 20 % e-mail;
  ~20 % escalated, ~15 % abandoned, the rest self-served; 3 % anonymous; ~8 %
  are a re-contact of the previous one (same customer 45 min to 60 h later);
  those of the last two hours are still open. The bot asks for a rating in ~70 %
  of the conversations that were not abandoned (~60 % of all); ~40 % answer.
- handoffs: one per escalated conversation: 85 % resolved, 7 % handed back, 8 %
  never answered (closed later without an agent); 25 agents.
- interactions: ``messages_per_conversation`` per conversation, customer and bot
  (or agent, in the second half of an escalated one) taking turns.

Secondary indexes are dropped during the load and built afterwards (faster than
maintaining them row by row), foreign-key triggers are off for the loading
session (``session_replication_role = replica``, superuser only; without it the
load is just slower), and the tables are vacuumed and analysed at the end.
The size and anchor are kept in ``bench_meta``: a second run of the same size
reuses the dataset, an unfinished one is generated again, and a database
without ``bench_meta`` (not one of ours) is refused, never dropped.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from rich.console import Console
from sqlalchemy import Index, bindparam, create_engine, select, text
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError

from crm_store.db import make_engine, make_session_factory
from crm_store.migrate import upgrade
from crm_store.models import Conversation, Handoff, Interaction, StaffUser
from crm_store.services.staff import ensure_demo_staff

DATASET_VERSION = 1
CHUNK_ROWS = 100_000
AGENTS = 25
SPAN_DAYS = 365
DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
FTS_INDEX = "ix_interactions_text_fts"
LOADED_TABLES = (Conversation.__table__, Handoff.__table__, Interaction.__table__)

# u in [0, 1) from a row number and a salt (< 64): a hash, not a random draw;
# float8 arithmetic (numeric division made the load five times slower).
CREATE_U = text(
    "CREATE OR REPLACE FUNCTION bench_u(n bigint, salt integer) "
    "RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS "
    "$$ SELECT (hashint8(n * 64 + salt)::bigint + 2147483648)::float8"
    " / 4294967296.0::float8 $$"
)
CREATE_META = text(
    "CREATE TABLE IF NOT EXISTS bench_meta (name text PRIMARY KEY, value text NOT NULL)"
)
HAS_META = text("SELECT to_regclass('bench_meta')")
READ_META = text("SELECT value FROM bench_meta WHERE name = 'dataset'")
WRITE_META = text(
    "INSERT INTO bench_meta (name, value) VALUES ('dataset', :value) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)
LIST_INDEXES = text(
    "SELECT indexname FROM pg_indexes "
    "WHERE schemaname = current_schema() AND tablename = :table"
)
DROP_FTS = text(f"DROP INDEX IF EXISTS {FTS_INDEX}")
# The same expression as migration 0007 (full-text search must match it).
CREATE_FTS = text(
    f"CREATE INDEX {FTS_INDEX} ON interactions "
    "USING gin (to_tsvector('simple', coalesce(text, '')))"
)

INSERT_CUSTOMERS = text(
    """
INSERT INTO customers (id, first_name, last_name, language, marketing_opt_in,
                       is_prospect, created_at)
SELECT 'R' || lpad(g::text, 8, '0'), 'Bench', g::text, 'en', false, false,
       :created
FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint) - 1) AS g
"""
)

INSERT_SCORES = text(
    """
INSERT INTO customer_scores (customer_id, as_of, frequency, monetary, value_tier,
                             explanation, computed_at)
SELECT 'R' || lpad(g::text, 8, '0'), :as_of, 0, 0,
       CASE WHEN bench_u(g, 1) < 0.05 THEN 'platinum'
            WHEN bench_u(g, 1) < 0.20 THEN 'gold'
            WHEN bench_u(g, 1) < 0.50 THEN 'silver'
            ELSE 'bronze' END,
       '{}', :as_of
FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint) - 1) AS g
WHERE bench_u(g, 2) < 0.9
"""
)

INSERT_AGENTS = text(
    """
INSERT INTO staff_users (username, password_hash, role, active, created_at)
SELECT 'bench_agent_' || lpad(g::text, 2, '0'), '!', 'agent', true, :created
FROM generate_series(1, :agents) AS g
"""
)

# rc: a re-contact of conversation n - 1 (never of a re-contact itself), so the
# customer and start of n - 1 are their own base values.
INSERT_CONVERSATIONS = text(
    """
WITH g AS (
    SELECT n,
           n > 0 AND bench_u(n, 3) < 0.08
               AND NOT (n > 1 AND bench_u(n - 1, 3) < 0.08) AS rc
    FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint) - 1) AS n
), base AS (
    SELECT n, rc,
           CASE WHEN rc THEN LEAST(
                    :start + bench_u(n - 1, 4) * :span * interval '1 second'
                        + interval '45 minutes'
                        + bench_u(n, 5) * interval '60 hours',
                    :anchor - interval '1 minute')
                ELSE :start + bench_u(n, 4) * :span * interval '1 second'
           END AS started_at,
           CASE WHEN bench_u(CASE WHEN rc THEN n - 1 ELSE n END, 7) < 0.03 THEN NULL
                ELSE 'R' || lpad(floor(power(bench_u(CASE WHEN rc THEN n - 1 ELSE n END,
                                                     6), 1.5)
                                       * :customers)::bigint::text, 8, '0')
           END AS customer_id,
           CASE WHEN bench_u(n, 8) < 0.40 THEN 'chat'
                WHEN bench_u(n, 8) < 0.55 THEN 'telegram'
                WHEN bench_u(n, 8) < 0.65 THEN 'sms'
                WHEN bench_u(n, 8) < 0.80 THEN 'voice'
                ELSE 'email' END AS channel,
           CASE WHEN bench_u(n, 9) < 0.20 THEN 'escalated'
                WHEN bench_u(n, 9) < 0.35 THEN 'abandoned'
                ELSE 'self_served' END AS outcome
    FROM g
), timed AS (
    SELECT *,
           CASE WHEN started_at > :anchor - interval '2 hours' THEN NULL
                WHEN outcome = 'escalated'
                    THEN started_at + interval '20 minutes'
                         + bench_u(n, 10) * interval '20 minutes'
                ELSE started_at + interval '1 minute'
                     + bench_u(n, 10) * interval '15 minutes'
           END AS ended_at
    FROM base
), asked AS (
    SELECT *,
           ended_at IS NOT NULL AND outcome <> 'abandoned'
               AND bench_u(n, 11) < 0.7 AS csat_asked
    FROM timed
)
INSERT INTO conversations (id, tracker_key, customer_id, channel, started_at,
                           last_activity_at, ended_at, status, outcome, csat,
                           csat_requested_at)
SELECT 'RC' || lpad(n::text, 9, '0'),
       CASE channel WHEN 'chat' THEN 'rest' ELSE channel END || ':' || 'bench-' || n,
       customer_id, channel, started_at,
       COALESCE(ended_at, started_at + interval '1 minute'), ended_at,
       CASE WHEN ended_at IS NULL THEN 'open' ELSE 'closed' END,
       CASE WHEN ended_at IS NULL THEN NULL ELSE outcome END,
       CASE WHEN csat_asked AND bench_u(n, 12) < 0.4 THEN
            CASE WHEN bench_u(n, 13) < 0.45 THEN 5
                 WHEN bench_u(n, 13) < 0.70 THEN 4
                 WHEN bench_u(n, 13) < 0.82 THEN 3
                 WHEN bench_u(n, 13) < 0.92 THEN 2
                 ELSE 1 END
       END,
       CASE WHEN csat_asked THEN ended_at - interval '30 seconds' END
FROM asked
"""
)

INSERT_HANDOFFS = text(
    """
WITH e AS (
    SELECT c.id, c.customer_id, c.channel, c.started_at, c.ended_at,
           substr(c.id, 3)::bigint AS n
    FROM conversations AS c
    WHERE c.id >= :lo_id AND c.id < :hi_id AND c.outcome = 'escalated'
), t AS (
    SELECT e.*,
           started_at + bench_u(n, 20) * (ended_at - started_at) / 4 AS created_at,
           bench_u(n, 21) < 0.08 AS unanswered,
           bench_u(n, 21) >= 0.08 AND bench_u(n, 21) < 0.15 AS handed_back
    FROM e
), c AS (
    SELECT t.*,
           CASE WHEN NOT unanswered THEN created_at + interval '15 seconds'
                + power(bench_u(n, 22), 2) * interval '20 minutes' END AS claimed_at
    FROM t
), r AS (
    SELECT c.*,
           claimed_at + interval '10 seconds'
               + bench_u(n, 23) * interval '2 minutes' AS first_response_at
    FROM c
)
INSERT INTO handoffs (conversation_id, customer_id, channel, reason, status,
                      priority, packet, created_at, claimed_by, claimed_at,
                      first_response_at, resolved_at, resolution_note, queue_at)
SELECT id, customer_id, channel,
       CASE WHEN bench_u(n, 24) < 0.35 THEN 'customer_request'
            WHEN bench_u(n, 24) < 0.50 THEN 'low_confidence'
            WHEN bench_u(n, 24) < 0.60 THEN 'fallback'
            WHEN bench_u(n, 24) < 0.72 THEN 'complaint'
            WHEN bench_u(n, 24) < 0.80 THEN 'verification_failed'
            WHEN bench_u(n, 24) < 0.85 THEN 'step_up_required'
            WHEN bench_u(n, 24) < 0.90 THEN 'form_stuck'
            WHEN bench_u(n, 24) < 0.94 THEN 'action_failure'
            WHEN bench_u(n, 24) < 0.98 THEN 'business_rule'
            ELSE 'other' END,
       CASE WHEN handed_back THEN 'handed_back' ELSE 'resolved' END,
       0, '{}', created_at,
       CASE WHEN NOT unanswered
            THEN (CAST(:agents AS bigint[]))[1 + floor(bench_u(n, 25) * :n_agents)::int]
       END,
       claimed_at, first_response_at,
       CASE WHEN unanswered THEN created_at + interval '4 hours'
            ELSE first_response_at + interval '2 minutes'
                 + bench_u(n, 26) * interval '15 minutes' END,
       CASE WHEN unanswered THEN 'Converted to ticket.' END,
       created_at
FROM r
"""
).bindparams(bindparam("agents", type_=ARRAY(BIGINT)))

INSERT_INTERACTIONS = text(
    """
WITH m AS (
    SELECT c.id, c.customer_id, c.channel, c.started_at, c.outcome,
           COALESCE(c.ended_at, c.last_activity_at) - c.started_at AS length,
           substr(c.id, 3)::bigint * 128 + k AS h, k
    FROM conversations AS c
    CROSS JOIN generate_series(0, CAST(:per AS integer) - 1) AS k
    WHERE c.id >= :lo_id AND c.id < :hi_id
), p AS (
    SELECT m.*, 1 + floor(bench_u(h, 30) * 8)::int AS pick,
           k % 2 = 0 AS inbound,
           outcome = 'escalated' AND k >= CAST(:per AS integer) / 2 AS by_agent
    FROM m
)
INSERT INTO interactions (event_id, customer_id, conversation_id, channel,
                          direction, author, text, intent, confidence,
                          occurred_at, metadata)
SELECT 'bench-' || id || '-' || k, customer_id, id, channel,
       CASE WHEN inbound THEN 'in' ELSE 'out' END,
       CASE WHEN inbound THEN 'customer' WHEN by_agent THEN 'agent' ELSE 'bot' END,
       CASE WHEN inbound THEN (ARRAY['Where is my order?',
                                     'I want to return an item',
                                     'Can I change my delivery address?',
                                     'My parcel arrived damaged',
                                     'How much is shipping to Austria?',
                                     'I want to talk to a person',
                                     'What payment methods do you take?',
                                     'hello'])[pick]
            WHEN by_agent THEN (ARRAY['Hi, this is customer service.',
                                      'I have refunded the item.',
                                      'The courier will call you tomorrow.',
                                      'I changed the address for you.',
                                      'Sorry for the trouble.',
                                      'Anything else I can do?',
                                      'I opened a ticket for you.',
                                      'Thanks for waiting.'])[pick]
            ELSE (ARRAY['Your order ships tomorrow.',
                        'Here is your return label.',
                        'I have updated the address.',
                        'Sorry to hear that. Let me help.',
                        'Shipping to Austria is 4.90 EUR.',
                        'A colleague will take over.',
                        'We accept cards and PayPal.',
                        'Hi! How can I help?'])[pick]
       END,
       CASE WHEN inbound THEN (ARRAY['order_status', 'return_item',
                                     'change_address', 'complain',
                                     'faq_shipping', 'request_human',
                                     'faq_payment', 'greet'])[pick] END,
       CASE WHEN inbound THEN 0.55 + bench_u(h, 31) * 0.45 END,
       started_at + length * (k::float / CAST(:per AS integer)),
       '{}'
FROM p
"""
)


@dataclass(frozen=True)
class Dataset:
    """A generated (or reused) dataset: where it is and what it holds."""

    url: str
    anchor: dt.datetime
    conversations: int
    messages_per_conversation: int
    customers: int
    rows: dict[str, int]
    generated: bool
    generate_seconds: float | None
    manager_password: str

    def as_dict(self) -> dict:
        """JSON-ready (no URL password, no staff password)."""
        data = asdict(self)
        data["url"] = make_url(self.url).render_as_string(hide_password=True)
        data["anchor"] = self.anchor.isoformat() + "Z"
        del data["manager_password"]
        return data


def database_url(pg_url: str, database: str) -> str:
    """The URL of ``database`` on the server of ``pg_url``."""
    if not DATABASE_NAME.fullmatch(database):
        raise ValueError(f"database name {database!r}: use a-z, 0-9 and _")
    return make_url(pg_url).set(database=database).render_as_string(hide_password=False)


def _admin(pg_url: str, statement: str) -> None:
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT", future=True)
    try:
        with admin.connect() as conn:
            conn.execute(text(statement))
    finally:
        admin.dispose()


def _exists(pg_url: str, database: str) -> bool:
    admin = create_engine(pg_url, future=True)
    try:
        with admin.connect() as conn:
            return (
                conn.execute(
                    text("SELECT 1 FROM pg_database WHERE datname = :name"),
                    {"name": database},
                ).first()
                is not None
            )
    finally:
        admin.dispose()


def drop_database(pg_url: str, database: str) -> None:
    """Drop the dataset database (the name is checked, then quoted)."""
    database_url(pg_url, database)
    _admin(pg_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _meta(engine: Engine) -> dict | None:
    """The dataset's meta; {} when unfinished, None when not a bench database."""
    with engine.connect() as conn:
        if conn.execute(HAS_META).scalar() is None:
            return None
        value = conn.execute(READ_META).scalar()
    return json.loads(value) if value else {}


def _wanted(conversations: int, per: int) -> dict:
    return {
        "version": DATASET_VERSION,
        "conversations": conversations,
        "messages_per_conversation": per,
    }


def ensure_dataset(
    *,
    pg_url: str,
    database: str,
    conversations: int,
    messages_per_conversation: int,
    console: Console,
) -> Dataset:
    """Reuse the dataset in ``database`` if it has this size, else (re)generate it.

    The demo staff (``manager`` …) get a new random password on every run.
    """
    url = database_url(pg_url, database)
    wanted = {**_wanted(conversations, messages_per_conversation), "complete": True}
    meta = None
    if _exists(pg_url, database):
        engine = make_engine(url)
        try:
            meta = _meta(engine)
        finally:
            engine.dispose()
        if meta is None:
            raise ValueError(
                f"database {database} exists and is not a reports-bench dataset "
                "(no bench_meta table): choose another --database"
            )
        if {k: meta.get(k) for k in wanted} != wanted:
            console.print(
                f"dataset in {database} is unfinished or of another size: regenerating"
            )
            drop_database(pg_url, database)
            meta = None
    generated, seconds = meta is None, None
    if meta is None:
        _admin(pg_url, f'CREATE DATABASE "{database}"')
        started = time.perf_counter()
        meta = _generate(url, conversations, messages_per_conversation, console)
        seconds = round(time.perf_counter() - started, 1)
        meta.update(generate_seconds=seconds, complete=True)
        engine = make_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(WRITE_META, {"value": json.dumps(meta)})
        finally:
            engine.dispose()
    else:
        console.print(f"reusing the dataset in {database} ({conversations:,} conv.)")
        seconds = meta.get("generate_seconds")
    password = secrets.token_urlsafe(18)
    engine = make_engine(url)
    try:
        with make_session_factory(engine).begin() as session:
            ensure_demo_staff(session, password)
    finally:
        engine.dispose()
    return Dataset(
        url=url,
        anchor=dt.datetime.fromisoformat(meta["anchor"]),
        conversations=conversations,
        messages_per_conversation=messages_per_conversation,
        customers=meta["customers"],
        rows=meta["rows"],
        generated=generated,
        generate_seconds=seconds,
        manager_password=password,
    )


def _chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + size, total)) for lo in range(0, total, size)]


def _conversation_id(n: int) -> str:
    return f"RC{n:09d}"


def _step(console: Console, label: str, work: Callable[[], None]) -> float:
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    console.print(f"  {label}: {seconds:.1f} s", highlight=False)
    return seconds


def _load_session(conn: Connection) -> None:
    """Bigger sort memory for index builds; FK triggers off when allowed."""
    conn.execute(text("SET maintenance_work_mem = '512MB'"))
    try:
        with conn.begin_nested():
            conn.execute(text("SET session_replication_role = replica"))
    except DBAPIError:
        pass  # not a superuser: the foreign keys are checked row by row


def _generate(url: str, conversations: int, per: int, console: Console) -> dict:
    """Fill a new database; return its meta (anchor, sizes, row counts)."""
    anchor = dt.datetime.now(dt.timezone.utc).replace(
        tzinfo=None, hour=0, minute=0, second=0, microsecond=0
    )
    start = anchor - dt.timedelta(days=SPAN_DAYS)
    customers = max(10, conversations // 5)
    engine = make_engine(url)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            _load_session(conn)
            conn.execute(CREATE_U)
            conn.execute(CREATE_META)
            unfinished = {**_wanted(conversations, per), "complete": False}
            conn.execute(WRITE_META, {"value": json.dumps(unfinished)})
            conn.commit()
            console.print(
                f"generating {conversations:,} conversations, "
                f"{conversations * per:,} messages, {customers:,} customers"
            )
            indexes = _drop_indexes(conn)
            conn.commit()
            _fill(conn, console, start, anchor, customers, conversations, per)
            _step(console, "indexes", lambda: _create_indexes(conn, indexes))
            conn.commit()
        vacuum = engine.execution_options(isolation_level="AUTOCOMMIT")
        with vacuum.connect() as conn:
            _step(console, "vacuum, analyze", lambda: _vacuum(conn))
        with engine.connect() as conn:
            rows = {
                table.name: conn.execute(
                    select(text("count(*)")).select_from(table)
                ).scalar_one()
                for table in LOADED_TABLES
            }
    finally:
        engine.dispose()
    return {
        **_wanted(conversations, per),
        "anchor": anchor.isoformat(),
        "customers": customers,
        "rows": rows,
    }


def _drop_indexes(conn: Connection) -> list[Index]:
    """Drop the loaded tables' secondary indexes; return them to build later."""
    dropped = []
    for table in LOADED_TABLES:
        present = set(conn.execute(LIST_INDEXES, {"table": table.name}).scalars())
        for index in sorted(table.indexes, key=lambda i: i.name):
            if index.name in present:
                index.drop(bind=conn)
                dropped.append(index)
    conn.execute(DROP_FTS)
    return dropped


def _create_indexes(conn: Connection, indexes: list[Index]) -> None:
    for index in indexes:
        index.create(bind=conn)
    conn.execute(CREATE_FTS)


def _vacuum(conn: Connection) -> None:
    for table in ("customers", "customer_scores", "staff_users", "conversations"):
        conn.execute(text(f"VACUUM ANALYZE {table}"))
    conn.execute(text("VACUUM ANALYZE handoffs"))
    conn.execute(text("VACUUM ANALYZE interactions"))


def _fill(
    conn: Connection,
    console: Console,
    start: dt.datetime,
    anchor: dt.datetime,
    customers: int,
    conversations: int,
    per: int,
) -> None:
    created = start - dt.timedelta(days=30)

    def chunked(label: str, statement, total: int, params: Callable) -> None:  # noqa: ANN001
        started = time.perf_counter()
        for lo, hi in _chunks(total, CHUNK_ROWS):
            conn.execute(statement, params(lo, hi))
            conn.commit()
            rate = hi / max(time.perf_counter() - started, 1e-9)
            console.print(
                f"  {label}: {hi:,}/{total:,} ({rate:,.0f} rows/s)", highlight=False
            )

    chunked(
        "customers",
        INSERT_CUSTOMERS,
        customers,
        lambda lo, hi: {"lo": lo, "hi": hi, "created": created},
    )
    chunked(
        "customer scores",
        INSERT_SCORES,
        customers,
        lambda lo, hi: {"lo": lo, "hi": hi, "as_of": anchor},
    )
    conn.execute(INSERT_AGENTS, {"agents": AGENTS, "created": created})
    agents = list(
        conn.execute(
            select(StaffUser.id)
            .where(StaffUser.username.like("bench_agent_%"))
            .order_by(StaffUser.id)
        ).scalars()
    )
    conn.commit()
    span = SPAN_DAYS * 86400
    chunked(
        "conversations",
        INSERT_CONVERSATIONS,
        conversations,
        lambda lo, hi: {
            "lo": lo,
            "hi": hi,
            "start": start,
            "anchor": anchor,
            "span": span,
            "customers": customers,
        },
    )
    chunked(
        "handoffs (of conversations)",
        INSERT_HANDOFFS,
        conversations,
        lambda lo, hi: {
            "lo_id": _conversation_id(lo),
            "hi_id": _conversation_id(hi),
            "agents": agents,
            "n_agents": len(agents),
        },
    )
    per_chunk = max(1, CHUNK_ROWS // per)
    started = time.perf_counter()
    total = conversations * per
    for lo, hi in _chunks(conversations, per_chunk):
        conn.execute(
            INSERT_INTERACTIONS,
            {
                "lo_id": _conversation_id(lo),
                "hi_id": _conversation_id(hi),
                "per": per,
            },
        )
        conn.commit()
        done = hi * per
        if hi == conversations or (lo // per_chunk) % 10 == 9:
            rate = done / max(time.perf_counter() - started, 1e-9)
            console.print(
                f"  messages: {done:,}/{total:,} ({rate:,.0f} rows/s)", highlight=False
            )
