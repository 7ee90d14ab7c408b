"""Polling connections: one scheduled job per due connection; the cursor moves with events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel
from sqlalchemy import func, select, update

from connectors.base import (
    Ack,
    ChangeEvent,
    ChangeType,
    Connector,
    ConnectorContext,
    ConnectorKind,
    FieldMeta,
    InboundRequest,
    IngestResult,
    Patch,
    PollResult,
    Record,
    RecordRef,
    WriteResult,
)
from connectors.registry import ConnectorRegistry
from core.connections import create_connection
from core.db.models import Connection, Event, FlowEnablement, Job, JobStatus, Tenant
from core.db.types import utcnow
from core.errors import ConnectorTransientError
from core.flows.catalog import FlowCatalog, FlowEntry, FlowHeader, FlowSource
from core.handlers import Handlers, JobContext
from core.ingest import FLOW_JOB
from core.queue import JobQueue
from core.scheduler import POLL_JOB, CursorMoved, _advance, handle_poll, schedule_due_polls
from core.services import Services, build_services
from core.worker import Worker
from tests.conftest import make_settings

FLOW = "fakepoll/notes"


class Empty(BaseModel):
    pass


class FakePlatform:
    """Serves ``events`` in pages of 3 from an offset cursor. Each page repeats the last
    event of the previous one, as "modified since <timestamp>" APIs do at page edges."""

    def __init__(self, count: int) -> None:
        self.events = [
            ChangeEvent(
                platform_event_id=f"e{n}",
                object="note",
                record_id=f"r{n}",
                change_type=ChangeType.UPDATED,
                data={"n": n},
            )
            for n in range(count)
        ]
        self.fail_at: int | None = None  # offset whose poll raises
        self.before_poll: Callable[[], Awaitable[None]] | None = None

    async def poll(self, cursor: Mapping[str, Any] | None) -> PollResult:
        if self.before_poll is not None:
            await self.before_poll()
        offset = int((cursor or {}).get("offset", 0))
        if offset == self.fail_at:
            raise ConnectorTransientError("platform answered 503")
        page = self.events[max(0, offset - 1) : offset + 3]
        end = min(offset + 3, len(self.events))
        return PollResult(events=page, cursor={"offset": end}, more=end < len(self.events))


class FakeConnector:
    kind = ConnectorKind.CRM

    def __init__(self, platform: FakePlatform) -> None:
        self.platform = platform

    def verify(self, request: InboundRequest) -> None:
        raise NotImplementedError

    def parse(self, request: InboundRequest) -> list[ChangeEvent]:
        raise NotImplementedError

    def ack(self, result: IngestResult) -> Ack | None:
        return None

    async def poll(self, cursor: Mapping[str, Any] | None) -> PollResult:
        return await self.platform.poll(cursor)

    async def fetch(self, ref: RecordRef, fields: Sequence[str] | None = None) -> Record:
        raise NotImplementedError

    async def write(self, patch: Patch, idempotency_key: str) -> WriteResult:
        raise NotImplementedError

    async def describe(self, object_name: str) -> list[FieldMeta]:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class FakePollingFactory:
    name: ClassVar[str] = "fakepoll"
    kind: ClassVar[ConnectorKind] = ConnectorKind.CRM
    config_model: ClassVar[type[BaseModel]] = Empty
    secrets_model: ClassVar[type[BaseModel]] = Empty
    supports_polling: ClassVar[bool] = True

    def __init__(self, platform: FakePlatform) -> None:
        self.platform = platform

    def create(
        self, config: Mapping[str, Any], secrets: Mapping[str, Any], context: ConnectorContext
    ) -> Connector:
        return FakeConnector(self.platform)


class FakePushFactory(FakePollingFactory):
    name: ClassVar[str] = "fakepush"
    supports_polling: ClassVar[bool] = False


@pytest.fixture
def platform() -> FakePlatform:
    return FakePlatform(7)


@pytest.fixture
async def make_services(
    database_url: str, platform: FakePlatform
) -> AsyncIterator[Callable[[], Services]]:
    built: list[Services] = []
    catalog = FlowCatalog(
        [
            FlowEntry(
                name=FLOW,
                path="",
                header=FlowHeader(source=FlowSource(connector="fakepoll", object="note")),
            )
        ]
    )

    def make() -> Services:
        settings = make_settings(database_url, scheduler_tick_seconds=0.1)
        registry = ConnectorRegistry([FakePollingFactory(platform), FakePushFactory(platform)])
        built.append(build_services(settings, registry=registry, flows=catalog))
        return built[-1]

    yield make
    for services in built:
        await services.aclose()


@pytest.fixture
def services(make_services: Callable[[], Services]) -> Services:
    return make_services()


async def add_connection(
    services: Services, factory_name: str = "fakepoll", interval: float | None = 60
) -> str:
    async with services.sessions.begin() as session:
        if await session.get(Tenant, "ten_poll") is None:
            session.add(Tenant(id="ten_poll", name="poll tenant"))
            await session.flush()
        connection = await create_connection(
            session,
            tenant_id="ten_poll",
            factory=services.connectors.registry.require(factory_name),
            name=f"{factory_name}-{time.monotonic_ns()}",
            config={},
            secrets={},
            keyring=services.keyring,
            poll_interval_seconds=interval,
        )
        session.add(FlowEnablement(connection_id=connection.id, flow=FLOW, tenant_id="ten_poll"))
        return connection.id


async def load_connection(services: Services, connection_id: str) -> Connection:
    async with services.sessions() as session:
        connection = await session.get(Connection, connection_id)
        assert connection is not None
        return connection


async def count(services: Services, model: type[Any], *where: Any) -> int:
    async with services.sessions() as session:
        statement = select(func.count()).select_from(model).where(*where)
        return int((await session.execute(statement)).scalar_one())


async def claim_poll(services: Services) -> JobContext:
    (job,) = await JobQueue(services.sessions, worker_id="t", lease_seconds=30).claim([POLL_JOB], 1)
    return JobContext(job=job, services=services)


async def test_only_due_polling_connections_are_scheduled(services: Services) -> None:
    due = await add_connection(services)
    later = await add_connection(services)
    push = await add_connection(services, "fakepush")
    async with services.sessions.begin() as session:
        await session.execute(
            update(Connection)
            .where(Connection.id == later)
            .values(next_poll_at=utcnow() + timedelta(hours=1))
        )
        # Even with a schedule forced onto it, a push-only connector is never polled.
        await session.execute(
            update(Connection)
            .where(Connection.id == push)
            .values(poll_interval_seconds=1, next_poll_at=utcnow())
        )
    before = utcnow()
    assert await schedule_due_polls(services) == 1
    async with services.sessions() as session:
        (job,) = (await session.execute(select(Job))).scalars()
    assert (job.kind, job.connection_id, job.dedupe_key) == (POLL_JOB, due, f"poll:{due}")
    assert job.tenant_id == "ten_poll"
    next_poll_at = (await load_connection(services, due)).next_poll_at
    assert next_poll_at is not None
    assert next_poll_at >= before + timedelta(seconds=60)
    assert await schedule_due_polls(services) == 0  # not due again for a minute


async def test_concurrent_schedulers_enqueue_one_job(
    services: Services, make_services: Callable[[], Services]
) -> None:
    """Four schedulers on four engines race for one due connection, five times over."""
    connection_id = await add_connection(services)
    schedulers = [make_services() for _ in range(4)]
    for _ in range(5):
        results = await asyncio.gather(*(schedule_due_polls(s) for s in schedulers))
        assert sum(results) == 1
        async with services.sessions.begin() as session:
            await session.execute(update(Job).values(status=JobStatus.DONE.value))
            await session.execute(
                update(Connection)
                .where(Connection.id == connection_id)
                .values(next_poll_at=utcnow() - timedelta(seconds=1))
            )
    assert await count(services, Job, Job.kind == POLL_JOB) == 5


async def test_advancing_the_schedule_is_a_compare_and_set(
    services: Services, make_services: Callable[[], Services]
) -> None:
    """The dedupe key only stops a second job while the first is live; a poll that already
    finished would not. The schedule's compare-and-set is what lets one racer win."""
    connection_id = await add_connection(services)
    now = utcnow()

    async def advance(racer: Services) -> bool:
        async with racer.sessions.begin() as session:
            return await _advance(session, connection_id, now, now + timedelta(seconds=60))

    won = await asyncio.gather(*(advance(make_services()) for _ in range(4)))
    assert sorted(won) == [False, False, False, True]


