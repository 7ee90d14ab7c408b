"""Call records: one row per gateway request and per upstream call, written off the hot path.

The gateway hands each finished :class:`CallRecord` to :meth:`Recorder.submit`, which only
appends to a buffer; a background task writes the buffer in one transaction every
``flush_interval`` seconds (or at ``max_batch`` rows), so recording adds no latency to a
call. If the database is down, rows wait in the buffer (bounded by ``max_pending``; beyond
that the oldest are dropped and counted) and the next flush tries again. What waits and what
was dropped is exported to Prometheus (``switchyard_gateway_log_*``, see
:class:`~core.gateway.batching.BacklogCollector`).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from core.db.models import GatewayRequest, UpstreamCall
from core.gateway.batching import BatchWriter, LoopShare
from core.gateway.transactions import (
    SessionTransactions,
    Statement,
    Transactions,
)
from core.logging import get_logger

log = get_logger(__name__)

REQUESTS: Table = GatewayRequest.__table__  # type: ignore[assignment]
UPSTREAM_CALLS: Table = UpstreamCall.__table__  # type: ignore[assignment]


# SQLite's default limit on a statement's parameters (SQLITE_MAX_VARIABLE_NUMBER).
SQLITE_MAX_PARAMETERS = 32_766 if sqlite3.sqlite_version_info >= (3, 32) else 999

# How a flush feeds the database. The event loop's thread builds the statements' parameters
# before any transaction opens, yielding to requests as it goes (:class:`LoopShare`):
# building 200 rows at once held the loop for milliseconds, which was the gateway's p99 at
# concurrency 1. Then one transaction per flush writes them (:mod:`core.gateway.transactions`).
#
# On SQLite the statements run on the loop too (:class:`SqliteTransactions`), so they stay
# small there: 4 us a row to bind and insert on a fast machine and an empty table, but on a
# slow machine 25-row statements held the loop 0.6-1.3 ms at p99 and 10-row ones
# 0.4-0.6 ms, at the same flush time (`python -m tests.bench.record_ids --rows 4500`).
SQLITE_ROWS_PER_STATEMENT = 10
ROWS_PER_STATEMENT = 200  # elsewhere: one asyncpg executemany, encoded on the loop


@dataclass(frozen=True)
class _Insert:
    """An INSERT compiled once per table and dialect, fed plain tuples.

    Records are written at the gateway's full call rate from the event loop's thread; going
    through SQLAlchemy's per-row parameter processing cost ~0.1 ms a row there, this costs a
    few microseconds.

    On SQLite the rows go as multi-row ``VALUES`` statements, not ``executemany``: one
    statement to step per ``SQLITE_ROWS_PER_STATEMENT`` rows rather than one per row (when
    the driver ran in a thread, each step also cost a wait for the GIL, and one row a step
    let a busy gateway make records faster than it wrote them). asyncpg pipelines each
    ``executemany`` itself.
    """

    sql: str
    keys: tuple[str, ...]
    processed: tuple[tuple[int, Callable[[Any], Any]], ...]  # (position, bind processor)
    row_placeholders: str | None = None  # "(?, ?, ...)" where rows go many to a statement
    rows_per_statement: int = ROWS_PER_STATEMENT

    def values(self, row: dict[str, Any]) -> tuple[Any, ...]:
        out = [row[key] for key in self.keys]
        for position, process in self.processed:
            out[position] = process(out[position])
        return tuple(out)  # executemany takes tuples

    async def prepare(self, rows: Iterable[dict[str, Any]]) -> list[Statement]:
        """The statements inserting ``rows``. ``rows`` is read lazily and the loop yielded to
        between rows as :class:`LoopShare` says, so a generator's own work is paced too."""
        statements: list[Statement] = []
        share = LoopShare()
        chunk: list[tuple[Any, ...]] = []
        for row in rows:
            chunk.append(self.values(row))
            if len(chunk) == self.rows_per_statement:
                statements.append(self._statement(chunk))
                chunk = []
            await share.checkpoint()
        if self.row_placeholders is None:
            return [*statements, self._statement(chunk)] if chunk else statements
        # The rest in power-of-two sizes: a handful of distinct statements per table, so the
        # driver's statement cache never churns.
        start = 0
        for size in _powers_of_two(len(chunk)):
            statements.append(self._statement(chunk[start : start + size]))
            start += size
        return statements

    def _statement(self, rows: list[tuple[Any, ...]]) -> Statement:
        if self.row_placeholders is None:
            return self.sql, rows
        return self._many(len(rows)), tuple(value for row in rows for value in row)

    async def execute(self, connection: AsyncConnection, rows: Iterable[dict[str, Any]]) -> None:
        """Insert ``rows`` inside the caller's transaction."""
        for sql, params in await self.prepare(rows):
            await connection.exec_driver_sql(sql, params)

    @functools.cache  # noqa: B019 - a few sizes per table, for the process's lifetime
    def _many(self, rows: int) -> str:
        head = self.sql[: self.sql.rindex(" VALUES ")]
        return f"{head} VALUES {', '.join([self.row_placeholders or ''] * rows)}"


