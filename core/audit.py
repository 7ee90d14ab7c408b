"""The audit log: who did what, when, to which object. Written in the caller's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import AuditEntry


async def record(
    session: AsyncSession,
    *,
    tenant_id: str | None,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    **details: Any,
) -> None:
    session.add(
        AuditEntry(
            tenant_id=tenant_id,
            actor=actor,
            action=action,
            object_type=object_type,
            object_id=object_id,
            details=details,
        )
    )
