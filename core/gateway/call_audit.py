"""The encrypted audit log of calls: each request's prompt and answer, sealed, kept a while.

What is kept is what left and what came back: the request body as sent upstream (after
redaction) and the answer as received (before the caller's placeholders were restored),
as one JSON document ``{"request": …, "response": … | null, "error": … | null}``. It is
sealed with the process's :class:`~core.crypto.KeyRing` (AES-GCM; associated data
``call-audit:<tenant id>:<request id>``, so a sealed blob moved to another row or tenant
no longer opens) and stored in ``call_audit``, apart from the call records, which carry
hashes only. Rows expire after the retention period (:meth:`CallAuditLog.purge_expired`).

Like the call records (:mod:`core.gateway.records`), writing is off the request path:
:meth:`CallAuditLog.submit` only appends to a bounded buffer; a background task serializes,
seals and inserts in batches, leaving the event loop to requests as it goes.

Rotation without downtime: put the new key first in ``SWITCHYARD_ENCRYPTION_KEYS`` (old
rows still open with the old key, new rows are sealed with the new one), run
:meth:`CallAuditLog.reseal` until nothing is left under the old key, then drop it.

Reading (:func:`read_call`) is for the admin endpoint only, which requires a reason and
audits every read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Table, delete, select, update
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.crypto import DecryptionFailed, KeyRing
from core.db.models import CallAudit
from core.db.types import utcnow
from core.errors import NotFound, TerminalError
from core.gateway.batching import BatchWriter, LoopShare
from core.gateway.records import CallRecord, insert_for
from core.gateway.transactions import SessionTransactions, Transactions
from core.logging import get_logger

log = get_logger(__name__)

CALL_AUDIT: Table = CallAudit.__table__  # type: ignore[assignment]
Response = Mapping[str, Any] | bytes | None  # a message, or its JSON as received


class CallAuditUnreadable(TerminalError):
    """The record exists but cannot be opened: the key that sealed it is no longer
    configured, or the sealed data does not belong to this row."""

    problem_type = "call-audit-unreadable"
    title = "Audited call cannot be decrypted"
    status = 409


def associated_data(tenant_id: str, request_id: str) -> bytes:
    """Binds a sealed document to its row: another row's or tenant's data fails to open."""
    return f"call-audit:{tenant_id}:{request_id}".encode()


@dataclass(frozen=True, slots=True)
class _Pending:
    id: str
    tenant_id: str
    created_at: datetime
    error: str | None
    request: Mapping[str, Any]
    response: Response


@dataclass
class ResealReport:
    resealed: int = 0
    unreadable: dict[str, int] = field(default_factory=dict)  # key id → rows left sealed


class CallAuditLog(BatchWriter[_Pending]):
    label = "call audit records"

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        keyring: KeyRing,
        retention: timedelta,
        *,
        transactions: Transactions | None = None,
        flush_interval: float = 0.5,
        max_batch: int = 1000,
        max_pending: int = 10_000,
    ) -> None:
        super().__init__(
            flush_interval=flush_interval, max_batch=max_batch, max_pending=max_pending
        )
        self.transactions = transactions or SessionTransactions(sessions)
        self._sessions = sessions
        self.keyring = keyring
        self.retention = retention

    # ------------------------------------------------------------- request path

    def submit(self, record: CallRecord, request: Mapping[str, Any], response: Response) -> None:
        """Buffer one call's request and answer (no I/O, no serializing); never raises."""
        try:
            error = record.error_type if record.status != "ok" else None
            self._buffer(
                _Pending(record.id, record.tenant_id, record.created_at, error, request, response)
            )
        except Exception:
            log.exception("buffering a call for the audit log failed", request_id=record.id)

    # --------------------------------------------------------------- background

    def _seal(self, item: _Pending) -> dict[str, Any] | None:
        """The row for one call: serialized and encrypted; None (logged) for a call whose
        document cannot be serialized."""
        response = item.response
        try:
            document = orjson.dumps(
                {
                    "request": item.request,
                    "response": orjson.Fragment(response)
                    if isinstance(response, bytes)
                    else response,
                    "error": item.error,
                }
            )
        except TypeError as exc:  # orjson.JSONEncodeError
            log.error("call audit record not serializable", request_id=item.id, error=str(exc))
            return None
        return {
            "id": item.id,
            "tenant_id": item.tenant_id,
            "key_id": self.keyring.active_key_id,
            "sealed": self.keyring.encrypt(document, associated_data(item.tenant_id, item.id)),
            "created_at": item.created_at,
            "expires_at": item.created_at + self.retention,
        }

    async def write_batch(self, batch: list[_Pending]) -> int:
        """Seal and write one batch; returns the rows written.

        Sealing runs on the event loop, paced by :class:`LoopShare`, so a request arriving
        meanwhile barely waits. On a worker thread it competed for the GIL instead: the loop
        waited up to a switch interval each time it wanted the GIL back, which showed in the
        gateway's p99.
        """
        rows: list[dict[str, Any]] = []
        share = LoopShare()
        for item in batch:
            if (row := self._seal(item)) is not None:
                rows.append(row)
            await share.checkpoint()
        self.dropped += len(batch) - len(rows)
        if not rows:
            return 0
        try:
            await self._write(rows)
        except (IntegrityError, DataError):
            rows = await self._write_each(rows)
        return len(rows)

    async def _write(self, rows: list[dict[str, Any]]) -> None:
        statements = await insert_for(CALL_AUDIT, self.transactions.dialect).prepare(rows)
        await self.transactions.run(statements)

    async def _write_each(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = []
        for row in rows:
            try:
                await self._write([row])
            except (IntegrityError, DataError) as exc:
                self.dropped += 1
                log.error("call audit record refused", request_id=row["id"], error=str(exc))
            else:
                kept.append(row)
        return kept

    # -------------------------------------------------------------- maintenance

    async def purge_expired(self, now: datetime | None = None, *, batch_size: int = 1000) -> int:
        """Delete rows past their retention, a batch per transaction; returns how many."""
        now = now or utcnow()
        deleted = 0
        while True:
            async with self._sessions.begin() as session:
                due = (
                    select(CallAudit.id)
                    .where(CallAudit.expires_at <= now)
                    .order_by(CallAudit.expires_at)
                    .limit(batch_size)
                )
                ids = list((await session.scalars(due)).all())
                if ids:
                    await session.execute(delete(CallAudit).where(CallAudit.id.in_(ids)))
            deleted += len(ids)
            if len(ids) < batch_size:
                return deleted

    async def reseal(self, *, batch_size: int = 500) -> ResealReport:
        """Re-encrypt every row not sealed with the active key, a batch per transaction.

        Rows whose key is no longer in the ring cannot be opened and stay as they are
        (counted per key id in the report); everything else moves to the active key.
        """
        report = ResealReport()
        active = self.keyring.active_key_id
        after = ""
        while True:
            async with self._sessions.begin() as session:
                query = (
                    select(CallAudit.id, CallAudit.tenant_id, CallAudit.key_id, CallAudit.sealed)
                    .where(CallAudit.key_id != active, CallAudit.id > after)
                    .order_by(CallAudit.id)
                    .limit(batch_size)
                )
                rows = (await session.execute(query)).all()
                for row in rows:
                    try:
                        token = self.keyring.rewrap(
                            row.sealed, associated_data(row.tenant_id, row.id)
                        )
                    except DecryptionFailed:
                        report.unreadable[row.key_id] = report.unreadable.get(row.key_id, 0) + 1
                        continue
                    if token is None:
                        continue
                    await session.execute(
                        update(CallAudit)
                        .where(CallAudit.id == row.id, CallAudit.sealed == row.sealed)
                        .values(sealed=token, key_id=active)
                    )
                    report.resealed += 1
            if len(rows) < batch_size:
                return report
            after = rows[-1].id

    async def read(self, session: AsyncSession, tenant_id: str, request_id: str) -> dict[str, Any]:
        return await read_call(session, self.keyring, tenant_id, request_id)


async def read_call(
    session: AsyncSession, keyring: KeyRing, tenant_id: str, request_id: str
) -> dict[str, Any]:
    """The opened record of ``request_id`` if ``tenant_id`` owns it and it has not expired.

    Raises ``NotFound`` (absent, expired, or another tenant's) or ``CallAuditUnreadable``.
    """
    row = await session.scalar(
        select(CallAudit).where(
            CallAudit.id == request_id,
            CallAudit.tenant_id == tenant_id,
            CallAudit.expires_at > utcnow(),
        )
    )
    if row is None:
        raise NotFound(f"no audited call {request_id}")
    try:
        document = orjson.loads(keyring.decrypt(row.sealed, associated_data(row.tenant_id, row.id)))
    except DecryptionFailed as exc:
        raise CallAuditUnreadable(
            f"audited call {request_id} was sealed with key {row.key_id!r}: {exc.detail}",
            key_id=row.key_id,
        ) from None
    return {
        "request_id": row.id,
        "created_at": row.created_at,
        "key_id": row.key_id,
        "request": document.get("request"),
        "response": document.get("response"),
        "error": document.get("error"),
    }
