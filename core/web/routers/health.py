"""Liveness and readiness probes (no authentication: they reveal no tenant data).

``/healthz`` answers while the process can serve HTTP. ``/readyz`` answers 200 only when
the database is reachable and migrated to the code's head revision; otherwise 503 with
the problem (``database-unavailable`` or ``database-not-migrated``) so an orchestrator
keeps traffic away and an operator reads which command fixes it.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from core.db.migrate import assert_migrated, head_revision
from core.errors import DatabaseUnavailable
from core.web.deps import ServicesDep

READY_TIMEOUT_SECONDS = 5.0

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    revision: str | None


@router.get("/healthz", summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    summary="The database is reachable and migrated",
    responses={503: {"description": "Database unreachable or not migrated"}},
)
async def readyz(services: ServicesDep) -> Readiness:
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            await assert_migrated(services.engine)
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"the database cannot be reached: {type(exc).__name__}") from exc
    return Readiness(status="ready", revision=head_revision())