async def test_worker_polls_pages_storing_each_with_its_cursor(services: Services) -> None:
    connection_id = await add_connection(services)
    worker = Worker(services, Handlers(), run_scheduler=True)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        deadline = time.monotonic() + 20
        while await count(services, Job, Job.kind == POLL_JOB, Job.status == "done") < 1:
            assert time.monotonic() < deadline, "the worker never ran a poll job"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)

    assert (await load_connection(services, connection_id)).cursor == {"offset": 7}
    async with services.sessions() as session:
        stored = (await session.execute(select(Event.platform_event_id))).scalars().all()
        (poll,) = (await session.execute(select(Job).where(Job.kind == POLL_JOB))).scalars()
    assert sorted(stored) == [f"e{n}" for n in range(7)]  # overlaps stored once
    assert await count(services, Job, Job.kind == FLOW_JOB) == 7  # one flow job per event
    assert poll.result == {"pages": 3, "accepted": 7, "duplicates": 2, "jobs": 7}


async def test_a_failed_page_leaves_the_cursor_where_stored_events_end(
    services: Services, platform: FakePlatform
) -> None:
    connection_id = await add_connection(services)
    await schedule_due_polls(services)
    ctx = await claim_poll(services)

    platform.fail_at = 3  # the second page
    with pytest.raises(ConnectorTransientError):
        await handle_poll(ctx)
    assert (await load_connection(services, connection_id)).cursor == {"offset": 3}
    assert await count(services, Event) == 3
    assert await count(services, Job, Job.kind == FLOW_JOB) == 3

    platform.fail_at = None  # the retry goes on from the stored cursor
    outcome = await handle_poll(ctx)
    assert outcome.result == {"pages": 2, "accepted": 4, "duplicates": 2, "jobs": 4}
    assert (await load_connection(services, connection_id)).cursor == {"offset": 7}
    assert await count(services, Event) == 7


async def test_a_page_polled_from_a_moved_cursor_is_not_stored(
    services: Services, platform: FakePlatform
) -> None:
    connection_id = await add_connection(services)
    await schedule_due_polls(services)
    ctx = await claim_poll(services)

    async def another_poller_moves_the_cursor() -> None:
        async with services.sessions.begin() as session:
            await session.execute(
                update(Connection)
                .where(Connection.id == connection_id)
                .values(cursor={"offset": 6})
            )

    platform.before_poll = another_poller_moves_the_cursor
    with pytest.raises(CursorMoved):
        await handle_poll(ctx)
    assert (await load_connection(services, connection_id)).cursor == {"offset": 6}
    assert await count(services, Event) == 0
