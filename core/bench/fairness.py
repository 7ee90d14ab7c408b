"""Benchmark: one tenant's burst against another tenant's interactive calls.

The real :class:`~core.gateway.gateway.Gateway` (built by
:func:`~core.gateway.factory.build_gateway`, in-process admission, call records on a
throw-away SQLite database) calls the in-process Anthropic sandbox
(:class:`~core.sandbox.anthropic.AnthropicSandbox` on a local socket), which answers every
call in a fixed ``upstream_seconds`` and whose limits equal the gateway's, so the gateway's
admission is the bottleneck, never the sandbox. One model, a request limit of ``rpm`` (the
token limits far above the load), no headroom, response cache and dedup off, budgets and
the call audit off: what is measured is admission.

Tenant B sends ``b_calls`` interactive calls, one every ``b_interval`` seconds; its latency
is from each call's scheduled time (so a late generator is charged, no coordinated
omission) to the whole answer. Each run builds a fresh gateway and first spends the
request bucket's burst allowance, so that admission is the bottleneck from the first call
(otherwise a full bucket lets the first ``rpm`` calls of any burst straight through):

* ``alone``: B only;
* ``background-fair`` / ``background-fifo``: tenant A queues ``burst`` background calls at
  once, ``b_delay`` before B's first call; fairness on, then off (one queue per priority);
* ``interactive-fair`` / ``interactive-fifo``: the same burst at interactive priority, as
  a direct ``/v1/messages`` caller sends it when it sets no priority header.

A call of B's still waiting after ``b_deadline`` gets the gateway's 429 (admission
timeout); it counts in B's percentiles at the time it gave up, and among the errors. A's
calls have an hour. Once B's last call is answered the run ends; A's calls still waiting
are cancelled.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.bench.processes import percentile
from core.gateway.admission import Priority

MODEL = "claude-haiku-5-5"
HUGE = 10**9
BOUND = 1.5  # B's p95 under A's burst, fairness on, at most this times its p95 alone
SANDBOX_KEY = "sk-ant-sandbox"


@dataclass(frozen=True)
class Plan:
    burst: int  # A's calls, queued at once
    b_calls: int  # B's interactive calls
    b_interval: float  # seconds between B's calls
    b_delay: float  # B's first call this long after A's burst was queued
    rpm: int  # the model's request limit, the gateway's and the sandbox's
    upstream_seconds: float  # every answer takes this long
    b_deadline: float  # B's calls give up after this


FULL = Plan(
    burst=1_000,
    b_calls=150,
    b_interval=0.25,
    b_delay=1.0,
    rpm=1_200,
    upstream_seconds=0.5,
    b_deadline=30.0,
)
QUICK = Plan(
    burst=1_000,
    b_calls=25,
    b_interval=0.2,
    b_delay=0.5,
    rpm=1_200,
    upstream_seconds=0.5,
    b_deadline=6.0,
)


@dataclass(frozen=True)
class Scenario:
    name: str
    label: str
    burst: Priority | None  # A's burst's priority; None: no burst
    fair: bool


SCENARIOS = (
    Scenario("alone", "B alone", None, True),
    Scenario("background-fair", "A's burst, background, fairness on", Priority.BACKGROUND, True),
    Scenario("background-fifo", "A's burst, background, fairness off", Priority.BACKGROUND, False),
    Scenario("interactive-fair", "A's burst, interactive, fairness on", Priority.INTERACTIVE, True),
    Scenario(
        "interactive-fifo", "A's burst, interactive, fairness off", Priority.INTERACTIVE, False
    ),
)


@dataclass
class RunResult:
    name: str
    label: str
    latencies: list[float]  # B's, seconds, timeouts at the time they gave up
    queue_ms: list[float]  # B's answered calls: time spent in admission
    errors: dict[str, int]
    a_answered: int  # A's calls answered while B's calls ran
    seconds: float
    p50: float = field(init=False)
    p95: float = field(init=False)
    queue_p95_ms: float = field(init=False)

    def __post_init__(self) -> None:
        self.p50 = percentile(self.latencies, 50)
        self.p95 = percentile(self.latencies, 95)
        self.queue_p95_ms = percentile(self.queue_ms, 95)


@dataclass
class FairnessResult:
    runs: list[RunResult]
    upstream_429: int  # the sandbox's rate-limit answers over every run (should be 0)
    bound: float = BOUND

    def run(self, name: str) -> RunResult:
        return next(r for r in self.runs if r.name == name)

    def ratio(self, name: str, *, median: bool = False) -> float:
        """B's p95 (or p50) in run ``name`` over its p95 (p50) alone."""
        alone, run = self.run("alone"), self.run(name)
        return run.p50 / alone.p50 if median else run.p95 / alone.p95

    def holds(self, name: str) -> bool:
        return self.ratio(name) <= self.bound


def body(tenant: str, n: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 16,
        "messages": [
            {"role": "user", "content": f"Classify ticket {tenant}-{n}: printer on fire."}
        ],
    }


async def _tenants(database_url: str) -> dict[str, str]:
    from core.auth import create_tenant
    from core.db.engine import make_engine, make_sessionmaker

    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine).begin() as session:
            return {name: (await create_tenant(session, f"bench-{name}")).id for name in "AB"}
    finally:
        await engine.dispose()


