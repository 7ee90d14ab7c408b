"""Deciding review items: approve (optionally with edits), reject, and expiry.

A decision changes the item (a compare-and-set from ``pending``, so two reviewers cannot
both decide) and sends its parked job back to the queue in the same transaction; the job
then does only what the decision asks (:mod:`core.flows.approved`): write the approved
patch, or end. Nothing before the write (fetch, the Claude call) runs again, and the write
carries the job's idempotency key, so a worker crash after the approval neither loses the
write nor performs it twice.

* **Approve.** Reviewer or admin role. Four eyes (``SWITCHYARD_REVIEW_FOUR_EYES``, on by
  default): whoever made the change cannot approve it. Connectors report who made a change
  as ``ChangeEvent.data["changed_by"]`` (the platform's user id, or an email); the item
  keeps it as ``triggered_by`` = ``<connector>:<who>``. The approver is its author when
  that is their API key, the email of the person the key belongs to, or one of that
  person's platform ids (``switchyard keys create --email … --platform-id sap:JSMITH``).
  Edits may only change fields the proposal writes, and are checked against the target's
  field metadata as the flow's own patch was (writable, picklist). If the record changed
  since the proposal (its version differs), the approval is refused (409
  ``review-stale``) and the item is refreshed to the record's current values, for a fresh
  decision.
* **Reject.** With a reason; the job ends without writing.
* **Expire.** Housekeeping expires items nobody decided within
  ``SWITCHYARD_REVIEW_EXPIRY_HOURS``; their jobs end without writing.

Every decision is audited with the item before and after.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.base import RecordRef
from core import audit
from core.auth import Principal
from core.connections import get_connection
from core.db.models import ApiKey, Job, JobStatus, ReviewItem, ReviewStatus, User
from core.errors import Conflict, Forbidden, InvalidRequest, NotFound
from core.flows.patches import PatchError, check_fields

if TYPE_CHECKING:
    from core.services import Services


class ReviewNotPending(Conflict):
    problem_type = "review-not-pending"
    title = "The review item was already decided or expired"


class ReviewStale(Conflict):
    problem_type = "review-stale"
    title = "The record changed since the proposal; the item now shows its current values"


class FourEyes(Forbidden):
    problem_type = "review-four-eyes"
    title = "Whoever triggered a change cannot approve it"


class ReviewEditInvalid(InvalidRequest):
    problem_type = "review-edit-invalid"
    title = "The edited patch does not fit the proposal or the target's fields"


def snapshot(item: ReviewItem) -> dict[str, Any]:
    return {
        "status": item.status,
        "patch": item.approved_patch if item.approved_patch is not None else item.patch,
        "expected_version": item.expected_version,
        "decided_by": item.decided_by,
    }


def diff(item: ReviewItem) -> list[dict[str, Any]]:
    """Field by field: what the record holds and what the write would put there."""
    patch = item.approved_patch if item.approved_patch is not None else item.patch
    return [
        {"field": name, "before": item.before.get(name), "after": value}
        for name, value in patch.items()
    ]


async def get_item(session: AsyncSession, item_id: str, tenant_id: str) -> ReviewItem:
    item = await session.get(ReviewItem, item_id)
    if item is None or item.tenant_id != tenant_id:
        raise NotFound(f"no review item {item_id}")
    return item


def _check_pending(item: ReviewItem, now: datetime) -> None:
    if item.status != ReviewStatus.PENDING.value:
        raise ReviewNotPending(f"review item {item.id} is {item.status}", status=item.status)
    if item.expires_at is not None and item.expires_at <= now:
        raise ReviewNotPending(
            f"review item {item.id} expired at {item.expires_at:%Y-%m-%d %H:%M}Z"
        )


async def approve(
    services: Services,
    item_id: str,
    principal: Principal,
    *,
    edits: Mapping[str, Any] | None = None,
    note: str | None = None,
) -> ReviewItem:
    """Approve ``item_id`` (with ``edits`` to the patch) and send its job to the write.

    No transaction is held while the target is asked for the record's current version.
    """
    now = datetime.now(UTC)
    async with services.sessions() as session:
        item = await get_item(session, item_id, principal.tenant_id)
        connection = await get_connection(session, item.connection_id, principal.tenant_id)
        approver = await _approver(session, principal)
    _check_pending(item, now)
    four_eyes = services.settings.review_four_eyes
    if four_eyes and item.triggered_by is not None and approver.made(item.triggered_by):
        raise FourEyes(
            f"{item.triggered_by} triggered this change, so someone else must approve it"
        )
    connector = await services.connectors.get(connection)
    patch = dict(item.patch)
    if edits:
        unknown = sorted(set(edits) - set(patch))
        if unknown:
            raise ReviewEditInvalid(
                f"edits may only change the proposed fields ({', '.join(sorted(patch))}); "
                f"not {', '.join(unknown)}",
                fields=unknown,
            )
        try:
            check_fields(dict(edits), await connector.describe(item.object) or None)
        except PatchError as exc:
            raise ReviewEditInvalid(exc.detail, **exc.extensions) from None
        patch.update(edits)
    if item.record_id is not None and item.expected_version is not None:
        current = await connector.fetch(RecordRef(item.object, item.record_id))
        if current.version != item.expected_version:
            await _refresh(services, item, current.fields, current.version)
            raise ReviewStale(
                f"{item.object} {item.record_id} changed since the proposal (version "
                f"{item.expected_version} → {current.version}); decide again on its "
                "current values",
                version=current.version,
            )
    return await _decide(
        services,
        item,
        principal,
        ReviewStatus.APPROVED,
        action="review.approve",
        approved_patch=patch,
        note=note,
    )


@dataclass(frozen=True)
class _Approver:
    """Who approves: their key, and the person the key belongs to (if it names one)."""

    actor: str  # key:<id>
    email: str | None
    platform_ids: frozenset[str]  # "<connector>:<id>", lower case

    def made(self, triggered_by: str) -> bool:
        """Whether the change ``triggered_by`` names (``<connector>:<who>``) is theirs."""
        who = triggered_by.strip().lower()
        _, _, value = who.partition(":")
        return (
            who == self.actor.lower()
            or (self.email is not None and value == self.email)
            or who in self.platform_ids
        )


async def _approver(session: AsyncSession, principal: Principal) -> _Approver:
    person = (
        await session.execute(
            select(User.email, User.platform_ids)
            .join(ApiKey, ApiKey.user_id == User.id)
            .where(ApiKey.id == principal.key_id)
        )
    ).first()
    if person is None:
        return _Approver(principal.actor, None, frozenset())
    email, platform_ids = person
    return _Approver(
        principal.actor,
        email.strip().lower() if email else None,
        frozenset(str(p).strip().lower() for p in platform_ids or ()),
    )


async def reject(services: Services, item_id: str, principal: Principal, reason: str) -> ReviewItem:
    async with services.sessions() as session:
        item = await get_item(session, item_id, principal.tenant_id)
    _check_pending(item, datetime.now(UTC))
    return await _decide(
        services, item, principal, ReviewStatus.REJECTED, action="review.reject", note=reason
    )


async def _refresh(
    services: Services, item: ReviewItem, fields: Mapping[str, Any], version: str | None
) -> None:
    async with services.sessions.begin() as session:
        await session.execute(
            update(ReviewItem)
            .where(ReviewItem.id == item.id, ReviewItem.status == ReviewStatus.PENDING.value)
            .values(
                before={name: fields.get(name) for name in item.patch},
                expected_version=version,
            )
        )


async def _decide(
    services: Services,
    item: ReviewItem,
    principal: Principal,
    status: ReviewStatus,
    *,
    action: str,
    approved_patch: dict[str, Any] | None = None,
    note: str | None = None,
) -> ReviewItem:
    before = snapshot(item)
    now = datetime.now(UTC)
    async with services.sessions.begin() as session:
        decided = await session.execute(
            update(ReviewItem)
            .where(ReviewItem.id == item.id, ReviewItem.status == ReviewStatus.PENDING.value)
            .values(
                status=status.value,
                approved_patch=approved_patch,
                decided_by=principal.actor,
                decided_at=now,
                decision_note=note,
            )
        )
        if not decided.rowcount:  # type: ignore[attr-defined]
            raise ReviewNotPending(f"review item {item.id} was decided meanwhile")
        await _resume_job(session, item.job_id, now)
        item = await get_item(session, item.id, principal.tenant_id)
        await audit.record(
            session,
            tenant_id=principal.tenant_id,
            actor=principal.actor,
            action=action,
            object_type="review_item",
            object_id=item.id,
            before=before,
            after=snapshot(item),
            note=note,
        )
    return item


async def _resume_job(session: AsyncSession, job_id: int, now: datetime) -> None:
    """The parked job runs again, to carry out the decision (core.flows.approved)."""
    await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.AWAITING_REVIEW.value)
        .values(status=JobStatus.QUEUED.value, run_at=now)
    )


async def expire_due(services: Services, now: datetime | None = None) -> int:
    """Expire pending items past their time; their jobs end without writing."""
    now = now or datetime.now(UTC)
    async with services.sessions.begin() as session:
        due = (
            await session.execute(
                select(ReviewItem.id, ReviewItem.job_id, ReviewItem.tenant_id).where(
                    ReviewItem.status == ReviewStatus.PENDING.value,
                    ReviewItem.expires_at <= now,
                )
            )
        ).all()
        for item_id, job_id, tenant_id in due:
            expired = await session.execute(
                update(ReviewItem)
                .where(ReviewItem.id == item_id, ReviewItem.status == ReviewStatus.PENDING.value)
                .values(status=ReviewStatus.EXPIRED.value, decided_at=now)
            )
            if expired.rowcount:  # type: ignore[attr-defined]
                await _resume_job(session, job_id, now)
                await audit.record(
                    session,
                    tenant_id=tenant_id,
                    actor="system:housekeeping",
                    action="review.expire",
                    object_type="review_item",
                    object_id=item_id,
                )
    return len(due)
