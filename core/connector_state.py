"""Connector state in the database: sealed values and leased locks, per connection.

Implements :class:`connectors.base.StateStore`. One table, ``connector_state``, keyed by
(connection, key): a value row holds a KeyRing token (AES-GCM, bound to the connection and
key, so a row copied elsewhere does not open); a lock row (``lock:<name>``) holds an owner
and a lease. Taking a lock is one compare-and-set ``UPDATE`` (free, or its lease ran out),
so it works the same on SQLite and PostgreSQL and across any number of processes; a
waiter retries with a little jitter until ``wait_seconds``. A holder that crashes blocks
the others for at most the lease.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.crypto import KeyRing
from core.db.dialect import insert_ignoring_conflicts
from core.db.models import ConnectorStateRow
from core.db.types import new_id, utcnow
from core.errors import ConnectorTransientError

LEASE = timedelta(seconds=30)
WAIT_SECONDS = 30.0
RETRY_SECONDS = 0.05


class StateLockBusy(ConnectorTransientError):
    problem_type = "connector-state-busy"
    title = "Another worker holds this connection's lock; the job will retry"


class DatabaseStateStore:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        keyring: KeyRing,
        connection_id: str,
        *,
        lease: timedelta = LEASE,
        wait_seconds: float = WAIT_SECONDS,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self._keyring = keyring
        self._connection_id = connection_id
        self._lease = lease
        self._wait_seconds = wait_seconds
        self._clock = clock

    def _aad(self, key: str) -> bytes:
        return f"connector-state\x00{self._connection_id}\x00{key}".encode()

    async def get(self, key: str) -> dict[str, Any] | None:
        async with self._sessions() as session:
            sealed = await session.scalar(
                select(ConnectorStateRow.sealed).where(
                    ConnectorStateRow.connection_id == self._connection_id,
                    ConnectorStateRow.key == key,
                )
            )
        if not sealed:
            return None
        value: dict[str, Any] = orjson.loads(self._keyring.decrypt(sealed, self._aad(key)))
        return value

    async def put(self, key: str, value: Mapping[str, Any]) -> None:
        sealed = self._keyring.encrypt(orjson.dumps(dict(value)), self._aad(key))
        async with self._sessions.begin() as session:
            await self._ensure(session, key)
            await session.execute(
                update(ConnectorStateRow)
                .where(
                    ConnectorStateRow.connection_id == self._connection_id,
                    ConnectorStateRow.key == key,
                )
                .values(sealed=sealed, updated_at=self._clock())
            )

    async def _ensure(self, session: AsyncSession, key: str) -> None:
        await session.execute(
            insert_ignoring_conflicts(
                session,
                ConnectorStateRow.__table__,  # type: ignore[arg-type]
                ["connection_id", "key"],
            ),
            [{"connection_id": self._connection_id, "key": key, "updated_at": self._clock()}],
        )

    @asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        key, owner = f"lock:{name}", new_id("lck")
        deadline = asyncio.get_running_loop().time() + self._wait_seconds
        while not await self._take(key, owner):
            if asyncio.get_running_loop().time() >= deadline:
                raise StateLockBusy(
                    f"connection {self._connection_id}: lock {name!r} stayed busy for "
                    f"{self._wait_seconds:g}s"
                )
            await asyncio.sleep(RETRY_SECONDS * (1 + random.random()))
        try:
            yield
        finally:
            await self._release(key, owner)

    async def _take(self, key: str, owner: str) -> bool:
        now = self._clock()
        async with self._sessions.begin() as session:
            await self._ensure(session, key)
            taken = await session.execute(
                update(ConnectorStateRow)
                .where(
                    ConnectorStateRow.connection_id == self._connection_id,
                    ConnectorStateRow.key == key,
                    or_(
                        ConnectorStateRow.lock_owner.is_(None),
                        ConnectorStateRow.lock_expires_at < now,
                    ),
                )
                .values(lock_owner=owner, lock_expires_at=now + self._lease, updated_at=now)
            )
        return bool(taken.rowcount)  # type: ignore[attr-defined]

    async def _release(self, key: str, owner: str) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(ConnectorStateRow)
                .where(
                    ConnectorStateRow.connection_id == self._connection_id,
                    ConnectorStateRow.key == key,
                    ConnectorStateRow.lock_owner == owner,
                )
                .values(lock_owner=None, lock_expires_at=None)
            )
