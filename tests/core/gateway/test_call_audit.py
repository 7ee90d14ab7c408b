"""The encrypted call audit log: what the gateway seals, who can open it, rotation, retention."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import orjson
import pytest
from sqlalchemy import Text, select, update
from typer.testing import CliRunner

from core.auth import create_tenant
from core.cli import app
from core.crypto import KeyRing, generate_key
from core.db.engine import make_engine, make_sessionmaker
from core.db.models import CallAudit, GatewayRequest
from core.db.types import new_id
from core.errors import NotFound
from core.gateway.batching import LoopShare
from core.gateway.call_audit import CallAuditLog, CallAuditUnreadable
from core.gateway.records import CallRecord
from core.gateway.upstream import UpstreamError
from core.sandbox.anthropic import AnthropicSandbox, Faults
from core.services import Services, build_services
from core.settings import Settings
from tests.core.gateway.conftest import EMAIL, asking, options, yield_every_time

K1 = ("k1", generate_key())
K2 = ("k2", generate_key())


@pytest.fixture(name="services")
def _services(claude_services: Services) -> Services:
    return claude_services


@pytest.fixture(name="tenant_id")
def _tenant_id(acme: str) -> str:
    return acme


@pytest.fixture
def gateway_overrides() -> dict[str, Any]:
    return {"max_retries": 0}  # upstream failures fail at once


def ring(*keys: tuple[str, str]) -> KeyRing:
    return KeyRing.parse([f"{key_id}:{key}" for key_id, key in keys])


@pytest.fixture
def log(services: Services) -> CallAuditLog:
    assert services.gateway.call_audit is not None
    return services.gateway.call_audit


def record_of(tenant_id: str, *, created_at: datetime | None = None) -> CallRecord:
    return CallRecord(
        id=new_id("gwr"),
        trace_id="t" * 32,
        tenant_id=tenant_id,
        feature="api",
        api_key_id=None,
        task="classify",
        requested_model=None,
        model="claude-haiku-4-5",
        stream=False,
        priority="interactive",
        prompt_hash="0" * 64,
        created_at=created_at or datetime.now(UTC),
    )


async def sealed_call(log: CallAuditLog, tenant_id: str, **extra: Any) -> str:
    record = record_of(tenant_id, **extra)
    log.submit(record, {"messages": [{"role": "user", "content": "hi"}]}, b'{"content": []}')
    assert await log.flush() == 1
    return record.id


async def read(services: Services, keyring: KeyRing, tenant_id: str, request_id: str) -> Any:
    log = CallAuditLog(services.sessions, keyring, timedelta(days=1))
    async with services.sessions() as session:
        return await log.read(session, tenant_id, request_id)


# ------------------------------------------------------------------ through the gateway


async def test_the_redacted_prompt_and_answer_are_sealed_apart_from_the_call_record(
    services: Services, tenant_id: str, log: CallAuditLog
) -> None:
    completion = await services.gateway.complete(
        asking(f"Who wrote? From: {EMAIL}"), options(tenant_id)
    )
    assert completion.message()["content"][0]["input"] == {"who": EMAIL}  # the caller's copy
    assert await log.flush() == 1
    await services.gateway.recorder.flush()
    async with services.sessions() as session:
        row = await session.get(CallAudit, completion.record.id)
        call = await session.get(GatewayRequest, completion.record.id)
        assert row is not None
        assert call is not None
        document = await log.read(session, tenant_id, row.id)

    assert row.key_id == "test"
    assert row.sealed.startswith("v1.test.")
    assert row.expires_at - row.created_at == timedelta(days=30)
    assert document["request"]["messages"][0]["content"] == "Who wrote? From: <EMAIL_1>"
    assert document["response"]["content"][0]["input"] == {"who": "<EMAIL_1>"}  # not restored
    assert document["error"] is None
    assert EMAIL not in orjson.dumps(document).decode()
    # The call record holds hashes: no text column, and nothing of the prompt in any value.
    columns = GatewayRequest.__table__.columns
    assert not [c.name for c in columns if isinstance(c.type, Text)]
    values = orjson.dumps({c.name: getattr(call, c.name) for c in columns}, default=str).decode()
    for text in ("Who wrote", EMAIL, "<EMAIL_1>"):
        assert text not in values


async def test_a_stream_is_sealed_as_the_assembled_message(
    services: Services, tenant_id: str, log: CallAuditLog
) -> None:
    stream = await services.gateway.stream(
        asking(f"Who wrote? {EMAIL}", stream=True), options(tenant_id)
    )
    async for _ in stream:
        pass
    await log.flush()
    async with services.sessions() as session:
        document = await log.read(session, tenant_id, stream.record.id)
    assert document["request"]["messages"][0]["content"] == "Who wrote? <EMAIL_1>"
    assert document["response"]["content"][0]["input"] == {"who": "<EMAIL_1>"}
    assert document["response"]["stop_reason"] == "tool_use"


async def test_cache_hits_and_failures_are_sealed_too(
    services: Services, tenant_id: str, log: CallAuditLog, claude: AnthropicSandbox
) -> None:
    body = asking("Classify: the printer is on fire", temperature=0)
    first = await services.gateway.complete(body, options(tenant_id))
    again = await services.gateway.complete(body, options(tenant_id))
    assert again.record.cache_hit
    claude.faults = Faults(rate_500=1.0)
    with pytest.raises(UpstreamError):
        await services.gateway.complete(asking("Classify: fails"), options(tenant_id))
    assert await log.flush() == 3
    async with services.sessions() as session:
        rows = (await session.scalars(select(CallAudit))).all()
        documents = {row.id: await log.read(session, tenant_id, row.id) for row in rows}
    assert documents[again.record.id]["response"] == first.message()
    (failed,) = [d for d in documents.values() if d["error"] is not None]
    assert failed["response"] is None
    assert failed["error"] == "api_error"
    assert failed["request"]["messages"][0]["content"] == "Classify: fails"


async def test_no_audit_log_when_turned_off(settings: Settings) -> None:
    off = settings.model_copy(
        update={"gateway": settings.gateway.model_copy(update={"audit": False})}
    )
    built = build_services(off)
    try:
        assert built.gateway.call_audit is None
    finally:
        await built.aclose()


# ------------------------------------------------------------------------ keys


async def test_without_the_key_nothing_is_readable(services: Services, tenant_id: str) -> None:
    log = CallAuditLog(services.sessions, ring(K1), timedelta(days=1))
    request_id = await sealed_call(log, tenant_id)
    with pytest.raises(CallAuditUnreadable, match="'k1'") as caught:
        await read(services, ring(K2), tenant_id, request_id)
    assert caught.value.extensions == {"key_id": "k1"}
    assert (await read(services, ring(K1), tenant_id, request_id))["key_id"] == "k1"


async def test_rotation_keeps_old_records_readable_and_reseal_moves_them(
    services: Services, tenant_id: str
) -> None:
    old = await sealed_call(CallAuditLog(services.sessions, ring(K1), timedelta(days=1)), tenant_id)
    rotating = CallAuditLog(services.sessions, ring(K2, K1), timedelta(days=1))
    new = await sealed_call(rotating, tenant_id)
    assert (await read(services, ring(K2, K1), tenant_id, old))["key_id"] == "k1"

    report = await rotating.reseal(batch_size=1)
    assert (report.resealed, report.unreadable) == (1, {})
    assert (await rotating.reseal()).resealed == 0  # nothing left under k1

    for request_id in (old, new):
        document = await read(services, ring(K2), tenant_id, request_id)  # k1 retired
        assert document["key_id"] == "k2"
        assert document["request"] == {"messages": [{"role": "user", "content": "hi"}]}
    # A key already gone cannot be resealed from: those rows are reported, not lost.
    gone = await sealed_call(CallAuditLog(services.sessions, ring(K1), timedelta(1)), tenant_id)
    report = await CallAuditLog(services.sessions, ring(K2), timedelta(1)).reseal()
    assert (report.resealed, report.unreadable) == (0, {"k1": 1})
    with pytest.raises(CallAuditUnreadable, match="'k1'"):
        await read(services, ring(K2), tenant_id, gone)


async def test_a_sealed_blob_moved_to_another_row_does_not_open(
    services: Services, tenant_id: str, log: CallAuditLog
) -> None:
    async with services.sessions.begin() as session:
        other_tenant = (await create_tenant(session, "globex")).id
    source = await sealed_call(log, tenant_id)
    target = await sealed_call(log, tenant_id)
    elsewhere = await sealed_call(log, other_tenant)
    async with services.sessions.begin() as session:
        blob = await session.scalar(select(CallAudit.sealed).where(CallAudit.id == source))
        await session.execute(
            update(CallAudit).where(CallAudit.id.in_([target, elsewhere])).values(sealed=blob)
        )
    for owner, request_id in ((tenant_id, target), (other_tenant, elsewhere)):
        with pytest.raises(CallAuditUnreadable, match="failed authentication"):
            await read(services, log.keyring, owner, request_id)
    # Another tenant's id is simply not there.
    with pytest.raises(NotFound):
        await read(services, log.keyring, other_tenant, source)


# ------------------------------------------------------------- buffer, retention


async def test_retention_purge_removes_expired_rows_only(
    services: Services, tenant_id: str, log: CallAuditLog
) -> None:
    now = datetime.now(UTC)
    expired = [await sealed_call(log, tenant_id, created_at=now - timedelta(days=31)) for _ in "ab"]
    kept = await sealed_call(log, tenant_id, created_at=now - timedelta(days=29))
    with pytest.raises(NotFound):  # past retention and not yet purged: already unreadable
        await read(services, log.keyring, tenant_id, expired[0])

    assert await log.purge_expired(now, batch_size=1) == 2
    assert await log.purge_expired(now) == 0
    async with services.sessions() as session:
        assert list((await session.scalars(select(CallAudit.id))).all()) == [kept]


async def test_the_buffer_is_bounded_and_never_raises_into_a_call(
    services: Services, tenant_id: str
) -> None:
    log = CallAuditLog(services.sessions, ring(K1), timedelta(days=1), max_pending=3)
    for _ in range(4):
        log.submit(record_of(tenant_id), {"messages": []}, None)
    assert (len(log), log.dropped) == (3, 1)  # the oldest made room
    assert await log.flush() == 3
    log.submit(record_of(tenant_id), {"bad": object()}, None)  # fails in the flush, not here
    log.submit(record_of("ten_deleted"), {"messages": []}, None)  # refused by the database
    log.submit(record_of(tenant_id), {"messages": []}, None)
    assert await log.flush() == 1
    assert log.dropped == 3
    await log.aclose()


async def test_sealing_yields_to_the_event_loop(
    services: Services, tenant_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large batch is sealed on the event loop with other tasks running in between (here
    after every call), so a request arriving meanwhile barely waits."""
    monkeypatch.setattr(LoopShare, "checkpoint", yield_every_time)
    log = CallAuditLog(services.sessions, ring(K1), timedelta(days=1))
    ticks = 0
    seen: list[int] = []  # the ticker's count when each call was sealed
    seal = log._seal

    def counting_seal(item: Any) -> dict[str, Any] | None:
        seen.append(ticks)
        return seal(item)

    monkeypatch.setattr(log, "_seal", counting_seal)

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    for _ in range(40):
        log.submit(record_of(tenant_id), {"messages": [{"role": "user", "content": "hi"}]}, None)
    running = asyncio.create_task(ticker())
    try:
        assert await log.flush() == 40
    finally:
        running.cancel()
    assert len(seen) == 40
    assert all(later > earlier for earlier, later in pairwise(seen))
    await log.aclose()


