"""Benchmark: the same CRM workload, called naively and through Switchyard.

Three arms replay the same calls (:mod:`core.bench.workload`) on the same arrival schedule,
each against a fresh sandbox process with the same rate limits (so buckets and prompt caches
start equal):

* ``naive-opus``: the ``anthropic`` SDK calls the sandbox directly with ``claude-opus-5-5``
  for every task, ``max_tokens`` 4096, no prompt caching, no streaming, SDK default retries;
* ``naive-sonnet``: the same with ``claude-sonnet-5-5`` (a milder baseline);
* ``switchyard``: the same SDK pointed at ``switchyard serve`` (whose upstream is the
  sandbox) with ``model: "auto"``, the task header and no ``max_tokens``; interactive calls
  stream (latency = time to the first content delta), background calls do not and say
  ``x-switchyard-priority: background``.

Time is compressed (:mod:`core.bench.sandbox_server`): the sandbox's latency model runs at
``time_scale``, arrivals come ``1 / time_scale`` times faster, and so do the sandbox's
rate-limit and cache clocks; measured latencies are divided back by the scale. Costs come
from the usage each answer reports, priced by :func:`core.gateway.accounting.cost`, counting
only answers the upstream billed (a dedup or response-cache answer from Switchyard is free);
the priced tokens are checked against what the sandbox billed per model, and Switchyard's
total against its own ``GET /v1/usage``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import orjson

from core.bench import processes
from core.bench.workload import Call, Profile, Workload
from core.gateway import accounting
from core.gateway.catalog import Catalog

NAIVE_MODELS = {"naive-opus": "claude-opus-5-5", "naive-sonnet": "claude-sonnet-5-5"}
ARMS = ("switchyard", "naive-opus", "naive-sonnet")


@dataclass
class Outcome:
    """One call as its caller saw it; latencies in virtual seconds."""

    index: int
    task: str
    interactive: bool
    latency: float | None = None  # to the first content delta when streamed, else the answer
    total: float | None = None
    model: str | None = None
    usage: accounting.Usage | None = None
    cost: float = 0.0  # USD; 0 when the upstream did not bill this answer
    charged: bool = True
    error: str | None = None  # "rate_limit", "http_529", ... when the caller got an error


Send = Callable[[Call, float], Awaitable[Outcome]]


def scaled_limits(
    catalog: Catalog, factor: float, divide: float = 1.0
) -> dict[str, dict[str, int]]:
    """Every model's catalogue limits x ``factor`` / ``divide``, as whole numbers."""
    return {
        model.id: {
            name: max(1, round(value * factor / divide))
            for name, value in model.limits.model_dump().items()
        }
        for model in catalog
    }


def _error_kind(exc: BaseException) -> str:
    import anthropic

    if isinstance(exc, anthropic.RateLimitError):
        return "rate_limit"
    if isinstance(exc, anthropic.APIStatusError):
        return f"http_{exc.status_code}"
    if isinstance(exc, anthropic.APIConnectionError):
        return "connection"
    return type(exc).__name__


def _priced(catalog: Catalog, model: str, usage: accounting.Usage, charged: bool) -> float:
    if not charged:
        return 0.0
    return float(accounting.cost(catalog.get(model), usage, at=datetime.now(UTC)).total)


def naive_sender(client: Any, catalog: Catalog, model: str, max_tokens: int, scale: float) -> Send:
    """The application calling the API itself: one model, a big ``max_tokens``, no stream."""
    create = client.messages.with_raw_response.create

    async def send(call: Call, due: float) -> Outcome:
        try:
            raw = await create(model=model, max_tokens=max_tokens, **call.body)
            message = orjson.loads(await raw.read())
        except Exception as exc:
            return Outcome(call.index, call.task, call.interactive, error=_error_kind(exc))
        total = (time.perf_counter() - due) / scale
        usage = accounting.Usage.from_api(message.get("usage"))
        cost = _priced(catalog, model, usage, True)
        # Not streamed: the first token reaches the caller with the last.
        return Outcome(call.index, call.task, call.interactive, total, total, model, usage, cost)

    return send


