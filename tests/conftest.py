"""Shared fixtures: a migrated database per test on SQLite, and on PostgreSQL too when
``SWITCHYARD_TEST_DATABASE_URL`` is set (CI sets it)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from connectors.registry import ConnectorRegistry
from core.crypto import generate_key
from core.db.migrate import upgrade
from core.db.models import Base
from core.flows.catalog import FlowCatalog
from core.logging import configure_logging
from core.services import Services, build_services
from core.settings import Settings, load_settings

PG_URL = os.environ.get("SWITCHYARD_TEST_DATABASE_URL")
TEST_KEY = f"test:{generate_key()}"


@pytest.fixture(autouse=True)
def _default_logging() -> None:
    """Code under test (the CLI) may configure structlog to print to the stream pytest
    captured for that test, which is closed afterwards; every test starts afresh, with the
    plain tracebacks servers use (structlog's default renderer draws each logged traceback
    with its local variables: secrets, and about a second of event-loop time each)."""
    structlog.reset_defaults()
    configure_logging("info", "console")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrate once; each test copies the file (much faster than migrating per test)."""
    path = tmp_path_factory.mktemp("template") / "switchyard.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_url() -> str:
    if not PG_URL:
        pytest.skip("SWITCHYARD_TEST_DATABASE_URL is not set")
    url = _database_of_this_worker(PG_URL)
    upgrade(url)
    return url


def _database_of_this_worker(url: str) -> str:
    """Under pytest-xdist each worker truncates tables between tests, so each gets its own
    database beside the one named (``switchyard_test_gw0``, ...), created afresh."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    base = make_url(url)
    name = f"{base.database}_{worker}"
    server = base.set(drivername="postgresql+psycopg", database="postgres")
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def _truncate_postgres(url: str) -> None:
    sync_url = make_url(url).set(drivername="postgresql+psycopg")
    engine = create_engine(sync_url)
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "switchyard.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_url")
    _truncate_postgres(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """For tests that need one backend only."""
    path = tmp_path / "switchyard.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "encryption_keys": [TEST_KEY],
        "callback_allow_networks": ["127.0.0.0/8"],
        "connector_allow_networks": ["127.0.0.0/8"],
        "lease_seconds": 5.0,
        "worker_poll_seconds": 0.05,
        "mappings_dir": Path(__file__).parent / "fixtures" / "mappings",
        "log_format": "console",
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    built = build_services(
        settings,
        registry=ConnectorRegistry.from_entry_points(),
        flows=FlowCatalog.load(settings.mappings_dir),
    )
    yield built
    await built.aclose()
