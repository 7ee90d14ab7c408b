"""Storage: typed tables, the engine, and Alembic migrations."""

from core.db.engine import async_url, make_engine, make_sessionmaker
from core.db.migrate import assert_migrated, upgrade

__all__ = ["assert_migrated", "async_url", "make_engine", "make_sessionmaker", "upgrade"]
