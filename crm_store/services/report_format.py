"""Report files: CSV cells and chunks, typed Parquet, written streamed and whole.

One set of cell rules for every CSV the project hands out (the console's
downloads and ``crm report export``): datetimes ISO 8601 with "Z" (naive UTC),
booleans ``true``/``false``, None as an empty cell, and a guard against CSV
injection (a text cell starting with ``= + - @``, a tab or a carriage return
gets a leading ``'``, so a spreadsheet shows it instead of running it).

Parquet files carry an explicit schema (``REPORT_COLUMN_KINDS``: timestamp[us],
bool, int32, float64, string) and are written one record batch at a time, so
memory stays flat however many rows stream in. ``write_report_file`` writes to
``<path>.partial`` and renames it only when complete: a failed or interrupted
export leaves no file behind.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import IO, Any

from crm_store.errors import InvalidInput
from crm_store.services.reports import REPORT_COLUMNS

FORMATS = ("csv", "parquet")
SUFFIX_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
CSV_CHUNK_ROWS = 1000
PARQUET_BATCH_ROWS = 50_000
ARROW_CHUNK_ROWS = 2_000
PARTIAL_SUFFIX = ".partial"
# Characters a spreadsheet may read as the start of a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# Column kinds of the per-conversation report (``reports.REPORT_COLUMNS``).
REPORT_COLUMN_KINDS: dict[str, str] = {
    "conversation_id": "string",
    "channel": "string",
    "customer_id": "string",
    "value_tier": "string",
    "started_at": "timestamp",
    "ended_at": "timestamp",
    "status": "string",
    "outcome": "string",
    "escalated": "bool",
    "escalation_reason": "string",
    "escalated_at": "timestamp",
    "agent": "string",
    "first_response_at": "timestamp",
    "first_response_seconds": "float",
    "handle_seconds": "float",
    "csat": "int",
    "csat_requested": "bool",
    "recontact_at": "timestamp",
    "contained": "bool",
}

# Few distinct values: dictionary-encoded in Parquet. Ids and times are not
# (a dictionary of unique values only costs memory and file size).
DICTIONARY_COLUMNS = (
    "channel",
    "value_tier",
    "status",
    "outcome",
    "escalation_reason",
    "agent",
    "csat",
)

Progress = Callable[[int], None]


def csv_cell(value: object) -> str:
    """One CSV cell: ISO 8601 "Z" datetimes, true/false, "" for None, guarded text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_STARTS) else value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat() + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (int, float, Decimal)):
        return str(value)
    if isinstance(value, (dict, list, tuple)):
        return csv_cell(json.dumps(value, sort_keys=True, default=str))
    return csv_cell(str(value))


def csv_header() -> list[str]:
    """The header of the per-conversation report (``REPORT_COLUMNS``)."""
    return list(REPORT_COLUMNS)


def _cell_converter(
    header: Sequence[str], kinds: Mapping[str, str] | None
) -> Callable[[Sequence[object]], list]:
    """A row -> cells function with the result of ``csv_cell`` on every value.

    With a kind for every column, only the cells that need it are converted
    (``csv.writer`` itself writes str, int, float and None as ``csv_cell``
    would): about twice as fast as one ``csv_cell`` call per value.
    """
    if kinds is None and tuple(header) == REPORT_COLUMNS:
        kinds = REPORT_COLUMN_KINDS
    if kinds is None or any(name not in kinds for name in header):
        return lambda row: [csv_cell(value) for value in row]
    positions: dict[str, list[int]] = {}
    for index, name in enumerate(header):
        positions.setdefault(kinds[name], []).append(index)
    stamps = positions.get("timestamp", [])
    flags = positions.get("bool", [])
    texts = positions.get("string", [])
    numbers = positions.get("int", []) + positions.get("float", [])
    width = len(header)
    naive = dt.datetime

    def convert(row: Sequence[object]) -> list:
        cells = list(row)
        if len(cells) != width:
            return [csv_cell(value) for value in cells]
        for i in stamps:
            value = cells[i]
            if value is not None:
                cells[i] = (
                    value.isoformat() + "Z"
                    if type(value) is naive and value.tzinfo is None
                    else csv_cell(value)
                )
        for i in flags:
            value = cells[i]
            if value is True:
                cells[i] = "true"
            elif value is False:
                cells[i] = "false"
            elif value is not None:
                cells[i] = csv_cell(value)
        for i in texts:
            value = cells[i]
            if value is not None and (
                type(value) is not str or value.startswith(FORMULA_STARTS)
            ):
                cells[i] = csv_cell(value)
        for i in numbers:
            value = cells[i]
            if (
                value is not None
                and type(value) is not int
                and type(value) is not float
            ):
                cells[i] = csv_cell(value)
        return cells

    return convert


def _csv_chunks(
    rows: Iterable[Sequence[object]],
    header: Sequence[str],
    chunk_rows: int,
    kinds: Mapping[str, str] | None,
) -> Iterator[tuple[str, int]]:
    """(CSV text, rows in it) chunks; the first holds the header."""
    convert = _cell_converter(header, kinds)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    source = iter(rows)
    empty = True
    while True:
        chunk = [convert(row) for row in islice(source, chunk_rows)]
        if not chunk:
            break
        writer.writerows(chunk)
        yield buffer.getvalue(), len(chunk)
        buffer.seek(0)
        buffer.truncate()
        empty = False
    if empty:
        yield buffer.getvalue(), 0