async def _spend_burst_allowance(gateway: Any) -> None:
    """Take every request the bucket holds (and keep them), as a busy minute would have."""
    remaining = (await gateway.admission.snapshot())[MODEL].remaining.requests
    for _ in range(int(remaining)):
        permit = await gateway.admission.acquire(
            MODEL,
            input_tokens=0,
            max_tokens=0,
            priority=Priority.BACKGROUND,
            deadline=time.monotonic() + 60,
            tenant="earlier traffic",
        )
        permit.settle(input_tokens=0, output_tokens=0)


async def _run_one(
    plan: Plan, scenario: Scenario, database_url: str, upstream: str, ids: dict[str, str]
) -> RunResult:
    from pydantic import SecretStr

    from core.db.engine import make_engine, make_sessionmaker
    from core.gateway.calls import CallOptions
    from core.gateway.factory import build_gateway
    from core.metrics import Metrics
    from core.settings import GatewaySettings, load_settings

    gateway_settings = GatewaySettings(
        admission="memory",
        limits={MODEL: {"rpm": plan.rpm, "input_tpm": HUGE, "output_tpm": HUGE}},
        headroom=0,
        tenant_fairness=scenario.fair,
        response_cache_seconds=0,
        dedup=False,
        budgets=False,
        audit=False,
    )
    settings = load_settings(
        database_url=database_url,
        anthropic_base_url=upstream,
        anthropic_api_key=SecretStr(SANDBOX_KEY),
        gateway=gateway_settings,
    )
    engine = make_engine(database_url)
    gateway = build_gateway(settings, make_sessionmaker(engine), Metrics())
    latencies: list[float] = []
    queue_ms: list[float] = []
    errors: dict[str, int] = {}
    a_done = 0
    try:
        await _spend_burst_allowance(gateway)

        async def a_call(n: int, priority: Priority) -> None:
            nonlocal a_done
            options = CallOptions(
                tenant_id=ids["A"],
                trace_id=f"{n:032x}",
                priority=priority,
                deadline_seconds=3_600,
                no_cache=True,
            )
            await gateway.complete(body("A", n), options)
            a_done += 1

        async def b_call(n: int, due: float) -> None:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            options = CallOptions(
                tenant_id=ids["B"],
                trace_id=f"{n:032x}",
                priority=Priority.INTERACTIVE,
                deadline_seconds=plan.b_deadline,
                no_cache=True,
            )
            try:
                completion = await gateway.complete(body("B", n), options)
            except Exception as exc:
                kind = str(getattr(exc, "problem_type", type(exc).__name__))
                errors[kind] = errors.get(kind, 0) + 1
            else:
                queue_ms.append(completion.record.queue_ms)
            latencies.append(time.perf_counter() - due)

        started = time.perf_counter()
        burst = []
        if scenario.burst is not None:
            burst = [asyncio.create_task(a_call(n, scenario.burst)) for n in range(plan.burst)]
        first = started + plan.b_delay
        await asyncio.gather(*(b_call(n, first + n * plan.b_interval) for n in range(plan.b_calls)))
        seconds = time.perf_counter() - started
        answered = a_done
        for task in burst:
            task.cancel()
        await asyncio.gather(*burst, return_exceptions=True)
    finally:
        await gateway.aclose()
        await engine.dispose()
    return RunResult(scenario.name, scenario.label, latencies, queue_ms, errors, answered, seconds)


def run(plan: Plan, progress: Callable[[str], None]) -> FairnessResult:
    """Every scenario, in order, against one sandbox and one database."""
    import uvloop

    from core.db.migrate import upgrade
    from core.gateway.catalog import RateLimits
    from core.logging import configure_logging
    from core.sandbox import SandboxServer
    from core.sandbox.anthropic import AnthropicSandbox, Faults

    configure_logging("warning", "console")
    folder = Path(tempfile.mkdtemp(prefix="switchyard-bench-fairness-"))
    database_url = f"sqlite:///{folder / 'switchyard.db'}"
    sandbox = AnthropicSandbox(
        latency_scale=0,
        limits={MODEL: RateLimits(rpm=plan.rpm, input_tpm=HUGE, output_tpm=HUGE)},
        faults=Faults(slow_rate=1.0, slow_seconds=plan.upstream_seconds),
        api_keys=(SANDBOX_KEY,),
    )
    runs = []
    try:
        upgrade(database_url)
        with (
            SandboxServer(sandbox.app) as server,
            asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
        ):
            ids = runner.run(_tenants(database_url))
            for scenario in SCENARIOS:
                progress(f"bench fairness: {scenario.label} ...")
                result = runner.run(_run_one(plan, scenario, database_url, server.url, ids))
                progress(
                    f"bench fairness: {scenario.name} done in {result.seconds:.1f} s, "
                    f"B p95 {result.p95:.3f} s"
                )
                runs.append(result)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return FairnessResult(runs, sandbox.stats.rate_limited)


def key_values(result: FairnessResult) -> str:
    figures = {"b_p95_alone_s": f"{result.run('alone').p95:.3f}"}
    for run_ in result.runs[1:]:
        key = run_.name.replace("-", "_")
        figures[f"{key}_p95_ratio"] = f"{result.ratio(run_.name):.2f}"
    figures["bound_holds"] = str(
        all(result.holds(r.name) for r in result.runs if r.name.endswith("-fair"))
    ).lower()
    return " ".join(f"{k}={v}" for k, v in figures.items())
