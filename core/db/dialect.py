"""The few statements whose spelling differs between SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def insert_ignoring_conflicts(
    session: AsyncSession, table: Table, index_elements: list[str], where: Any = None
) -> Any:
    """``INSERT … ON CONFLICT (index_elements) [WHERE …] DO NOTHING`` for the session's backend.

    Rows that collide with an existing (or concurrently inserted) row are skipped, which
    makes redelivered events and duplicate dedupe keys no-ops instead of errors.
    """
    name = session.get_bind().dialect.name
    module: Any = postgresql if name == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing(
        index_elements=index_elements, index_where=where
    )