def switchyard_sender(client: Any, catalog: Catalog, scale: float) -> Send:
    """The same application through Switchyard: ``auto`` model, task header, streaming UI."""
    import anthropic

    def headers(call: Call) -> dict[str, str]:
        found = {
            "x-switchyard-task": str(call.task),
            "x-switchyard-feature": call.feature,
            "x-switchyard-priority": "interactive" if call.interactive else "background",
        }
        if call.response_cache:
            found["x-switchyard-cache"] = "on"
        return found

    async def complete(call: Call, due: float) -> Outcome:
        raw = await client.messages.with_raw_response.create(
            model="auto",
            max_tokens=anthropic.omit,  # the task's default applies
            timeout=600,  # the SDK derives its default from max_tokens
            extra_headers=headers(call),
            **call.body,
        )
        message = orjson.loads(await raw.read())
        total = (time.perf_counter() - due) / scale
        usage = accounting.Usage.from_api(message.get("usage"))
        charged = raw.headers.get("x-switchyard-cache", "miss") == "miss"
        model = str(message["model"])
        cost = _priced(catalog, model, usage, charged)
        return Outcome(call.index, call.task, False, total, total, model, usage, cost, charged)

    async def stream(call: Call, due: float) -> Outcome:
        first: float | None = None
        usage = accounting.Usage()
        model, error, buffer = "", None, b""
        async with client.messages.with_streaming_response.create(
            model="auto",
            max_tokens=anthropic.omit,
            stream=True,
            extra_headers=headers(call),
            **call.body,
        ) as response:
            # x-switchyard-cache says hit/dedup/miss where the gateway sets it on streams;
            # else a response-cache hit is known by having no upstream request id.
            replayed = "x-switchyard-upstream-request-id" not in response.headers
            served = response.headers.get("x-switchyard-cache", "hit" if replayed else "miss")
            charged = served == "miss"
            async for chunk in response.http_response.aiter_bytes():
                *events, buffer = (buffer + chunk).split(b"\n\n")
                for event in events:
                    kind, data = _sse(event)
                    if kind == "content_block_delta" and first is None:
                        first = time.perf_counter()
                    elif kind == "message_start":
                        model = str(data["message"]["model"])
                        usage = usage.merge(data["message"].get("usage"))
                    elif kind == "message_delta":
                        usage = usage.merge(data.get("usage"))
                    elif kind == "error":
                        error = str(data.get("error", {}).get("type", "stream_error"))
        if error is not None or first is None:
            return Outcome(call.index, call.task, True, error=error or "no_content")
        total = (time.perf_counter() - due) / scale
        cost = _priced(catalog, model, usage, charged)
        latency = (first - due) / scale
        return Outcome(call.index, call.task, True, latency, total, model, usage, cost, charged)

    async def send(call: Call, due: float) -> Outcome:
        try:
            return await (stream if call.interactive else complete)(call, due)
        except Exception as exc:
            return Outcome(call.index, call.task, call.interactive, error=_error_kind(exc))

    return send


def _sse(event: bytes) -> tuple[str, dict[str, Any]]:
    """An SSE event's type, and its data for the few types read here."""
    kind, data = "", b""
    for line in event.split(b"\n"):
        if line.startswith(b"event:"):
            kind = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            data = line[5:].strip()
    if kind not in ("message_start", "message_delta", "error") or not data:
        return kind, {}
    return kind, orjson.loads(data)


@dataclass
class ArmRun:
    """One arm's outcomes and what the machine did meanwhile."""

    name: str
    outcomes: list[Outcome]
    sandbox: dict[str, Any]
    seconds: float
    cpu_seconds: dict[str, float]  # per process, over the replay
    loop_lag_p99_ms: float  # the load generator's event loop, late by this much at p99
    load_average: float
    gateway_usage: dict[str, Any] | None = None
    logged_errors: dict[str, str] = field(default_factory=dict)  # server -> "N (log path)"