def csv_rows(
    rows: Iterable[Sequence[object]],
    header: Sequence[str],
    *,
    chunk_rows: int = CSV_CHUNK_ROWS,
    kinds: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """CSV text of ``header`` then ``rows``, in chunks of ``chunk_rows`` rows.

    Every value is written as ``csv_cell`` writes it. Streams: only one chunk
    is held at a time; the header alone is one chunk when there are no rows.
    ``kinds`` (column -> string, timestamp, bool, int, float; the report's own
    for ``REPORT_COLUMNS``) only makes it faster.
    """
    for text, _count in _csv_chunks(rows, header, chunk_rows, kinds):
        yield text


def write_csv(
    rows: Iterable[Sequence[object]],
    stream: IO[str],
    header: Sequence[str],
    *,
    kinds: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> int:
    """Write ``header`` and ``rows`` as CSV to ``stream``; return the row count.

    ``progress(rows_done)`` is called after every chunk of 1,000 rows.
    """
    done = 0
    for text, count in _csv_chunks(rows, header, CSV_CHUNK_ROWS, kinds):
        stream.write(text)
        done += count
        if progress is not None and count:
            progress(done)
    return done


def arrow_schema(columns: Sequence[str], kinds: Mapping[str, str]) -> Any:
    """The pyarrow schema of ``columns`` (kinds: string, timestamp, bool, int, float).

    Raises:
        InvalidInput: a column without a kind, or an unknown kind.
    """
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "timestamp": pa.timestamp("us"),
        "bool": pa.bool_(),
        "int": pa.int32(),
        "float": pa.float64(),
    }
    fields = []
    for name in columns:
        kind = kinds.get(name)
        if kind not in types:
            raise InvalidInput(f"no Parquet type for column {name!r} ({kind!r})")
        fields.append(pa.field(name, types[kind], nullable=True))
    return pa.schema(fields)


def write_parquet(
    rows: Iterable[Sequence[object]],
    path: Path | str,
    columns: Sequence[str],
    *,
    kinds: Mapping[str, str] = REPORT_COLUMN_KINDS,
    batch_rows: int = PARQUET_BATCH_ROWS,
    dictionary_columns: Sequence[str] = DICTIONARY_COLUMNS,
    progress: Progress | None = None,
) -> int:
    """Write ``rows`` to a Parquet file, one row group per ``batch_rows`` rows.

    Rows become Arrow arrays ``ARROW_CHUNK_ROWS`` at a time (few Python objects
    alive at once); every ``batch_rows`` rows the collected record batches are
    written as one row group. Only ``dictionary_columns`` are dictionary-encoded
    (snappy compression for all). Returns the row count; ``progress(rows_done)``
    is called after every row group.

    Raises:
        InvalidInput: a column without a Parquet type, or a row of another width.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(columns, kinds)
    step = max(1, min(ARROW_CHUNK_ROWS, batch_rows))
    source = iter(rows)
    done = 0
    dictionary = [name for name in columns if name in dictionary_columns]
    # The system allocator hands freed memory back; Arrow's default (mimalloc)
    # kept ~30 MB more resident for the same work.
    pool = pa.system_memory_pool()
    with pq.ParquetWriter(
        str(path), schema, use_dictionary=dictionary, memory_pool=pool
    ) as writer:
        batches: list[Any] = []
        pending = 0
        while True:
            chunk = list(islice(source, step))
            if chunk:
                batches.append(_record_batch(pa, schema, chunk, pool))
                pending += len(chunk)
            if pending and (pending >= batch_rows or not chunk):
                writer.write_table(
                    pa.Table.from_batches(batches, schema=schema),
                    row_group_size=pending,
                )
                done += pending
                batches, pending = [], 0
                if progress is not None:
                    progress(done)
            if not chunk:
                break
    return done


def _record_batch(pa: Any, schema: Any, chunk: list, pool: Any) -> Any:
    """One record batch of ``chunk`` (rows as wide as ``schema``) in ``pool``."""
    width = len(schema)
    if any(len(row) != width for row in chunk):
        raise InvalidInput(f"every row must have {width} values")
    columns = list(zip(*chunk, strict=True))
    arrays = [
        pa.array(values, type=field.type, memory_pool=pool)
        for values, field in zip(columns, schema, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def format_for(path: Path | str, requested: str | None) -> str:
    """The file format: ``requested``, else from the suffix of ``path``, else csv.

    Raises:
        InvalidInput: an unknown format.
    """
    if requested is not None:
        fmt = requested.strip().lower()
        if fmt not in FORMATS:
            raise InvalidInput(
                f"unknown format {requested!r}: use {' or '.join(FORMATS)}"
            )
        return fmt
    return SUFFIX_FORMATS.get(Path(str(path)).suffix.lower(), "csv")


def partial_path(path: Path) -> Path:
    """Where a file is written until it is complete (``<path>.partial``)."""
    return path.with_name(path.name + PARTIAL_SUFFIX)


def write_report_file(
    rows: Iterable[Sequence[object]],
    path: Path,
    fmt: str,
    *,
    columns: Sequence[str] = REPORT_COLUMNS,
    kinds: Mapping[str, str] = REPORT_COLUMN_KINDS,
    progress: Progress | None = None,
    before_rename: Callable[[int], None] | None = None,
) -> int:
    """Write ``rows`` as ``fmt`` to ``path`` through ``<path>.partial``.

    ``before_rename(row_count)`` runs when the partial file is complete (e.g. to
    commit an audit entry); the partial file is renamed only when it returns.
    On any error or interrupt the partial file is removed and the error raised.
    Returns the row count.

    Raises:
        InvalidInput: an unknown format or a column without a Parquet type.
    """
    fmt = format_for(path, fmt)
    partial = partial_path(path)
    try:
        if fmt == "csv":
            with open(partial, "w", encoding="utf-8", newline="") as stream:
                count = write_csv(rows, stream, columns, kinds=kinds, progress=progress)
        else:
            count = write_parquet(
                rows, partial, columns, kinds=kinds, progress=progress
            )
        if before_rename is not None:
            before_rename(count)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return count
