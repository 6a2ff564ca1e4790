"""``crm report export`` (CSV / Parquet) and the shared report cell rules.

The CLI runs in process (typer's CliRunner on ``cli.main.app``) against a small
store per backend; the files are read back with the csv module and pyarrow and
compared with ``conversation_rows`` and with values worked out by hand.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from cli.main import app
from cli.report import default_output, login_actor
from crm_store.db import engine_for, make_engine, make_session_factory
from crm_store.errors import InvalidInput
from crm_store.migrate import upgrade
from crm_store.models import (
    AuditLog,
    Conversation,
    Customer,
    CustomerScore,
    Handoff,
    StaffUser,
)
from crm_store.services.report_format import (
    REPORT_COLUMN_KINDS,
    arrow_schema,
    csv_cell,
    csv_header,
    csv_rows,
    write_report_file,
)
from crm_store.services.reports import REPORT_COLUMNS, conversation_rows

T = dt.datetime
PERIOD = ["--from", "2026-03-01", "--to", "2026-03-31"]
START, END = T(2026, 3, 1), T(2026, 4, 1)
ORDER = ["S1", "S2", "E1", "A1", "O1"]


def _build(session) -> None:  # noqa: ANN001
    session.add_all(
        [
            Customer(id="C1", first_name="Ada", last_name="L"),
            # An id a spreadsheet would read as a formula: exported guarded.
            Customer(id="+4912345", first_name="Bo", last_name="M"),
            StaffUser(username="anna", password_hash="x", role="agent"),
        ]
    )
    session.flush()
    session.add(CustomerScore(customer_id="C1", as_of=T(2026, 2, 1), value_tier="gold"))
    agent = session.execute(select(StaffUser.id)).scalar_one()

    def conv(id_, customer, channel, started, ended, status, outcome, **kw):  # noqa: ANN001, ANN202
        return Conversation(
            id=id_,
            customer_id=customer,
            tracker_key=f"rest:{id_}",
            channel=channel,
            started_at=started,
            last_activity_at=ended or started,
            ended_at=ended,
            status=status,
            outcome=outcome,
            **kw,
        )

    session.add_all(
        [
            conv(
                "S1",
                "C1",
                "chat",
                T(2026, 3, 1, 9),
                T(2026, 3, 1, 9, 5),
                "closed",
                "self_served",
                csat=5,
                csat_requested_at=T(2026, 3, 1, 9, 4),
            ),
            # C1 again 23 h 55 min after S1 ended: S1 is a re-contact, not contained.
            conv(
                "S2",
                "C1",
                "sms",
                T(2026, 3, 2, 9),
                T(2026, 3, 2, 9, 10),
                "closed",
                "self_served",
            ),
            conv(
                "E1",
                "+4912345",
                "telegram",
                T(2026, 3, 2, 10),
                T(2026, 3, 2, 10, 20),
                "closed",
                "escalated",
                csat_requested_at=T(2026, 3, 2, 10, 19),
            ),
            conv(
                "A1",
                None,
                "voice",
                T(2026, 3, 10, 8),
                T(2026, 3, 10, 8, 1),
                "closed",
                "abandoned",
            ),
            # The last minute of the inclusive end day, and the first after it.
            conv("O1", "C1", "email", T(2026, 3, 31, 23, 59), None, "open", None),
            conv("X1", "C1", "email", T(2026, 4, 1), None, "open", None),
        ]
    )
    session.flush()
    session.add(
        Handoff(
            conversation_id="E1",
            customer_id="+4912345",
            channel="telegram",
            reason="complaint",
            status="resolved",
            created_at=T(2026, 3, 2, 10, 5),
            claimed_by=agent,
            claimed_at=T(2026, 3, 2, 10, 6),
            first_response_at=T(2026, 3, 2, 10, 6, 30),
            resolved_at=T(2026, 3, 2, 10, 16),
        )
    )


@pytest.fixture(scope="module")
def store(backend, scratch) -> Iterator[str]:  # noqa: ANN001
    """The URL of a small store of the current backend."""
    url = scratch.url(backend)
    engine = make_engine(url)
    upgrade(engine)
    with make_session_factory(engine).begin() as session:
        _build(session)
    engine.dispose()
    yield url
    engine_for(url).dispose()


def crm(*args: str) -> object:
    return CliRunner(mix_stderr=False).invoke(app, list(args))


def _expected_rows(url: str) -> list[tuple]:
    engine = engine_for(url)
    with make_session_factory(engine)() as session:
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        return list(conversation_rows(session, start=START, end=END, now=now))


def _audit_entries(url: str) -> list[AuditLog]:
    with make_session_factory(engine_for(url))() as session:
        return list(
            session.execute(
                select(AuditLog)
                .where(AuditLog.action == "report_exported")
                .order_by(AuditLog.id)
            ).scalars()
        )


def _by_id(rows: list[dict]) -> dict[str, dict]:
    return {row["conversation_id"]: row for row in rows}


def test_csv_export_matches_the_rows_and_the_hand_worked_values(
    store: str, tmp_path: Path
) -> None:
    target = tmp_path / "report.csv"
    before = len(_audit_entries(store))
    result = crm("report", "export", *PERIOD, "-o", str(target), "--db-url", store)
    assert result.exit_code == 0, result.stderr
    assert "wrote 5 rows" in " ".join(result.stdout.split())
    with open(target, newline="", encoding="utf-8") as stream:
        lines = list(csv.reader(stream))
    assert lines[0] == list(REPORT_COLUMNS)
    assert [line[0] for line in lines[1:]] == ORDER
    expected = _expected_rows(store)
    assert lines[1:] == [[csv_cell(v) for v in row] for row in expected]
    rows = _by_id([dict(zip(lines[0], line, strict=True)) for line in lines[1:]])
    e1 = rows["E1"]
    assert e1["customer_id"] == "'+4912345"  # CSV-injection guard
    assert e1["escalated"] == "true" and e1["escalation_reason"] == "complaint"
    assert e1["agent"] == "anna"
    assert e1["escalated_at"] == "2026-03-02T10:05:00Z"
    assert float(e1["first_response_seconds"]) == 90.0  # 10:05:00 -> 10:06:30
    assert float(e1["handle_seconds"]) == 600.0  # claimed 10:06 -> resolved 10:16
    assert e1["contained"] == "false" and e1["csat"] == ""
    assert e1["csat_requested"] == "true"
    s1, s2 = rows["S1"], rows["S2"]
    assert s1["value_tier"] == "gold" and s1["csat"] == "5"
    assert s1["recontact_at"] == "2026-03-02T09:00:00Z"
    assert s1["contained"] == "false" and s2["contained"] == "true"
    assert rows["A1"]["customer_id"] == "" and rows["A1"]["outcome"] == "abandoned"
    assert rows["O1"]["status"] == "open" and rows["O1"]["contained"] == ""
    assert not (tmp_path / "report.csv.partial").exists()
    [entry] = _audit_entries(store)[before:]
    assert entry.actor == login_actor() and entry.actor.startswith("cli:")
    assert entry.entity_type == "report" and entry.entity_id == "conversations.csv"
    assert entry.details["rows"] == 5 and entry.details["format"] == "csv"
    assert entry.details["from"] == "2026-03-01T00:00:00Z"
    assert entry.details["to"] == "2026-04-01T00:00:00Z"


def test_parquet_export_has_typed_columns_and_the_same_rows(
    store: str, tmp_path: Path
) -> None:
    # The format comes from the suffix; --progress draws on stderr.
    target = tmp_path / "report.parquet"
    result = crm(
        "report", "export", *PERIOD, "-o", str(target), "--progress", "--db-url", store
    )
    assert result.exit_code == 0, result.stderr
    assert target.read_bytes()[:4] == b"PAR1"
    table = pq.read_table(target)
    assert table.schema.names == list(REPORT_COLUMNS)
    types = dict(zip(table.schema.names, table.schema.types, strict=True))
    assert types["started_at"] == pa.timestamp("us")
    assert types["escalated"] == pa.bool_() and types["contained"] == pa.bool_()
    assert types["csat"] == pa.int32()
    assert types["first_response_seconds"] == pa.float64()
    assert types["conversation_id"] == pa.string()
    got = [tuple(row.values()) for row in table.to_pylist()]
    assert got == _expected_rows(store)
    rows = _by_id(table.to_pylist())
    assert rows["E1"]["customer_id"] == "+4912345"  # no guard outside CSV
    assert rows["E1"]["first_response_at"] == T(2026, 3, 2, 10, 6, 30)
    assert rows["E1"]["first_response_seconds"] == 90.0
    assert rows["S1"]["csat"] == 5 and rows["S2"]["contained"] is True
    assert rows["O1"]["contained"] is None and rows["O1"]["ended_at"] is None
    entry = _audit_entries(store)[-1]
    assert entry.details["format"] == "parquet" and entry.details["rows"] == 5
    assert entry.entity_id == "conversations.parquet"


def test_csv_to_stdout_and_the_default_file_name(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = crm("report", "export", *PERIOD, "-o", "-", "--db-url", store)
    assert result.exit_code == 0, result.stderr
    lines = list(csv.reader(io.StringIO(result.stdout, newline="")))
    assert lines[0] == csv_header() and [line[0] for line in lines[1:]] == ORDER
    assert "wrote 5 rows to stdout" in result.stderr
    monkeypatch.chdir(tmp_path)
    result = crm("report", "export", *PERIOD, "--format", "parquet", "--db-url", store)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "conversations_2026-03-01_2026-03-31.parquet"
    ]
    assert (
        pq.read_table(tmp_path / "conversations_2026-03-01_2026-03-31.parquet")[
            "conversation_id"
        ].to_pylist()
        == ORDER
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2026-03-31", "--to", "2026-03-01"], "before its end"),
        (["--from", "2026-13-01", "--to", "2026-03-31"], "YYYY-MM-DD"),
        (["--from", "last week"], "YYYY-MM-DD"),
        ([*PERIOD, "--format", "xlsx"], "unknown format"),
        ([*PERIOD, "--format", "parquet", "-o", "-"], "stdout"),
        ([*PERIOD, "-o", "missing/dir/report.csv"], "does not exist"),
        ([*PERIOD, "--recontact-hours", "0"], "recontact_hours"),
    ],
)
def test_bad_input_exits_2_and_leaves_nothing(
    store: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    before = len(_audit_entries(store))
    result = crm("report", "export", *args, "--db-url", store)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert message in " ".join(result.stderr.split())
    assert list(tmp_path.iterdir()) == []
    assert len(_audit_entries(store)) == before


def test_an_unreachable_database_exits_1_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path / "out")
    url = f"sqlite:///{tmp_path / 'db' / 'no-tables.db'}"
    result = crm("report", "export", *PERIOD, "-o", "out.csv", "--db-url", url)
    engine_for(url).dispose()
    assert result.exit_code == 1
    assert "export failed" in result.stderr
    assert list((tmp_path / "out").iterdir()) == []


def _rows_then_fail(error: BaseException) -> Iterator[tuple]:
    yield ("c1", "chat", None, None, T(2026, 3, 1), *([None] * 14))
    raise error


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("error", [RuntimeError("lost"), KeyboardInterrupt()])
def test_a_failed_write_removes_the_partial_file(
    tmp_path: Path, fmt: str, error: BaseException
) -> None:
    target = tmp_path / f"out.{fmt}"
    with pytest.raises(type(error)):
        write_report_file(_rows_then_fail(error), target, fmt)
    assert list(tmp_path.iterdir()) == []


def test_before_rename_sees_the_count_and_can_veto(tmp_path: Path) -> None:
    rows = [("c1", "chat", None, None, T(2026, 3, 1), *([None] * 14))] * 3
    seen: list[int] = []
    target = tmp_path / "out.csv"
    assert write_report_file(rows, target, "csv", before_rename=seen.append) == 3
    assert seen == [3] and target.exists()

    def veto(count: int) -> None:
        raise RuntimeError(f"audit failed after {count}")

    with pytest.raises(RuntimeError):
        write_report_file(
            rows, tmp_path / "vetoed.parquet", "parquet", before_rename=veto
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_csv_cells_by_hand() -> None:
    assert csv_cell(None) == ""
    assert csv_cell(True) == "true" and csv_cell(False) == "false"
    assert csv_cell(0) == "0" and csv_cell(1.5) == "1.5"
    assert csv_cell(T(2026, 3, 2, 10, 6, 30)) == "2026-03-02T10:06:30Z"
    assert csv_cell(T(2026, 3, 2, 10, 6, 30, 250000)) == "2026-03-02T10:06:30.250000Z"
    berlin = dt.timezone(dt.timedelta(hours=1))
    assert csv_cell(T(2026, 3, 2, 11, 0, tzinfo=berlin)) == "2026-03-02T10:00:00Z"
    assert csv_cell(dt.date(2026, 3, 2)) == "2026-03-02"
    for text in ("=SUM(A1)", "+1", "-1", "@cmd", "\tx", "\rx"):
        assert csv_cell(text) == "'" + text
    assert csv_cell("a=b") == "a=b" and csv_cell("") == ""
    assert csv_cell({"b": 1, "a": "=x"}) == '{"a": "=x", "b": 1}'


def test_csv_rows_come_in_chunks_of_a_thousand() -> None:
    chunks = list(csv_rows(((n, f"r{n}") for n in range(2500)), ["n", "name"]))
    assert len(chunks) == 3
    assert chunks[0].startswith("n,name\r\n0,r0\r\n")
    assert [c.count("\r\n") for c in chunks] == [1001, 1000, 500]
    assert list(csv_rows([], ["n"])) == ["n\r\n"]


def test_every_report_column_has_a_parquet_type() -> None:
    assert set(REPORT_COLUMN_KINDS) == set(REPORT_COLUMNS)
    assert arrow_schema(REPORT_COLUMNS, REPORT_COLUMN_KINDS).names == list(
        REPORT_COLUMNS
    )
    with pytest.raises(InvalidInput):
        arrow_schema(["extra"], REPORT_COLUMN_KINDS)


def test_default_output_names_the_inclusive_days() -> None:
    assert default_output(START, END, "csv") == Path(
        "conversations_2026-03-01_2026-03-31.csv"
    )
    assert default_output(T(2026, 3, 1, 12), T(2026, 3, 2, 12), "parquet") == Path(
        "conversations_2026-03-01_2026-03-02.parquet"
    )


def test_the_store_holds_what_the_tests_expect(store: str) -> None:
    with make_session_factory(engine_for(store))() as session:
        assert session.execute(select(func.count(Conversation.id))).scalar_one() == 6


def test_typed_csv_cells_equal_the_generic_rules() -> None:
    header = ["t", "b", "s", "n", "i"]
    kinds = {"t": "timestamp", "b": "bool", "s": "string", "n": "float", "i": "int"}
    utc_plus_2 = dt.timezone(dt.timedelta(hours=2))
    rows = [
        (T(2026, 3, 2, 10, 6, 30), True, "plain", 1.5, 3),
        (T(2026, 3, 2, 10, 6, 30, 5), False, "=HYPERLINK()", 0.1, None),
        (T(2026, 3, 2, 12, tzinfo=utc_plus_2), None, "-1", None, 7),
        (None, 1, 42, "x", True),  # off-kind values fall back to csv_cell
        (dt.date(2026, 3, 2), None, None, 2, 0),
    ]
    typed = "".join(csv_rows(rows, header, kinds=kinds))
    generic = "".join(csv_rows(rows, header))
    assert typed == generic
    lines = list(csv.reader(io.StringIO(typed, newline="")))
    assert lines[1] == ["2026-03-02T10:06:30Z", "true", "plain", "1.5", "3"]
    assert lines[2][:3] == ["2026-03-02T10:06:30.000005Z", "false", "'=HYPERLINK()"]
    assert lines[3] == ["2026-03-02T10:00:00Z", "", "'-1", "", "7"]
    assert lines[4] == ["", "1", "42", "x", "true"]
    # The report's own header gets its kinds without being told.
    report_row = ("c1", "chat", "+49", None, T(2026, 3, 1), *([None] * 3), True)
    report_row += (*([None] * 7), False, None, None)
    assert "".join(csv_rows([report_row], REPORT_COLUMNS)) == "".join(
        csv_rows([report_row], REPORT_COLUMNS, kinds={})
    )


def test_parquet_row_groups_of_50k_and_dictionaries_only_where_few_values(
    tmp_path: Path,
) -> None:
    def full(n: int) -> Iterator[tuple]:
        rest = (False, None, None, None, None, None, None, 5, True, None, True)
        for i in range(n):
            at = T(2026, 3, 1) + dt.timedelta(seconds=i)
            channel = ("chat", "sms")[i % 2]
            head = (f"c{i}", channel, f"C{i}", None, at, at, "closed", "self_served")
            yield head + rest

    target = tmp_path / "big.parquet"
    assert write_report_file(full(120_000), target, "parquet") == 120_000
    meta = pq.ParquetFile(target).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [
        50_000,
        50_000,
        20_000,
    ]
    columns = list(REPORT_COLUMNS)

    def dictionary_encoded(name: str) -> bool:
        encodings = meta.row_group(0).column(columns.index(name)).encodings
        return any("DICTIONARY" in encoding for encoding in encodings)

    assert dictionary_encoded("channel") and dictionary_encoded("csat")
    assert not dictionary_encoded("conversation_id")
    assert not dictionary_encoded("started_at")
    assert pq.read_table(target, columns=["channel"])["channel"].to_pylist()[:3] == [
        "chat",
        "sms",
        "chat",
    ]
