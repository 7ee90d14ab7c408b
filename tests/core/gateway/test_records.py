"""Call records are written in batches off the request path, and one bad row loses nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError

from core.auth import create_tenant
from core.db.models import GatewayRequest, UpstreamCall
from core.db.types import new_id
from core.gateway.batching import LoopShare
from core.gateway.records import REQUESTS, AttemptRecord, CallRecord, Recorder, insert_for
from core.gateway.transactions import (
    SessionTransactions,
    SqliteTransactions,
    Transactions,
    transactions_for,
)
from core.services import Services
from tests.core.gateway.conftest import yield_every_time


def record(tenant_id: str, attempts: int = 1) -> CallRecord:
    return CallRecord(
        id=new_id("gwr"),
        trace_id="t" * 32,
        tenant_id=tenant_id,
        feature="api",
        api_key_id=None,
        task="classify",
        requested_model="auto",
        model="claude-haiku-5-5",
        stream=False,
        priority="interactive",
        prompt_hash="p" * 64,
        created_at=datetime.now(UTC),
        total_ms=12.5,
        cost_picodollars=1_234_567,
        attempts=[
            AttemptRecord(attempt=n + 1, model="claude-haiku-5-5", http_status=200, latency_ms=5)
            for n in range(attempts)
        ],
    )


@pytest.fixture(params=["as deployed", "in a session"])
async def transactions(
    request: pytest.FixtureRequest, services: Services
) -> AsyncIterator[Transactions]:
    """How the writer runs its transactions: as the gateway's factory picks (on an SQLite
    file, a thread of its own), and in an ordinary session."""
    made = (
        transactions_for(services.sessions)
        if request.param == "as deployed"
        else SessionTransactions(services.sessions)
    )
    yield made
    await made.aclose()


async def counts(services: Services) -> tuple[int, int]:
    async with services.sessions() as session:
        requests = await session.scalar(select(func.count()).select_from(GatewayRequest))
        calls = await session.scalar(select(func.count()).select_from(UpstreamCall))
        return int(requests or 0), int(calls or 0)


async def test_records_are_written_in_the_background(
    services: Services, transactions: Transactions
) -> None:
    async with services.sessions.begin() as session:
        tenant = await create_tenant(session, "acme")
    recorder = Recorder(services.sessions, transactions=transactions, flush_interval=0.01)
    for _ in range(5):
        recorder.submit(record(tenant.id, attempts=2))
    assert await counts(services) == (0, 0)  # submit only buffers
    for _ in range(200):
        if recorder.written == 5:
            break
        await asyncio.sleep(0.01)
    assert await counts(services) == (5, 10)
    await recorder.aclose()


async def test_a_refused_row_is_dropped_without_losing_the_batch(
    services: Services, transactions: Transactions
) -> None:
    async with services.sessions.begin() as session:
        tenant = await create_tenant(session, "acme")
    recorder = Recorder(services.sessions, transactions=transactions, flush_interval=60)
    recorder.submit(record(tenant.id))
    recorder.submit(record("ten_deleted_meanwhile"))  # violates the tenant foreign key
    recorder.submit(record(tenant.id))
    assert await recorder.flush() == 2
    assert recorder.dropped == 1
    assert len(recorder) == 0
    assert await counts(services) == (2, 2)
    await recorder.aclose()


async def test_closing_flushes_what_is_buffered(
    services: Services, transactions: Transactions
) -> None:
    async with services.sessions.begin() as session:
        tenant = await create_tenant(session, "acme")
    recorder = Recorder(services.sessions, transactions=transactions, flush_interval=60)
    recorder.submit(record(tenant.id))
    await recorder.aclose()
    assert await counts(services) == (1, 1)


async def test_a_large_flush_writes_every_row_with_few_distinct_statements(
    services: Services,
) -> None:
    async with services.sessions.begin() as session:
        tenant = await create_tenant(session, "acme")
    recorder = Recorder(services.sessions, flush_interval=60, max_batch=1000)
    originals = [record(tenant.id, attempts=1 + n % 3) for n in range(437)]
    for one in originals:
        recorder.submit(one)
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(services.engine.sync_engine, "before_cursor_execute", seen)
    try:
        assert await recorder.flush() == 437
    finally:
        event.remove(services.engine.sync_engine, "before_cursor_execute", seen)
    assert await counts(services) == (437, sum(len(one.attempts) for one in originals))
    async with services.sessions() as session:
        stored = (await session.scalars(select(GatewayRequest.id))).all()
    assert sorted(stored) == sorted(one.id for one in originals)
    if services.engine.dialect.name == "sqlite":
        # 437 requests: 43 statements of 10 rows, then 4 + 2 + 1, not 437 single rows.
        inserts = [s for s in statements if s.startswith("INSERT INTO gateway_requests")]
        assert [s.count("), (") + 1 for s in inserts] == [10] * 43 + [4, 2, 1]
    await recorder.aclose()


async def test_rows_are_prepared_yielding_to_the_event_loop(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parameters are built before any transaction opens, and other tasks run in between
    (here after every row), so a long batch never holds the event loop."""
    monkeypatch.setattr(LoopShare, "checkpoint", yield_every_time)
    async with services.sessions.begin() as session:
        tenant = await create_tenant(session, "acme")
    ticks = 0
    seen: list[int] = []  # the ticker's count when each row was built

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    def rows(count: int) -> Iterator[dict[str, Any]]:
        for _ in range(count):
            seen.append(ticks)
            yield record(tenant.id).request_row()

    running = asyncio.create_task(ticker())
    try:
        statements = await insert_for(REQUESTS, services.engine.dialect).prepare(rows(67))
    finally:
        running.cancel()
    assert all(later > earlier for earlier, later in pairwise(seen))
    if services.engine.dialect.name == "sqlite":
        assert [sql.count("), (") + 1 for sql, _ in statements] == [10] * 6 + [4, 2, 1]
    else:
        assert [len(params) for _, params in statements] == [67]  # one executemany


async def test_an_sqlite_transaction_is_all_or_nothing(
    services: Services,
) -> None:
    if services.engine.dialect.name != "sqlite":
        pytest.skip("SqliteTransactions are for SQLite files")
    async with services.sessions.begin() as session:
        tenant = await create_tenant(session, "acme")
    transactions = transactions_for(services.sessions)
    assert isinstance(transactions, SqliteTransactions)
    insert = insert_for(REQUESTS, transactions.dialect)
    good = await insert.prepare([record(tenant.id).request_row() for _ in range(30)])
    refused = await insert.prepare([record("ten_deleted_meanwhile").request_row()])
    try:
        with pytest.raises(IntegrityError):  # SQLAlchemy's, as from a session
            await transactions.run(good + refused)
        assert await counts(services) == (0, 0)
        await transactions.run(good)
        assert await counts(services) == (30, 0)
    finally:
        await transactions.aclose()