async def _replay(
    calls: Sequence[Call], scale: float, send: Send
) -> tuple[list[Outcome], list[float]]:
    """Send each call at its scheduled time; ``send`` gets the due time (perf_counter), so
    a generator running late is charged to the latency (no coordinated omission)."""
    origin = time.perf_counter() + 0.2
    results: list[Outcome] = []
    lags: list[float] = []
    running = True

    async def one(call: Call) -> None:
        due = origin + call.at * scale
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        results.append(await send(call, due))

    async def watch() -> None:
        while running:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - before - 0.005)

    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(one(call) for call in calls))
    running = False
    await watcher
    return sorted(results, key=lambda outcome: outcome.index), lags


def _replay_with(
    base_url: str, api_key: str, calls: Sequence[Call], scale: float, make: Callable[[Any], Send]
) -> tuple[list[Outcome], list[float]]:
    import anthropic
    import uvloop

    async def main() -> tuple[list[Outcome], list[float]]:
        # SDK defaults (retries included), as the application would have them.
        async with anthropic.AsyncAnthropic(base_url=base_url, api_key=api_key) as client:
            return await _replay(calls, scale, make(client))

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def _usage_totals(switchyard: processes.Switchyard, expected: int, since: datetime) -> Any:
    """``GET /v1/usage`` totals once every call is recorded (records are written off the
    request path, so they may trail the answers by a moment); None if it cannot answer."""
    until = datetime.now(UTC) + timedelta(minutes=1)
    params = {"since": since.isoformat(), "until": until.isoformat()}
    totals: Any = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        answer = httpx.get(
            f"{switchyard.server.url}/v1/usage",
            params=params,
            headers={"x-api-key": switchyard.api_key},
            timeout=30,
        )
        if answer.status_code != 200:
            return None
        totals = answer.json()["totals"]
        if totals["requests"] >= expected:
            break
        time.sleep(0.5)
    return totals


def run_arm(name: str, workload: Workload, profile: Profile, calls: Sequence[Call]) -> ArmRun:
    """Replay ``calls`` in arm ``name`` against fresh processes; stop them afterwards."""
    catalog = Catalog.load()
    scale = profile.time_scale
    sandbox = processes.start_sandbox(
        latency_scale=scale,
        dilate=True,
        limits=scaled_limits(catalog, profile.limits_factor),
        seed=workload.seed,
        tag=f"savings-{name}",
    )
    with sandbox:
        servers = [sandbox]
        switchyard: processes.Switchyard | None = None
        if name == "switchyard":
            switchyard = processes.start_switchyard(
                sandbox,
                # Its buckets run on the wall clock: per-minute limits / scale, and the
                # deadlines (60 s interactive, 15 min background) scaled like everything else.
                limits=scaled_limits(catalog, profile.limits_factor, divide=scale),
                gateway={
                    "interactive_deadline_seconds": 60 * scale,
                    "background_deadline_seconds": 900 * scale,
                },
                tag=f"savings-{name}",
            )
            servers.append(switchyard.server)
            url, key = switchyard.server.url, switchyard.api_key
            make: Callable[[Any], Send] = partial(switchyard_sender, catalog=catalog, scale=scale)
        else:
            url, key = sandbox.url, processes.SANDBOX_KEY
            make = partial(
                naive_sender,
                catalog=catalog,
                model=NAIVE_MODELS[name],
                max_tokens=workload.naive_max_tokens,
                scale=scale,
            )
        try:
            since = datetime.now(UTC) - timedelta(seconds=5)
            cpu = {server.name: server.cpu_seconds() for server in servers}
            own, started = time.process_time(), time.perf_counter()
            outcomes, lags = _replay_with(url, key, calls, scale, make)
            seconds = time.perf_counter() - started
            cpu = {server.name: server.cpu_seconds() - cpu[server.name] for server in servers}
            cpu["load generator"] = time.process_time() - own
            usage = None if switchyard is None else _usage_totals(switchyard, len(calls), since)
        finally:
            for server in servers[1:]:
                server.stop()
        logged = {
            server.name: f"{errors} ({server.log})"
            for server in servers
            if (errors := server.logged_errors())
        }
        return ArmRun(
            name,
            outcomes,
            processes.sandbox_stats(sandbox),
            seconds,
            cpu,
            processes.percentile(lags, 99) * 1000,
            os.getloadavg()[0],
            usage,
            logged,
        )
