"""The `switchyard` command: setup commands, keys shown once, clear errors (exit 2)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from core.auth import authenticate
from core.cli import app
from core.db.engine import make_engine, make_sessionmaker
from core.db.models import ApiKey, AuditEntry, Job, JobStatus, Role
from core.queue import NewJob, enqueue
from tests.conftest import TEST_KEY

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", url)
    monkeypatch.setenv("SWITCHYARD_ENCRYPTION_KEYS", TEST_KEY)
    monkeypatch.setenv("SWITCHYARD_LOG_LEVEL", "warning")
    return url


def _query(url: str, statement: object) -> object:
    async def run() -> object:
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine)() as session:
                return await session.scalar(statement)  # type: ignore[call-overload]
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_commands_refuse_an_unmigrated_database_and_name_the_fix(env: str) -> None:
    result = runner.invoke(app, ["tenants", "create", "acme"])
    assert result.exit_code == 2
    assert "switchyard db upgrade" in result.output


def test_setup_path_creates_tenant_and_a_key_shown_once(env: str) -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    created = runner.invoke(app, ["tenants", "create", "acme"])
    assert created.exit_code == 0, created.output
    assert "acme" in created.output

    duplicate = runner.invoke(app, ["tenants", "create", "acme"])
    assert duplicate.exit_code == 2
    assert "already exists" in duplicate.output

    key = runner.invoke(app, ["keys", "create", "--tenant", "acme", "--role", "reviewer"])
    assert key.exit_code == 0, key.output
    plaintext = key.stdout.strip().splitlines()[0]
    assert plaintext.startswith("sy_")
    # Stored only as a hash: the plaintext appears nowhere in the table.
    stored = _query(env, select(ApiKey.key_hash))
    assert stored
    assert plaintext not in str(stored)

    async def check() -> Role:
        engine = make_engine(env)
        try:
            async with make_sessionmaker(engine)() as session:
                return (await authenticate(session, plaintext)).role
        finally:
            await engine.dispose()

    assert asyncio.run(check()) is Role.REVIEWER
    assert _query(env, select(func.count()).select_from(AuditEntry)) == 1


def test_unknown_tenant_and_bad_role_are_explained(env: str) -> None:
    runner.invoke(app, ["db", "upgrade"])
    missing = runner.invoke(app, ["keys", "create", "--tenant", "nope", "--role", "admin"])
    assert missing.exit_code == 2
    assert "switchyard tenants create" in missing.output
    bad_role = runner.invoke(app, ["keys", "create", "--tenant", "nope", "--role", "root"])
    assert bad_role.exit_code == 2


def test_invalid_setting_names_the_variable(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHYARD_WORKER_CONCURRENCY", "zero")
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 2
    assert "SWITCHYARD_WORKER_CONCURRENCY" in result.output


def test_jobs_list_and_replay(env: str) -> None:
    runner.invoke(app, ["db", "upgrade"])

    async def seed() -> int:
        engine = make_engine(env)
        try:
            async with make_sessionmaker(engine).begin() as session:
                [job_id] = await enqueue(session, [NewJob(kind="test.kind")])
                job = await session.get(Job, job_id)
                assert job is not None
                job.status = JobStatus.DEAD.value
                job.last_error = "boom"
                return job_id
        finally:
            await engine.dispose()

    job_id = asyncio.run(seed())
    listed = runner.invoke(app, ["jobs", "list", "--status", "dead"])
    assert listed.exit_code == 0
    assert str(job_id) in listed.output
    assert "boom" in listed.output

    assert runner.invoke(app, ["jobs", "replay", str(job_id)]).exit_code == 0
    assert _query(env, select(Job.status).where(Job.id == job_id)) == "queued"
    again = runner.invoke(app, ["jobs", "replay", str(job_id)])
    assert again.exit_code == 2
    assert "only dead or cancelled" in again.output


def test_new_key_prints_a_usable_entry() -> None:
    result = runner.invoke(app, ["secrets", "new-key", "k2"])
    assert result.exit_code == 0
    from core.crypto import KeyRing

    ring = KeyRing.parse([result.stdout.strip()])
    assert ring.active_key_id == "k2"


def test_worker_command_serves_metrics_and_stops_on_sigterm(env: str) -> None:
    runner.invoke(app, ["db", "upgrade"])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "worker"],
        env={**os.environ, "SWITCHYARD_WORKER_METRICS_PORT": str(port)},
    )
    try:
        deadline = time.monotonic() + 30
        body = ""
        while time.monotonic() < deadline and "switchyard_jobs_finished" not in body:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
            except httpx.HTTPError:
                time.sleep(0.1)
        assert "switchyard_jobs_finished" in body
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
