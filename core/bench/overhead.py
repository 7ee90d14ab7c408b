"""Benchmark: what ``switchyard serve`` adds to a call, and how much it can carry.

One zero-latency sandbox process (``latency_scale`` 0, rate limits far above the load, so
admission never waits) and one ``switchyard serve`` whose upstream is that sandbox. The
load generator sends the same small Messages request (unique per call, so neither dedup nor
the response cache answers it) over keep-alive HTTP/1.1 connections, either straight to the
sandbox (*direct*) or through Switchyard (*through*):

1. warm-up through Switchyard, then its resident memory (``VmRSS``);
2. latency at concurrency 1, 16 and 64, closed loop (each connection sends its next
   request when the previous answer is in), direct and through in alternating blocks, so a
   machine that speeds up or slows down meanwhile (a shared VM does) weighs on both arms
   alike; added = through - direct per percentile. With a zero-latency upstream, 16 and 64
   connections saturate the gateway, so the same is measured again (fewer, longer blocks)
   with the sandbox answering in a fixed time (``Faults.slow_seconds``), the connections'
   starts spread over it: 64 calls in flight the way 64 concurrent Claude calls would be;
3. streaming: time to the first body byte at concurrency 1, direct and through, in
   alternating blocks;
4. maximum requests/s through Switchyard (closed loop, 64 connections) and the CPU time
   Switchyard's process spent per request; the same for the sandbox alone, for scale;
5. memory: requests through Switchyard until the total reaches the plan's count, sampling
   ``VmRSS`` as it goes; growth = last sample - the sample after warm-up;
6. what the gateway's call-record and call-audit writers dropped, from its ``/metrics``
   once they have drained.

The load generator is :mod:`core.bench.http_load`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from core.bench import processes
from core.bench.http_load import Load, build_requests, run_load
from core.gateway.catalog import Catalog

HUGE = {"rpm": 10**9, "input_tpm": 10**12, "output_tpm": 10**12}
FLUSH_PAUSE = 0.6  # s: longer than the call records' and call audit's flush intervals
LOG_DRAIN = 30.0  # s the writers get to finish after the load


@dataclass(frozen=True)
class Plan:
    concurrency: tuple[int, ...]
    latency_requests: tuple[int, ...]  # per concurrency level, zero-latency upstream
    upstream_seconds: float  # the fixed upstream latency of the second latency table
    upstream_concurrency: tuple[int, ...]
    upstream_requests: tuple[int, ...]
    warmup: int
    stream_requests: int
    max_rps_requests: int
    total_requests: int  # through Switchyard, warm-up included (the memory figure)
    rss_every: int
    blocks: int = 8  # each zero-latency level and streaming: direct/through alternations
    upstream_blocks: int = 4  # the same for each level with the fixed upstream latency


FULL = Plan(
    concurrency=(1, 16, 64),
    latency_requests=(2_000, 8_000, 16_000),
    upstream_seconds=0.5,
    upstream_concurrency=(16, 64),
    upstream_requests=(960, 3_840),  # 30 s each way
    warmup=5_000,
    stream_requests=2_000,
    max_rps_requests=20_000,
    total_requests=100_000,
    rss_every=10_000,
)
QUICK = Plan(
    concurrency=(1, 16, 64),
    latency_requests=(200, 800, 1_500),
    upstream_seconds=0.5,
    upstream_concurrency=(16, 64),
    upstream_requests=(96, 384),  # 3 s each way
    warmup=500,
    stream_requests=200,
    max_rps_requests=2_000,
    total_requests=6_000,
    rss_every=1_000,
    blocks=2,
    upstream_blocks=2,
)


@dataclass
class LevelResult:
    concurrency: int
    requests: int
    upstream_ms: float  # the sandbox's fixed answer time (0: zero latency)
    direct_p50_ms: float
    direct_p99_ms: float
    through_p50_ms: float
    through_p99_ms: float
    through_rps: float

    @property
    def added_p50_ms(self) -> float:
        return self.through_p50_ms - self.direct_p50_ms

    @property
    def added_p99_ms(self) -> float:
        return self.through_p99_ms - self.direct_p99_ms

    @property
    def key(self) -> str:
        upstream = f"_upstream{self.upstream_ms:.0f}ms" if self.upstream_ms else ""
        return f"c{self.concurrency}{upstream}"


@dataclass
class OverheadResult:
    levels: list[LevelResult] = field(default_factory=list)
    stream_direct_ttfb_ms: tuple[float, float] = (0.0, 0.0)  # p50, p99
    stream_through_ttfb_ms: tuple[float, float] = (0.0, 0.0)
    max_rps: float = 0.0
    max_rps_p99_ms: float = 0.0
    direct_max_rps: float = 0.0
    cpu_ms_per_request: float = 0.0
    sandbox_cpu_ms_per_request: float = 0.0
    rss_mb: list[tuple[int, float]] = field(default_factory=list)  # (requests so far, MiB)
    requests_through: int = 0
    non_2xx: dict[str, int] = field(default_factory=dict)
    log_dropped: dict[str, int] = field(default_factory=dict)  # per writer, at the end
    log_pending: dict[str, int] = field(default_factory=dict)  # left LOG_DRAIN s after the load
    gateway_logged_errors: int = 0
    gateway_log: str = ""

    @property
    def rss_growth_mb(self) -> float:
        """From the sample after warm-up to the last."""
        return self.rss_mb[-1][1] - self.rss_mb[0][1] if self.rss_mb else 0.0

    @property
    def rss_growth_second_half_mb(self) -> float:
        """Over the second half of the requests after warm-up: flat memory shows here."""
        if not self.rss_mb:
            return 0.0
        middle = (self.rss_mb[0][0] + self.rss_mb[-1][0]) / 2
        start = min(self.rss_mb, key=lambda sample: abs(sample[0] - middle))
        return self.rss_mb[-1][1] - start[1]


class _Bench:
    """The two servers and the request counters of one run."""

    def __init__(self, sandbox: processes.Server, switchyard: processes.Switchyard) -> None:
        self.sandbox = sandbox
        self.switchyard = switchyard
        self.gateway = switchyard.server
        self.result = OverheadResult()
        self.serial = 0

    def through(
        self, count: int, concurrency: int, *, stream: bool = False, stagger: float = 0.0
    ) -> Load:
        batch = build_requests(
            self.gateway.port, self.switchyard.api_key, count, start=self.serial, stream=stream
        )
        self.serial += count
        load = run_load(self.gateway.port, batch, concurrency, stagger)
        self.result.requests_through += count
        self._note(load, "through")
        return load

    def direct(
        self, count: int, concurrency: int, *, stream: bool = False, stagger: float = 0.0
    ) -> Load:
        batch = build_requests(
            self.sandbox.port, processes.SANDBOX_KEY, count, start=self.serial, stream=stream
        )
        self.serial += count
        load = run_load(self.sandbox.port, batch, concurrency, stagger)
        self._note(load, "direct")
        return load

    def alternating(
        self,
        count: int,
        concurrency: int,
        blocks: int,
        *,
        stream: bool = False,
        stagger: float = 0.0,
    ) -> tuple[Load, Load]:
        """``count`` requests each way in ``blocks`` direct/through pairs; the direct and the
        through loads, each summed over its blocks."""
        pairs: list[tuple[Load, Load]] = []
        for block in range(blocks):
            if pairs:
                # Let the gateway write the previous block's records first: its background
                # flush would otherwise take CPU from the direct block (the cores are shared).
                time.sleep(FLUSH_PAUSE)
            size = count // blocks + (block < count % blocks)
            pairs.append(
                (
                    self.direct(size, concurrency, stream=stream, stagger=stagger),
                    self.through(size, concurrency, stream=stream, stagger=stagger),
                )
            )
        (direct, through), rest = pairs[0], pairs[1:]
        return sum((d for d, _ in rest), direct), sum((t for _, t in rest), through)

    def level(
        self, concurrency: int, count: int, upstream_seconds: float = 0.0, *, blocks: int
    ) -> None:
        d, t = self.alternating(count, concurrency, blocks, stagger=upstream_seconds)
        self.result.levels.append(
            LevelResult(
                concurrency,
                count,
                upstream_seconds * 1000,
                d.ms(50),
                d.ms(99),
                t.ms(50),
                t.ms(99),
                t.rate,
            )
        )

    def rss(self) -> None:
        self.result.rss_mb.append((self.result.requests_through, self.gateway.rss_mb()))

    def _note(self, load: Load, arm: str) -> None:
        for status, count in load.statuses.items():
            if not 200 <= status < 300:
                key = f"{arm}_{status}"
                self.result.non_2xx[key] = self.result.non_2xx.get(key, 0) + count


def run(plan: Plan, progress: Callable[[str], None] = print) -> OverheadResult:
    limits = {model.id: HUGE for model in Catalog.load()}
    with processes.start_sandbox(latency_scale=0, limits=limits, tag="overhead") as sandbox:
        switchyard = processes.start_switchyard(sandbox, limits=limits, tag="overhead")
        with switchyard.server as gateway:
            bench = _Bench(sandbox, switchyard)
            _phases(bench, plan, progress)
            bench.result.log_pending, bench.result.log_dropped = _log_backlog(gateway)
        bench.result.gateway_logged_errors = gateway.logged_errors()
        bench.result.gateway_log = str(gateway.log)
        return bench.result


def _log_backlog(gateway: processes.Server) -> tuple[dict[str, int], dict[str, int]]:
    """What the gateway's call-record writers still hold and what they dropped, from its
    ``/metrics``, once they have written what was pending (or ``LOG_DRAIN`` has passed)."""
    deadline = time.monotonic() + LOG_DRAIN
    while True:
        text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
        values: dict[str, dict[str, int]] = {"pending": {}, "dropped": {}}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                for kind in values:
                    if sample.name.startswith(f"switchyard_gateway_log_{kind}"):
                        values[kind][sample.labels["writer"]] = int(sample.value)
        if not any(values["pending"].values()) or time.monotonic() > deadline:
            return values["pending"], values["dropped"]
        time.sleep(0.5)


def _phases(bench: _Bench, plan: Plan, progress: Callable[[str], None]) -> None:
    result = bench.result
    progress(f"bench overhead: warm-up, {plan.warmup:,} requests")
    bench.direct(plan.warmup // 4, 16)
    bench.through(plan.warmup, 16)
    bench.rss()
    for concurrency, count in zip(plan.concurrency, plan.latency_requests, strict=True):
        progress(f"bench overhead: concurrency {concurrency}, {count:,} requests each way")
        bench.level(concurrency, count, blocks=plan.blocks)
    seconds = plan.upstream_seconds
    processes.set_faults(bench.sandbox, {"slow_rate": 1.0, "slow_seconds": seconds})
    try:
        for concurrency, count in zip(
            plan.upstream_concurrency, plan.upstream_requests, strict=True
        ):
            progress(
                f"bench overhead: concurrency {concurrency}, upstream answering in "
                f"{seconds * 1000:.0f} ms, {count:,} requests each way"
            )
            bench.level(concurrency, count, seconds, blocks=plan.upstream_blocks)
    finally:
        processes.set_faults(bench.sandbox, {})
    progress(f"bench overhead: streaming, {plan.stream_requests:,} requests each way")
    d, t = bench.alternating(plan.stream_requests, 1, plan.blocks, stream=True)
    result.stream_direct_ttfb_ms = (d.ms(50, first_byte=True), d.ms(99, first_byte=True))
    result.stream_through_ttfb_ms = (t.ms(50, first_byte=True), t.ms(99, first_byte=True))
    progress(f"bench overhead: maximum rate, {plan.max_rps_requests:,} requests each way")
    cpu = bench.sandbox.cpu_seconds()
    d = bench.direct(plan.max_rps_requests, 64)
    result.direct_max_rps = d.rate
    result.sandbox_cpu_ms_per_request = (bench.sandbox.cpu_seconds() - cpu) * 1000 / d.requests
    cpu = bench.gateway.cpu_seconds()
    t = bench.through(plan.max_rps_requests, 64)
    result.max_rps, result.max_rps_p99_ms = t.rate, t.ms(99)
    result.cpu_ms_per_request = (bench.gateway.cpu_seconds() - cpu) * 1000 / t.requests
    bench.rss()
    left = plan.total_requests - result.requests_through
    progress(f"bench overhead: memory, {max(0, left):,} more requests through")
    while left > 0:
        step = min(plan.rss_every, left)
        bench.through(step, 64)
        left -= step
        bench.rss()


def key_values(result: OverheadResult) -> str:
    figures: dict[str, str] = {}
    for level in result.levels:
        figures[f"added_p50_ms_{level.key}"] = f"{level.added_p50_ms:.2f}"
        figures[f"added_p99_ms_{level.key}"] = f"{level.added_p99_ms:.2f}"
    (_, d99), (_, t99) = result.stream_direct_ttfb_ms, result.stream_through_ttfb_ms
    figures["stream_ttfb_added_p99_ms"] = f"{t99 - d99:.2f}"
    figures["max_rps"] = f"{result.max_rps:.0f}"
    figures["cpu_ms_per_request"] = f"{result.cpu_ms_per_request:.2f}"
    figures["rss_growth_mb"] = f"{result.rss_growth_mb:.1f}"
    figures["rss_growth_second_half_mb"] = f"{result.rss_growth_second_half_mb:.1f}"
    figures["log_dropped"] = str(sum(result.log_dropped.values()))
    figures["requests"] = str(result.requests_through)
    return " ".join(f"{k}={v}" for k, v in figures.items())
