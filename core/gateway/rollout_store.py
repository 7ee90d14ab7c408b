"""Starting, changing, rolling back and ending prompt rollouts (shared by the API and CLI).

Each change is one transaction that also appends a :class:`~core.db.models.RolloutChange`
(so a rollout's history reads top to bottom) and an audit entry with the rollout before and
after, whether it came through the API or the CLI. The decision per call reads the rollout row
(:mod:`core.gateway.rollouts`), so a change applies to the next call in every process.

* ``put_rollout`` starts a rollout or changes its share or stickiness. A new candidate
  version is a new experiment: it gets a new id, and so a fresh split of the records.
* ``rollback`` sets the share to 0 in one step: every call uses the pinned version again.
  The rollout (its candidate, its history) stays, so it can resume.
* ``end_rollout`` removes it (after promoting: pin the candidate in the flow files first).

A candidate must be installed, must not be the version the flows already pin, and every
flow using the prompt must be able to fill its slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core import audit
from core.db.models import PromptRollout, RolloutChange, RolloutSticky
from core.db.types import new_id
from core.errors import InvalidRequest, NotFound
from core.flows.catalog import FlowCatalog
from core.gateway.rollouts import SCALE, load_rollout

HISTORY_LIMIT = 100


class RolloutInvalid(InvalidRequest):
    problem_type = "rollout-invalid"
    title = "The rollout cannot be applied"
    status = 422


class RolloutNotFound(NotFound):
    problem_type = "rollout-not-found"
    title = "The prompt has no rollout in this tenant"


def basis_points(percent: Decimal | int) -> int:
    """A share in percent (two decimals at most) as basis points of 10,000."""
    percent = Decimal(percent)
    if not Decimal(0) <= percent <= Decimal(100):
        raise RolloutInvalid(f"share_percent must be between 0 and 100, not {percent}")
    points = percent * SCALE / 100
    if points != points.to_integral_value():
        raise RolloutInvalid(f"share_percent {percent}: at most two decimals (0.01% steps)")
    return int(points)


def percent(points: int | None) -> float | None:
    return None if points is None else points * 100 / SCALE


@dataclass(frozen=True)
class PromptUser:
    flow: str
    pinned_version: int
    inputs: frozenset[str]


def users_of(flows: FlowCatalog, prompt: str) -> list[PromptUser]:
    """The valid installed flows whose pinned prompt is ``prompt`` (any version)."""
    found = []
    for name in flows.names():
        entry = flows.get(name)
        if entry is None or entry.spec is None:
            continue
        prompt_name, _, version = entry.spec.prompt.partition("@")
        if prompt_name == prompt:
            inputs = frozenset(entry.spec.inputs)
            found.append(PromptUser(name, int(version), inputs))
    return found


def check_candidate(flows: FlowCatalog, prompt: str, version: int) -> None:
    candidate = flows.prompts.get(f"{prompt}@{version}")
    if candidate is None:
        installed = ", ".join(str(v) for v in flows.prompts.versions(prompt)) or "none"
        raise RolloutInvalid(
            f"{prompt}@{version} is not installed (installed versions: {installed}); add "
            f"mappings/prompts/{prompt}/{version}.yaml and restart or reload first",
            prompt=prompt,
        )
    users = users_of(flows, prompt)
    if not users:
        raise RolloutInvalid(
            f"no installed flow uses prompt {prompt!r}, so a rollout would change nothing",
            prompt=prompt,
        )
    if all(user.pinned_version == version for user in users):
        raise RolloutInvalid(
            f"every flow using {prompt!r} already pins version {version}; roll out another",
            prompt=prompt,
        )
    unfillable = {
        user.flow: sorted(candidate.slots - user.inputs)
        for user in users
        if not candidate.slots <= user.inputs
    }
    if unfillable:
        detail = "; ".join(f"{flow} lacks {', '.join(slots)}" for flow, slots in unfillable.items())
        raise RolloutInvalid(
            f"{candidate.ref} has slots some flows cannot fill: {detail}; add those inputs "
            "to the flows or change the prompt",
            prompt=prompt,
            flows=sorted(unfillable),
        )


def snapshot(row: PromptRollout) -> dict[str, Any]:
    return {
        "id": row.id,
        "prompt": row.prompt,
        "candidate_version": row.candidate_version,
        "share_percent": percent(row.share_basis_points),
        "sticky": row.sticky,
    }


async def _record(
    session: AsyncSession,
    row: PromptRollout,
    action: str,
    *,
    share_before: int | None,
    before: dict[str, Any] | None,
    actor: str,
    now: datetime,
) -> None:
    session.add(_change(row, action, share_before, actor, now))
    await audit.record(
        session,
        tenant_id=row.tenant_id,
        actor=actor,
        action=f"prompt_rollout.{action}",
        object_type="prompt_rollout",
        object_id=row.prompt,
        before=before,
        after=snapshot(row) if action != "end" else None,
    )


def _change(
    row: PromptRollout, action: str, before: int | None, actor: str, now: datetime
) -> RolloutChange:
    return RolloutChange(
        tenant_id=row.tenant_id,
        prompt=row.prompt,
        action=action,
        candidate_version=row.candidate_version,
        share_before=before,
        share_after=row.share_basis_points if action != "end" else None,
        actor=actor,
        at=now,
    )


async def put_rollout(
    session: AsyncSession,
    flows: FlowCatalog,
    *,
    tenant_id: str,
    prompt: str,
    candidate_version: int,
    share_basis_points: int,
    sticky: RolloutSticky | None,
    actor: str,
) -> tuple[PromptRollout, dict[str, Any] | None]:
    """Start or change the tenant's rollout of ``prompt``; returns it and the old snapshot."""
    check_candidate(flows, prompt, candidate_version)
    now = datetime.now(UTC)
    row = await load_rollout(session, tenant_id, prompt)
    before = snapshot(row) if row is not None else None
    if row is None or row.candidate_version != candidate_version:
        if row is not None:
            await session.delete(row)
            await session.flush()
        row = PromptRollout(
            id=new_id("rol"),
            tenant_id=tenant_id,
            prompt=prompt,
            candidate_version=candidate_version,
            share_basis_points=share_basis_points,
            sticky=(sticky or RolloutSticky.RECORD).value,
            created_at=now,
            updated_at=now,
            updated_by=actor,
        )
        session.add(row)
        await _record(session, row, "start", share_before=None, before=before, actor=actor, now=now)
    else:
        previous = row.share_basis_points
        row.share_basis_points = share_basis_points
        if sticky is not None:
            row.sticky = sticky.value
        row.updated_at, row.updated_by = now, actor
        await _record(
            session, row, "change", share_before=previous, before=before, actor=actor, now=now
        )
    await session.flush()
    return row, before


