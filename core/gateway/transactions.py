"""How the gateway's background writers (call records, call audit) run one transaction of
statements they have prepared beforehand.

On an SQLite file, :class:`SqliteTransactions`: statements on the event loop in paced
slices, the lock and the commit in a thread (its docstring says why, with the figures).
Elsewhere (PostgreSQL: asyncpg runs on the loop and pipelines) :class:`SessionTransactions`
runs them in an ordinary session.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import PoolProxiedConnection

from core.db.engine import make_sync_sqlite_engine
from core.gateway.batching import LoopShare

Statement = tuple[str, Any]  # SQL and its parameters (one row's, or a list of rows)


class Transactions(Protocol):
    @property
    def dialect(self) -> Dialect: ...

    async def run(self, statements: Sequence[Statement]) -> None:
        """Execute ``statements`` in one transaction: all of them, or none."""

    async def aclose(self) -> None: ...


def engine_of(sessions: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    """The engine ``sessions`` are bound to (known without taking a connection)."""
    bind = sessions.kw["bind"]
    if not isinstance(bind, AsyncEngine):
        raise TypeError(f"sessions bound to {type(bind).__name__}, not an AsyncEngine")
    return bind


class SessionTransactions:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._dialect = engine_of(sessions).dialect

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    async def run(self, statements: Sequence[Statement]) -> None:
        async with self._sessions.begin() as session:
            connection = await session.connection()
            for sql, params in statements:
                await connection.exec_driver_sql(sql, params)

    async def aclose(self) -> None:
        return None


class SqliteTransactions:
    """A transaction on an SQLite file whose statements run on the event loop itself,
    paced by :class:`LoopShare`, while what may block runs in a thread of its own: taking
    the write lock (``BEGIN IMMEDIATE`` waits for other writers) and committing (fsync).

    Run on the loop, a 10-row statement holds it well under a millisecond, like any other
    slice of background work. Run in a thread, the same statements held the GIL to bind their
    parameters while the loop wanted it: measured side by side, that added ~1 ms to the
    gateway's p99 at concurrency 1, and awaited one by one from the loop each took ~60 ms to
    come back on a saturated gateway. Transactions take turns (one connection, one thread).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = make_sync_sqlite_engine(engine.url)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="switchyard-records")
        self._turn = asyncio.Lock()

    @property
    def dialect(self) -> Dialect:
        return self._engine.dialect

    async def run(self, statements: Sequence[Statement]) -> None:
        # Shielded: a transaction that has taken the write lock always ends (commit or
        # rollback), even if its caller is cancelled; left open, it would hold the lock.
        await asyncio.shield(self._transaction(statements))

    async def _transaction(self, statements: Sequence[Statement]) -> None:
        loop = asyncio.get_running_loop()
        async with self._turn:
            connection = await loop.run_in_executor(self._thread, self._begin)
            try:
                cursor = connection.cursor()
                share = LoopShare()
                for sql, params in statements:
                    try:
                        cursor.execute(sql, params)
                    except sqlite3.IntegrityError as exc:  # callers expect SQLAlchemy's
                        raise IntegrityError(sql, None, exc) from exc
                    await share.checkpoint()
                await loop.run_in_executor(self._thread, connection.commit)
            finally:
                # A no-op after the commit; after an error, the rollback.
                await loop.run_in_executor(self._thread, self._end, connection)

    def _begin(self) -> PoolProxiedConnection:
        connection = self._engine.raw_connection()  # set up by the engine's connect hook
        try:
            connection.cursor().execute("BEGIN IMMEDIATE")
        except BaseException:
            connection.close()
            raise
        return connection

    @staticmethod
    def _end(connection: PoolProxiedConnection) -> None:
        try:
            connection.rollback()
        finally:
            connection.close()  # back to the pool

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._close)

    def _close(self) -> None:
        self._thread.shutdown(wait=True)
        self._engine.dispose()


def transactions_for(sessions: async_sessionmaker[AsyncSession]) -> Transactions:
    """:class:`SqliteTransactions` on an SQLite file, :class:`SessionTransactions` elsewhere
    (and for an in-memory database, which another connection would not see)."""
    engine = engine_of(sessions)
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        return SqliteTransactions(engine)
    return SessionTransactions(sessions)
