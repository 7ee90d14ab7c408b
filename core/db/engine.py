"""Async engine and sessions for SQLite (embedded) and PostgreSQL (scale-out).

SQLite has one writer at a time. Every transaction therefore starts with
``BEGIN IMMEDIATE``: it takes the write lock up front (waiting up to ``busy_timeout``)
instead of failing later with "database is locked" when a read turns into a write. The
price is that reads queue behind writes too, except on the hot paths that only read (API key
lookups): :func:`make_read_sessionmaker` sessions begin a deferred transaction, which in WAL
mode never waits for a writer. Embedded mode is for one process and modest load, PostgreSQL
for the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY = "switchyard_read_only"


def async_url(database_url: str) -> URL:
    """Pick the async driver for a plain ``sqlite:///`` or ``postgresql://`` URL."""
    url = make_url(database_url)
    if url.drivername in {"sqlite", "sqlite+pysqlite"}:
        return url.set(drivername="sqlite+aiosqlite")
    if url.drivername in {"postgresql", "postgres", "postgresql+psycopg2"}:
        return url.set(drivername="postgresql+asyncpg")
    return url


def _prepare_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves; pysqlite's implicit transactions defer the lock.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk when it returns (NORMAL may lose the last ones on power
        # loss), and an acknowledged webhook must survive that. Group commit pays for it.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")  # deferred: WAL readers never wait for a writer
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(database_url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    url = async_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, echo=echo)
        _prepare_sqlite(engine.sync_engine)
        return engine
    return create_async_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )


def make_sync_sqlite_engine(url: URL) -> Engine:
    """A blocking engine on the same SQLite file as an async engine's ``url``, set up alike
    (WAL, FULL sync, foreign keys, ``BEGIN IMMEDIATE``); a connection may pass from one
    thread to another (never used by two at once)."""
    engine = create_engine(
        url.set(drivername="sqlite+pysqlite"), connect_args={"check_same_thread": False}
    )
    _prepare_sqlite(engine)
    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def make_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for transactions that only read (on SQLite they take no write lock)."""
    return async_sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)