async def rollback(
    session: AsyncSession, *, tenant_id: str, prompt: str, actor: str
) -> tuple[PromptRollout, dict[str, Any]]:
    """Every call back on the pinned version, from the next call on."""
    row = await _existing(session, tenant_id, prompt)
    before = snapshot(row)
    now = datetime.now(UTC)
    previous = row.share_basis_points
    row.share_basis_points = 0
    row.updated_at, row.updated_by = now, actor
    await _record(
        session, row, "rollback", share_before=previous, before=before, actor=actor, now=now
    )
    await session.flush()
    return row, before


async def end_rollout(
    session: AsyncSession, *, tenant_id: str, prompt: str, actor: str
) -> dict[str, Any]:
    row = await _existing(session, tenant_id, prompt)
    before = snapshot(row)
    await _record(
        session,
        row,
        "end",
        share_before=row.share_basis_points,
        before=before,
        actor=actor,
        now=datetime.now(UTC),
    )
    await session.delete(row)
    await session.flush()
    return before


async def history(session: AsyncSession, tenant_id: str, prompt: str) -> list[RolloutChange]:
    """The latest changes, oldest first."""
    rows = await session.scalars(
        select(RolloutChange)
        .where(RolloutChange.tenant_id == tenant_id, RolloutChange.prompt == prompt)
        .order_by(RolloutChange.id.desc())
        .limit(HISTORY_LIMIT)
    )
    return list(reversed(rows.all()))


async def rollouts(session: AsyncSession, tenant_id: str) -> dict[str, PromptRollout]:
    rows = await session.scalars(select(PromptRollout).where(PromptRollout.tenant_id == tenant_id))
    return {row.prompt: row for row in rows}


async def _existing(session: AsyncSession, tenant_id: str, prompt: str) -> PromptRollout:
    row = await load_rollout(session, tenant_id, prompt)
    if row is None:
        raise RolloutNotFound(f"prompt {prompt!r} has no rollout in this tenant", prompt=prompt)
    return row
