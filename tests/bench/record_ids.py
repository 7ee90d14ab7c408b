"""Benchmark: the call-record writer as its tables grow, with random and time-ordered ids.

Gateway request ids are the primary key of ``gateway_requests`` and ``call_audit`` and are
indexed in ``gateway_upstream_calls``. A random id puts each row's index entries on a
random page of each index, so once the indexes outgrow SQLite's page cache every row of a
flush touches (reads and rewrites) pages of its own; a time-ordered id appends them.

Two SQLite files, one per kind of id, grow side by side: each step submits the same number
of records to each file's :class:`~core.gateway.records.Recorder` and flushes it, the two
taking turns, so a machine that slows down meanwhile weighs on both alike. Measured per
flush: its wall time, and each stretch the writer held the event loop (what a request served
meanwhile waits), seen as a gap between turns of a callback that keeps rescheduling itself.
Reported at each fifth of the run, by rows in the table.

Run: ``python -m tests.bench.record_ids`` (``--rows`` to change the size); ``make bench``
runs it. Results are printed and written to ``var/bench/record_ids.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.auth import create_tenant
from core.bench import processes
from core.db.engine import make_engine, make_sessionmaker
from core.db.migrate import upgrade
from core.db.types import new_id, new_ordered_id
from core.gateway.records import Recorder
from core.gateway.transactions import transactions_for
from core.server import tune_gc, tune_switch_interval
from tests.core.gateway.test_records import record

KINDS: dict[str, Callable[[str], str]] = {"random": new_id, "ordered": new_ordered_id}
HOLD = 0.00005  # s: a gap between the probe's turns this long is the writer's


@dataclass
class Stage:
    rows: int  # in gateway_requests at the end of the stage
    flush_ms: dict[str, list[float]] = field(default_factory=dict)
    held_ms: dict[str, list[float]] = field(default_factory=dict)


class HoldProbe:
    """How long the loop goes between turns of a callback that always reschedules itself:
    a gap is the time something else (the writer) held the loop. It keeps the loop busy,
    so its gaps are the writer's slices and nothing of the loop's own timer resolution."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self._last = 0.0
        self._running = False

    def _turn(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self._last = now
        if self._running:
            asyncio.get_running_loop().call_soon(self._turn)

    def start(self) -> None:
        self.gaps = []
        self._running = True
        self._last = time.perf_counter()
        asyncio.get_running_loop().call_soon(self._turn)

    async def stop(self) -> list[float]:
        """The gaps long enough to be the writer's (``HOLD``), not the loop's own turn."""
        self._running = False
        await asyncio.sleep(0)
        return [gap for gap in self.gaps if gap >= HOLD]


class Arm:
    """One SQLite file, its recorder and the id maker it uses."""

    def __init__(self, kind: str, path: Path) -> None:
        self.kind = kind
        self.make_id = KINDS[kind]
        self.path = path
        self.engine = make_engine(f"sqlite:///{path}")
        self.sessions = make_sessionmaker(self.engine)
        self.transactions = transactions_for(self.sessions)
        self.recorder = Recorder(self.sessions, transactions=self.transactions, flush_interval=3600)
        self.tenant_id = ""

    async def open(self) -> None:
        async with self.sessions.begin() as session:
            self.tenant_id = (await create_tenant(session, self.kind)).id

    async def flush(self, count: int, probe: HoldProbe) -> tuple[float, list[float]]:
        for _ in range(count):
            one = record(self.tenant_id)  # the call records' own tests' record
            one.id = self.make_id("gwr")
            self.recorder.submit(one)
        probe.start()
        began = time.perf_counter()
        written = await self.recorder.flush()
        took = time.perf_counter() - began
        holds = await probe.stop()
        if written != count:
            raise RuntimeError(f"{self.kind}: wrote {written} of {count} records")
        return took * 1000, [hold * 1000 for hold in holds]

    async def aclose(self) -> None:
        await self.recorder.aclose()
        await self.transactions.aclose()
        await self.engine.dispose()


@contextmanager
def _databases() -> Iterator[dict[str, Path]]:
    folder = Path(tempfile.mkdtemp(prefix="switchyard-record-ids-"))
    try:
        template = folder / "template.db"
        upgrade(f"sqlite:///{template}")
        paths = {kind: folder / f"{kind}.db" for kind in KINDS}
        for path in paths.values():
            shutil.copy(template, path)
        yield paths
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def _measure(
    paths: dict[str, Path], rows: int, batch: int, stages: int, *, tune: bool
) -> list[Stage]:
    arms = [Arm(kind, path) for kind, path in paths.items()]
    for arm in arms:
        await arm.open()
    if tune:  # the process's GC and GIL hand-over as `switchyard serve` sets them
        tune_gc()
        tune_switch_interval()
    probe = HoldProbe()
    steps = rows // batch
    per_stage = max(1, steps // stages)
    result: list[Stage] = []
    try:
        for step in range(steps):
            if step % per_stage == 0:
                result.append(Stage(rows=0))
            stage = result[-1]
            for arm in arms if step % 2 == 0 else arms[::-1]:
                took, holds = await arm.flush(batch, probe)
                stage.flush_ms.setdefault(arm.kind, []).append(took)
                stage.held_ms.setdefault(arm.kind, []).extend(holds)
            stage.rows = (step + 1) * batch
    finally:
        for arm in arms:
            await arm.aclose()
    return result


def run(rows: int, batch: int = 150, stages: int = 5, *, tune: bool = True) -> dict[str, Any]:
    """``tune``: set this process up as the server's (off in tests: it lasts)."""
    with _databases() as paths:
        result = asyncio.run(_measure(paths, rows, batch, stages, tune=tune))
        sizes = {kind: round(path.stat().st_size / 2**20, 1) for kind, path in paths.items()}
    table = []
    for stage in result:
        row: dict[str, Any] = {"rows": stage.rows}
        for kind in KINDS:
            row[f"flush_p50_ms_{kind}"] = round(processes.percentile(stage.flush_ms[kind], 50), 2)
            row[f"held_p99_ms_{kind}"] = round(processes.percentile(stage.held_ms[kind], 99), 2)
            row[f"held_max_ms_{kind}"] = round(max(stage.held_ms[kind], default=0.0), 2)
        row["flush_ratio"] = round(row["flush_p50_ms_ordered"] / row["flush_p50_ms_random"], 2)
        table.append(row)
    return {"rows": rows, "batch": batch, "db_mib": sizes, "stages": table}


def report(payload: dict[str, Any]) -> list[str]:
    header = [
        "rows in the table",
        "flush p50 random",
        "ordered",
        "ordered/random",
        "loop held p99 random",
        "ordered",
        "longest random",
        "ordered",
    ]
    rows = [header]
    for stage in payload["stages"]:
        rows.append(
            [
                f"{stage['rows']:,}",
                f"{stage['flush_p50_ms_random']:.1f} ms",
                f"{stage['flush_p50_ms_ordered']:.1f} ms",
                f"{stage['flush_ratio']:.2f}",
                f"{stage['held_p99_ms_random']:.2f} ms",
                f"{stage['held_p99_ms_ordered']:.2f} ms",
                f"{stage['held_max_ms_random']:.2f} ms",
                f"{stage['held_max_ms_ordered']:.2f} ms",
            ]
        )
    sizes = payload["db_mib"]
    return [
        f"call records in flushes of {payload['batch']}, random vs time-ordered request ids:",
        *processes.columns(rows),
        f"database file: random {sizes['random']} MiB, ordered {sizes['ordered']} MiB",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=150_000, help="records per database")
    parser.add_argument("--batch", type=int, default=150, help="records per flush")
    args = parser.parse_args()
    print(f"reproduce: python -m tests.bench.record_ids --rows {args.rows} --batch {args.batch}")
    payload = run(args.rows, args.batch)
    print("\n".join(report(payload)))
    print(f"written to {processes.write_result('record_ids', payload)}")
    print(key_values(payload))


def key_values(payload: dict[str, Any]) -> str:
    """The last stage's figures (the largest table) on one line."""
    last = payload["stages"][-1]
    figures = {"rows": last["rows"], "flush_ordered_over_random": last["flush_ratio"]}
    for kind in KINDS:
        figures[f"flush_p50_ms_{kind}"] = last[f"flush_p50_ms_{kind}"]
        figures[f"loop_held_p99_ms_{kind}"] = last[f"held_p99_ms_{kind}"]
    return " ".join(f"{key}={value}" for key, value in figures.items())


if __name__ == "__main__":
    main()