def _powers_of_two(count: int) -> Iterator[int]:
    """``count`` as descending powers of two (13: 8, 4, 1)."""
    while count:
        part = 1 << (count.bit_length() - 1)
        yield part
        count -= part


@functools.cache
def insert_for(table: Table, dialect: Dialect) -> _Insert:
    """The fast INSERT for ``table`` on ``dialect`` (the call records' and the call audit's
    background writers share it)."""
    columns = [column for column in table.columns if column.autoincrement is not True]
    compiled = table.insert().compile(dialect=dialect, column_keys=[c.key for c in columns])
    by_key = {column.key: column for column in columns}
    keys = tuple(compiled.positiontup or ())
    if not compiled.positional or set(keys) != set(by_key):
        raise RuntimeError(f"cannot build a positional INSERT for {table.name} on {dialect.name}")
    processors = [by_key[key].type.bind_processor(dialect) for key in keys]
    many: dict[str, Any] = {}
    if dialect.name == "sqlite":
        many = {
            "row_placeholders": "(" + ", ".join(["?"] * len(keys)) + ")",
            "rows_per_statement": min(
                SQLITE_ROWS_PER_STATEMENT, SQLITE_MAX_PARAMETERS // len(keys)
            ),
        }
    return _Insert(
        sql=compiled.string,
        keys=keys,
        processed=tuple((i, p) for i, p in enumerate(processors) if p is not None),
        **many,
    )


@dataclass
class AttemptRecord:
    attempt: int
    model: str
    http_status: int
    latency_ms: float
    error_type: str | None = None
    upstream_request_id: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_picodollars: int = 0
    retry_after: float | None = None
    ttft_ms: float | None = None


@dataclass
class CallRecord:
    id: str
    trace_id: str
    tenant_id: str
    feature: str
    api_key_id: str | None
    task: str | None
    requested_model: str | None
    model: str
    stream: bool
    priority: str
    prompt_hash: str
    created_at: datetime
    status: str = "ok"
    http_status: int = 200
    error_type: str | None = None
    stop_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cost_picodollars: int = 0
    list_cost_picodollars: int = 0
    naive_cost_picodollars: int = 0
    queue_ms: float = 0.0
    ttft_ms: float | None = None
    total_ms: float = 0.0
    retries: int = 0
    dedup_hit: bool = False
    cache_hit: bool = False
    escalated: bool = False
    breakpoints_added: int = 0
    compression_tokens_saved: int = 0
    response_hash: str | None = None
    prompt_ref: str | None = None  # name@version from the prompt registry, if the caller said
    validation_failed: bool = False  # the caller's check of the answer failed
    batch: bool = False  # answered through Message Batches, charged at the batch price
    redactions: dict[str, int] = field(default_factory=dict)  # per data class, never values
    attempts: list[AttemptRecord] = field(default_factory=list)

    @property
    def upstream_calls(self) -> int:
        return len(self.attempts)

    def request_row(self) -> dict[str, Any]:
        row = dict(vars(self))  # dataclasses.asdict deep-copies: ten times slower here
        del row["attempts"]
        row["upstream_calls"] = self.upstream_calls
        return row

    def attempt_rows(self) -> list[dict[str, Any]]:
        return [
            {"request_id": self.id, "created_at": self.created_at, **vars(attempt)}
            for attempt in self.attempts
        ]


class Recorder(BatchWriter[CallRecord]):
    label = "gateway call records"

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        transactions: Transactions | None = None,
        flush_interval: float = 0.25,
        max_batch: int = 1000,
        max_pending: int = 200_000,
    ) -> None:
        super().__init__(
            flush_interval=flush_interval, max_batch=max_batch, max_pending=max_pending
        )
        self.transactions = transactions or SessionTransactions(sessions)

    def submit(self, record: CallRecord) -> None:
        self._buffer(record)

    async def write_batch(self, batch: list[CallRecord]) -> int:
        try:
            await self._write(batch)
        except (IntegrityError, DataError):
            # A row the database refuses (its tenant was deleted, say) must not block
            # every row behind it: write one by one and drop only the refused ones.
            return len(await self._write_each(batch))
        return len(batch)

    async def _write(self, batch: list[CallRecord]) -> None:
        dialect = self.transactions.dialect
        statements = await insert_for(REQUESTS, dialect).prepare(
            record.request_row() for record in batch
        )
        statements += await insert_for(UPSTREAM_CALLS, dialect).prepare(
            row for record in batch for row in record.attempt_rows()
        )
        await self.transactions.run(statements)

    async def _write_each(self, batch: list[CallRecord]) -> list[CallRecord]:
        kept: list[CallRecord] = []
        for record in batch:
            try:
                await self._write([record])
            except (IntegrityError, DataError) as exc:
                self.dropped += 1
                log.error("gateway call record refused", record_id=record.id, error=str(exc))
            else:
                kept.append(record)
        return kept
