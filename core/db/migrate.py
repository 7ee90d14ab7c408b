"""Alembic, driven from code: ``switchyard db upgrade`` and the start-up check."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from core.errors import NotMigrated

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (blocking; call from sync code or a thread)."""
    command.upgrade(alembic_config(database_url), revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(_current)


async def assert_migrated(engine: AsyncEngine) -> None:
    """Refuse to run on a database that is missing tables or behind the code."""
    current = await current_revision(engine)
    head = head_revision()
    if current != head:
        state = "has no Switchyard tables" if current is None else f"is at revision {current}"
        raise NotMigrated(
            f"the database {state}, the code needs {head}; run `switchyard db upgrade`"
        )
