"""Collecting and submitting Message Batches, and recovering unacknowledged ones.

The first half of the batch loop (:mod:`core.gateway.message_batches` explains the states
and why each step is crash-safe): :func:`submit_due` claims waiting requests into a batch
row in one transaction and only then calls the API; :func:`recover` adopts or abandons a
batch whose create call went unanswered.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import func, insert, select, update

from core.db.models import BatchRequest, MessageBatch
from core.db.models import BatchRequestStatus as RS
from core.db.models import MessageBatchStatus as BS
from core.db.types import new_id
from core.gateway.message_batches import reservation_from
from core.gateway.upstream import UpstreamError
from core.logging import get_logger

if TYPE_CHECKING:
    from core.gateway.message_batches import MessageBatches

log = get_logger("switchyard.batches")

MAX_BATCH_BYTES = 200 * 2**20  # the API takes 256 MB per create; keep a margin


async def due(batches: MessageBatches) -> bool:
    async with batches.sessions() as session:
        count, oldest = (
            await session.execute(
                select(func.count(), func.min(BatchRequest.created_at)).where(
                    BatchRequest.status == RS.PENDING.value
                )
            )
        ).one()
    if not count:
        return False
    waited = (batches.clock() - oldest).total_seconds()
    return bool(
        count >= batches.settings.batch_max_requests
        or waited >= batches.settings.batch_max_wait_seconds
    )


async def submit_due(batches: MessageBatches) -> int:
    """Submit batches while requests are due; returns how many requests went out."""
    sent = 0
    while await due(batches):
        claimed = await claim(batches, batches.settings.batch_max_requests)
        if claimed is None:
            return sent
        sent += await submit(batches, *claimed)
    return sent


async def claim(
    batches: MessageBatches, limit: int
) -> tuple[MessageBatch, list[BatchRequest]] | None:
    now = batches.clock()
    batch = MessageBatch(
        id=new_id("mbat"), status=BS.SUBMITTING.value, request_count=0, created_at=now
    )
    async with batches.sessions.begin() as session:
        chosen = (
            select(BatchRequest.id)
            .where(BatchRequest.status == RS.PENDING.value)
            .order_by(BatchRequest.created_at, BatchRequest.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = list((await session.execute(chosen)).scalars())
        if not ids:
            return None
        await session.execute(insert(MessageBatch).values(**_columns(batch)))
        rows = list(
            (
                await session.execute(
                    update(BatchRequest)
                    .where(BatchRequest.id.in_(ids), BatchRequest.status == RS.PENDING.value)
                    .values(status=RS.SUBMITTING.value, batch_id=batch.id)
                    .returning(BatchRequest)
                    .execution_options(synchronize_session=False)
                )
            ).scalars()
        )
        batch.request_count = len(rows)
        await session.execute(
            update(MessageBatch).where(MessageBatch.id == batch.id).values(request_count=len(rows))
        )
    return batch, rows


async def submit(batches: MessageBatches, batch: MessageBatch, rows: list[BatchRequest]) -> int:
    requests: list[dict[str, Any]] = []
    size = 0
    rows = sorted(rows, key=lambda r: (r.created_at, r.id))
    for row in rows:
        params = batches.request_of(row)["params"]
        size += len(orjson.dumps(params))
        if requests and size > MAX_BATCH_BYTES:
            break
        requests.append({"custom_id": row.id, "params": params})
    left = [row.id for row in rows[len(requests) :]]
    if left:
        await unclaim(batches, batch.id, left, count=len(requests))
    try:
        response = await batches.gateway.upstream.create_batch(requests)
    except UpstreamError as exc:
        if exc.http_status == 0:
            # No answer: the batch may exist. Recovery decides once a create call
            # could no longer be under way.
            log.warning("creating a message batch had no answer", batch=batch.id)
            return 0
        log.error("the API refused a message batch", batch=batch.id, error=str(exc))
        await abandon(batches, batch.id, failed=(exc.error_type, str(exc)))
        return 0
    created = orjson.loads(response.body)
    if not await acknowledged(batches, batch.id, created):
        # Recovery abandoned this batch meanwhile: its requests are pending again.
        await cancel_quietly(batches, str(created["id"]))
        return 0
    log.info("message batch submitted", batch=batch.id, anthropic_id=created["id"])
    return len(requests)


async def unclaim(batches: MessageBatches, batch_id: str, ids: list[str], *, count: int) -> None:
    async with batches.sessions.begin() as session:
        await session.execute(
            update(BatchRequest)
            .where(BatchRequest.id.in_(ids), BatchRequest.status == RS.SUBMITTING.value)
            .values(status=RS.PENDING.value, batch_id=None)
        )
        await session.execute(
            update(MessageBatch).where(MessageBatch.id == batch_id).values(request_count=count)
        )


async def acknowledged(batches: MessageBatches, batch_id: str, created: Mapping[str, Any]) -> bool:
    now = batches.clock()
    async with batches.sessions.begin() as session:
        claimed = await session.execute(
            update(MessageBatch)
            .where(MessageBatch.id == batch_id, MessageBatch.status == BS.SUBMITTING.value)
            .values(
                status=BS.IN_PROGRESS.value,
                anthropic_id=str(created["id"]),
                submitted_at=now,
                next_poll_at=now + timedelta(seconds=batches.settings.batch_poll_seconds),
                counts=created.get("request_counts") or {},
            )
            .returning(MessageBatch.id)
        )
        if claimed.scalar() is None:
            return False
        await session.execute(
            update(BatchRequest)
            .where(
                BatchRequest.batch_id == batch_id,
                BatchRequest.status == RS.SUBMITTING.value,
            )
            .values(
                status=RS.SUBMITTED.value,
                submitted_at=now,
                submissions=BatchRequest.submissions + 1,
            )
        )
    return True


async def abandon(
    batches: MessageBatches, batch_id: str, *, failed: tuple[str, str] | None = None
) -> bool:
    """A batch the API does not have: its requests go back to pending. ``failed``: the
    API refused it, and a request refused too often fails (its job is re-queued)."""
    async with batches.sessions.begin() as session:
        done = await session.execute(
            update(MessageBatch)
            .where(MessageBatch.id == batch_id, MessageBatch.status == BS.SUBMITTING.value)
            .values(status=BS.ABANDONED.value, resolved_at=batches.clock())
            .returning(MessageBatch.id)
        )
        if done.scalar() is None:
            return False
        mine = (BatchRequest.batch_id == batch_id, BatchRequest.status == RS.SUBMITTING.value)
        given_up: list[Any] = []
        if failed is not None:
            limit = BatchRequest.submissions >= batches.settings.batch_max_resubmits
            found = await session.execute(
                select(BatchRequest.id, BatchRequest.reservation).where(*mine, limit)
            )
            ids = []
            for request_id, reservation in found:
                ids.append(request_id)
                given_up.append(reservation)
            await session.execute(
                update(BatchRequest)
                .where(BatchRequest.id.in_(ids))
                .values(
                    status=RS.FAILED.value,
                    error_type=failed[0],
                    error_message=failed[1][:2000],
                    resolved_at=batches.clock(),
                    reservation=None,
                )
            )
        await session.execute(
            update(BatchRequest)
            .where(*mine)
            .values(
                status=RS.PENDING.value,
                batch_id=None,
                submissions=BatchRequest.submissions + (1 if failed else 0),
            )
        )
    for reservation in given_up:  # the jobs are re-queued by reconcile()
        await batches.gateway.governance.settle(reservation_from(reservation), 0)
    return True


async def cancel_quietly(batches: MessageBatches, anthropic_id: str) -> None:
    try:
        await batches.gateway.upstream.cancel_batch(anthropic_id)
    except UpstreamError as exc:
        log.warning("cancelling an orphaned batch failed", batch=anthropic_id, error=str(exc))


async def recover(batches: MessageBatches) -> int:
    """Adopt or abandon ``submitting`` batches older than any create call can be."""
    stale = timedelta(seconds=batches.settings.upstream_timeout_seconds + 60)
    now = batches.clock()
    async with batches.sessions() as session:
        rows = list(
            await session.scalars(
                select(MessageBatch).where(
                    MessageBatch.status == BS.SUBMITTING.value,
                    MessageBatch.created_at < now - stale,
                )
            )
        )
    recovered = 0
    for batch in rows:
        found = await find_at_api(batches, batch, stale)
        if found is not None and await acknowledged(batches, batch.id, found):
            log.warning("adopted a batch whose creation was not recorded", batch=batch.id)
            recovered += 1
        elif await abandon(batches, batch.id):
            log.warning("abandoned an unacknowledged batch", batch=batch.id)
            recovered += 1
    return recovered


async def find_at_api(
    batches: MessageBatches, batch: MessageBatch, stale: timedelta
) -> dict[str, Any] | None:
    try:
        listing = orjson.loads((await batches.gateway.upstream.list_batches()).body)
    except UpstreamError as exc:
        log.warning("listing batches for recovery failed", error=str(exc))
        return None
    async with batches.sessions() as session:
        known = set(await session.scalars(select(MessageBatch.anthropic_id)))
    for candidate in listing.get("data") or ():
        created = datetime.fromisoformat(str(candidate["created_at"]).replace("Z", "+00:00"))
        counts = candidate.get("request_counts") or {}
        if (
            candidate["id"] not in known
            and batch.created_at - timedelta(minutes=5) <= created <= batch.created_at + stale
            and sum(int(v) for v in counts.values()) == batch.request_count
        ):
            found: dict[str, Any] = candidate
            return found
    return None


def _columns(batch: MessageBatch) -> dict[str, Any]:
    return {
        "id": batch.id,
        "status": batch.status,
        "request_count": batch.request_count,
        "created_at": batch.created_at,
        "counts": {},
    }
