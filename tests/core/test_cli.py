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
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from core.auth import authenticate
from core.cli import app
from core.db.engine import make_engine, make_sessionmaker
from core.db.models import ApiKey, AuditEntry, Job, JobStatus, Role, User
from core.errors import Unauthenticated
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


def _rows(url: str, statement: object) -> list[Any]:
    async def run() -> list[Any]:
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine)() as session:
                return list((await session.execute(statement)).all())  # type: ignore[call-overload]
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _query_all(url: str, statement: object) -> list[object]:
    async def run() -> list[object]:
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine)() as session:
                return list(await session.scalars(statement))  # type: ignore[call-overload]
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


def test_a_reviewer_key_names_its_person_and_their_platform_ids(env: str) -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    assert runner.invoke(app, ["tenants", "create", "acme"]).exit_code == 0
    create = ["keys", "create", "--tenant", "acme", "--role", "reviewer"]

    person = ["--email", "ana@acme.example", "--platform-id", "sap:ANA"]
    made = runner.invoke(app, [*create, *person, "--platform-id", "hubspot:9001"])
    orphan = runner.invoke(app, [*create, "--platform-id", "sap:ANA"])
    malformed = runner.invoke(app, [*create, "--email", "ana@acme.example", "--platform-id", "ANA"])

    assert made.exit_code == 0, made.output
    assert [tuple(row) for row in _rows(env, select(User.email, User.platform_ids))] == [
        ("ana@acme.example", ["hubspot:9001", "sap:ANA"])
    ]
    assert (
        _query(env, select(func.count()).select_from(ApiKey).where(ApiKey.user_id.is_not(None)))
        == 1
    )
    assert orphan.exit_code == 2
    assert "--platform-id needs --email" in orphan.output
    assert malformed.exit_code == 2
    assert "<connector>:<user id>" in malformed.output


def test_unknown_tenant_and_bad_role_are_explained(env: str) -> None:
    runner.invoke(app, ["db", "upgrade"])
    missing = runner.invoke(app, ["keys", "create", "--tenant", "nope", "--role", "admin"])
    assert missing.exit_code == 2
    assert "switchyard tenants create" in missing.output
    bad_role = runner.invoke(app, ["keys", "create", "--tenant", "nope", "--role", "root"])
    assert bad_role.exit_code == 2


def _authenticates(url: str, plaintext: str) -> bool:
    async def check() -> bool:
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine)() as session:
                await authenticate(session, plaintext)
                return True
        except Unauthenticated:
            return False
        finally:
            await engine.dispose()

    return asyncio.run(check())


def test_keys_are_listed_without_secrets_and_a_revoked_key_stops_working(env: str) -> None:
    runner.invoke(app, ["db", "upgrade"])
    for tenant in ["acme", "other"]:
        assert runner.invoke(app, ["tenants", "create", tenant]).exit_code == 0
    create = ["keys", "create", "--tenant", "acme", "--role"]
    kept = runner.invoke(app, [*create, "admin", "--name", "ops laptop"]).stdout.split()[0]
    doomed = runner.invoke(app, [*create, "service", "--name", "crm sync"]).stdout.split()[0]
    assert _authenticates(env, doomed)
    doomed_id = str(_query(env, select(ApiKey.id).where(ApiKey.name == "crm sync")))
    kept_id = str(_query(env, select(ApiKey.id).where(ApiKey.name == "ops laptop")))

    listed = runner.invoke(app, ["keys", "list", "--tenant", "acme"])
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [[kept_id, "admin"], [doomed_id, "service"]]
    assert "ops laptop" in lines[0]
    assert "created=20" in lines[0]
    assert lines[0].endswith("revoked=-")
    for secret in [kept, doomed, *_query_all(env, select(ApiKey.key_hash))]:
        assert secret not in listed.output
    empty = runner.invoke(app, ["keys", "list", "--tenant", "other"])
    assert (empty.exit_code, empty.stdout) == (0, "")
    assert "tenant other has no API keys" in empty.output

    revoked = runner.invoke(app, ["keys", "revoke", doomed_id, "--tenant", "acme"])
    assert revoked.exit_code == 0, revoked.output
    assert doomed_id in revoked.stdout
    assert not _authenticates(env, doomed)
    assert _authenticates(env, kept)
    entry = _query(env, select(AuditEntry).where(AuditEntry.action == "api_key.revoke"))
    assert isinstance(entry, AuditEntry)
    assert (entry.actor, entry.object_type, entry.object_id) == ("cli", "api_key", doomed_id)
    lines = runner.invoke(app, ["keys", "list", "--tenant", "acme"]).stdout.splitlines()
    assert lines[0].endswith("revoked=-")
    assert "revoked=20" in lines[1]

    # Revoking again keeps the first revocation's time and writes no second audit entry.
    first_time = _query(env, select(ApiKey.revoked_at).where(ApiKey.id == doomed_id))
    again = runner.invoke(app, ["keys", "revoke", doomed_id, "--tenant", "acme"])
    assert again.exit_code == 0
    assert "already revoked" in again.stdout
    assert _query(env, select(ApiKey.revoked_at).where(ApiKey.id == doomed_id)) == first_time
    revocations = select(func.count()).where(AuditEntry.action == "api_key.revoke")
    assert _query(env, revocations) == 1


def test_revoking_an_unknown_key_or_another_tenants_key_is_explained(env: str) -> None:
    runner.invoke(app, ["db", "upgrade"])
    for tenant in ["acme", "other"]:
        runner.invoke(app, ["tenants", "create", tenant])
    plaintext = runner.invoke(
        app, ["keys", "create", "--tenant", "other", "--role", "admin"]
    ).stdout.split()[0]
    other_key = str(_query(env, select(ApiKey.id)))

    for key_id in ["key_nope", other_key]:
        result = runner.invoke(app, ["keys", "revoke", key_id, "--tenant", "acme"])
        assert result.exit_code == 2
        assert f"tenant 'acme' has no API key '{key_id}'" in result.output
        assert "switchyard keys list --tenant acme" in result.output
    assert _authenticates(env, plaintext)
    assert _query(env, select(func.count()).where(AuditEntry.action == "api_key.revoke")) == 0

    missing = runner.invoke(app, ["keys", "list", "--tenant", "nope"])
    assert missing.exit_code == 2
    assert "switchyard tenants create" in missing.output
    missing = runner.invoke(app, ["keys", "revoke", other_key, "--tenant", "nope"])
    assert missing.exit_code == 2
    assert "switchyard tenants create" in missing.output


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
