"""How the gateway's background writers (call records, call audit) run one transaction of
statements they have prepared beforehand.

On SQLite every statement awaited from the event loop is a round trip to the driver's
thread, and its answer waits in the loop's queue behind every request ready to run: on a
saturated gateway that was ~60 ms a statement, the writers fell behind the calls and their
buffers grew without end. :class:`ThreadTransactions` runs a whole transaction in a thread
of its own, one hop from the loop, on its own connection to the same file; its single
thread also makes the writers take turns at SQLite's one write lock, in order, instead of
racing for it through the busy handler. Elsewhere (PostgreSQL: asyncpg runs on the loop
and pipelines) :class:`SessionTransactions` runs it in an ordinary session.
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

from core.db.engine import make_sync_sqlite_engine

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


class ThreadTransactions:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = make_sync_sqlite_engine(engine.url)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="switchyard-records")

    @property
    def dialect(self) -> Dialect:
        return self._engine.dialect

    async def run(self, statements: Sequence[Statement]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._run, statements)

    def _run(self, statements: Sequence[Statement]) -> None:
        # The driver's own cursor, not SQLAlchemy's execution path: this thread holds the
        # GIL for whatever Python it runs between statements, and the event loop waits.
        connection = self._engine.raw_connection()  # set up by the engine's connect hook
        try:
            cursor = connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    try:
                        cursor.execute(sql, params)
                    except sqlite3.IntegrityError as exc:  # callers expect SQLAlchemy's
                        raise IntegrityError(sql, None, exc) from exc
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
        finally:
            connection.close()  # back to the pool

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._close)

    def _close(self) -> None:
        self._thread.shutdown(wait=True)
        self._engine.dispose()


def transactions_for(sessions: async_sessionmaker[AsyncSession]) -> Transactions:
    """A thread of their own for the writers on an SQLite file, a session elsewhere."""
    engine = engine_of(sessions)
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        return ThreadTransactions(engine)
    return SessionTransactions(sessions)
