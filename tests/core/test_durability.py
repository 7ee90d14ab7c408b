"""4 worker processes, 2,000 jobs, one worker SIGKILLed midway: nothing lost, no effect twice.

Each job's handler logs every invocation and applies its effect keyed by job id (see
``tests/core/durability_worker.py``). After the kill, the victim's leased jobs stay
``running`` until their lease expires; another worker's recovery requeues them and they run
again. The only jobs allowed to run twice are exactly those the victim had in flight.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from connectors.registry import ConnectorRegistry
from core.db.models import Job, JobStatus
from core.flows.catalog import FlowCatalog
from core.queue import NewJob, enqueue
from core.services import Services, build_services
from core.settings import Settings
from tests.core.durability_worker import KIND, create_tables

pytestmark = pytest.mark.slow

JOBS = 2_000
WORKERS = 4
CONCURRENCY = 8
LEASE = 5.0  # short enough for quick recovery, long enough for SQLite lock waits
DEADLINE = 120.0
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    built = build_services(settings, registry=ConnectorRegistry([]), flows=FlowCatalog())
    await create_tables(built.engine)
    yield built
    async with built.engine.begin() as connection:
        for table in ("effects", "invocations"):
            await connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
    await built.aclose()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Worker processes by id; any still alive at teardown are killed."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def start_worker(
    procs: dict[str, subprocess.Popen[bytes]], url: str, worker_id: str, log_dir: Path
) -> None:
    log = (log_dir / f"{worker_id}.log").open("wb")
    procs[worker_id] = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.core.durability_worker",
            url,
            worker_id,
            f"--concurrency={CONCURRENCY}",
            f"--lease={LEASE}",
            "--sleep=0.01",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    log.close()


async def count_status(services: Services, status: JobStatus) -> int:
    async with services.sessions() as session:
        statement = select(func.count()).where(Job.status == status.value)
        return int((await session.execute(statement)).scalar_one())


def logs(log_dir: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(log_dir.glob("*")))


async def wait_for_done(
    services: Services, target: int, procs: dict[str, subprocess.Popen[bytes]], log_dir: Path
) -> None:
    deadline = time.monotonic() + DEADLINE
    while (done := await count_status(services, JobStatus.DONE)) < target:
        crashed = [w for w, p in procs.items() if p.poll() not in (None, -signal.SIGKILL)]
        assert not crashed, f"workers exited early: {crashed}\n{logs(log_dir)}"
        assert time.monotonic() < deadline, f"only {done}/{target} done\n{logs(log_dir)}"
        await asyncio.sleep(0.25)


async def test_sigkill_loses_no_job_and_applies_no_effect_twice(
    database_url: str, services: Services, spawn: dict[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    async with services.sessions.begin() as session:
        job_ids = set(await enqueue(session, [NewJob(kind=KIND) for _ in range(JOBS)]))
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    for n in range(WORKERS):
        start_worker(spawn, database_url, f"w{n}", log_dir)

    await wait_for_done(services, JOBS // 3, spawn, log_dir)
    # Kill the worker holding the most leases right now, so the kill interrupts real work.
    async with services.sessions() as session:
        holders = (
            await session.execute(
                select(Job.leased_by, func.count())
                .where(Job.status == JobStatus.RUNNING.value)
                .group_by(Job.leased_by)
                .order_by(func.count().desc())
            )
        ).all()
    assert holders, "no job was running when a third were done"
    victim = str(holders[0][0])
    spawn[victim].send_signal(signal.SIGKILL)
    spawn[victim].wait(10)
    async with services.sessions() as session:
        # Its leases outlive it by at least 2/3 of the lease: read them before recovery does.
        in_flight = set(
            (
                await session.execute(
                    select(Job.id).where(
                        Job.status == JobStatus.RUNNING.value, Job.leased_by == victim
                    )
                )
            ).scalars()
        )
    assert in_flight, "the killed worker held no leases"

    await wait_for_done(services, JOBS, spawn, log_dir)
    for worker_id, proc in spawn.items():
        if worker_id != victim:
            proc.send_signal(signal.SIGTERM)
    for worker_id, proc in spawn.items():
        if worker_id != victim:
            assert proc.wait(30) == 0, logs(log_dir)

    async with services.sessions() as session:
        statuses = dict(
            (await session.execute(select(Job.status, func.count()).group_by(Job.status))).all()
        )
        effects: dict[int, str] = dict(
            (await session.execute(text("SELECT job_id, worker FROM effects"))).all()
        )
        repeated: dict[int, int] = dict(
            (
                await session.execute(
                    text(
                        "SELECT job_id, COUNT(*) FROM invocations GROUP BY job_id "
                        "HAVING COUNT(*) > 1"
                    )
                )
            ).all()
        )
        victim_runs = set(
            (
                await session.execute(
                    text("SELECT job_id FROM invocations WHERE worker = :w"), {"w": victim}
                )
            ).scalars()
        )
        recovered = set(
            (
                await session.execute(select(Job.id).where(Job.last_error.like("lease expired%")))
            ).scalars()
        )

    assert statuses == {JobStatus.DONE.value: JOBS}
    assert set(effects) == job_ids  # one effect row per job, none missing
    assert recovered <= in_flight  # only the victim's leases were taken back …
    # … and the rest finished in the victim itself: a COMMIT it sent just before the kill
    # can become visible after we read its leases.
    assert all(effects[job_id] == victim for job_id in in_flight - recovered)
    assert set(repeated) <= recovered  # only interrupted jobs ran twice …
    assert set(repeated) <= victim_runs  # … once in the victim
    assert all(count == 2 for count in repeated.values())
    assert len(in_flight) <= CONCURRENCY