def test_the_cli_reseals_and_purges(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async def seal() -> None:
        engine = make_engine(sqlite_url)
        sessions = make_sessionmaker(engine)
        try:
            async with sessions.begin() as session:
                tenant = (await create_tenant(session, "acme")).id
            log = CallAuditLog(sessions, ring(K1), timedelta(days=1))
            await sealed_call(log, tenant)
            await sealed_call(log, tenant, created_at=datetime.now(UTC) - timedelta(days=40))
        finally:
            await engine.dispose()

    asyncio.run(seal())
    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("SWITCHYARD_ENCRYPTION_KEYS", f"k2:{K2[1]},k1:{K1[1]}")
    monkeypatch.setenv("SWITCHYARD_LOG_LEVEL", "warning")
    runner = CliRunner()

    resealed = runner.invoke(app, ["call-audit", "reseal"])
    assert resealed.exit_code == 0, resealed.output
    assert "re-encrypted 2 call audit record(s)" in resealed.output
    purged = runner.invoke(app, ["call-audit", "purge"])
    assert purged.exit_code == 0, purged.output
    assert "deleted 1 expired call audit record(s)" in purged.output
    monkeypatch.setenv("SWITCHYARD_ENCRYPTION_KEYS", f"k3:{generate_key()}")
    stuck = runner.invoke(app, ["call-audit", "reseal"])
    assert stuck.exit_code == 1
    assert "1 record(s) sealed with key 'k2', which is not configured" in stuck.output
