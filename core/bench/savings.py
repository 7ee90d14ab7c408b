"""Benchmark: what the same CRM workload costs, and how fast it is, with and without Switchyard.

Three arms replay the same calls (:mod:`core.bench.workload`) on the same arrival schedule,
each against a fresh sandbox process with the same rate limits (so buckets and prompt
caches start equal):

* ``naive-opus``: the ``anthropic`` SDK calls the sandbox directly, ``claude-opus-5-5`` for
  every task, ``max_tokens`` 4096, no prompt caching, no streaming, SDK default retries;
* ``naive-sonnet``: the same with ``claude-sonnet-5-5`` (a milder baseline);
* ``switchyard``: the same SDK pointed at ``switchyard serve`` (whose upstream is the
  sandbox) with ``model: "auto"``, the task header and no ``max_tokens``; interactive calls
  stream (latency = time to the first content delta), background calls do not and say
  ``x-switchyard-priority: background``.

Time is compressed (:mod:`core.bench.sandbox_server`): the sandbox's latency model runs at
``time_scale``, arrivals come 1/``time_scale`` times faster, and the sandbox's rate-limit and
cache clocks run that much faster too; measured latencies are divided back by the scale.
Costs come from the usage each response reports, priced by
:func:`core.gateway.accounting.cost`, counting only answers the upstream billed (a dedup or
response-cache answer from Switchyard is free); the tokens are checked against what the
sandbox billed per model, and Switchyard's total against its own ``GET /v1/usage``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from core.bench import processes
from core.bench.workload import Call, Profile, Workload, build_calls
from core.gateway import accounting
from core.gateway.catalog import Catalog


@dataclass
class Outcome:
    """One call as its caller saw it; latencies in virtual seconds."""

    index: int
    task: str
    interactive: bool
    latency: float | None = None  # first token for streamed calls, else the whole answer
    total: float | None = None
    model: str | None = None
    usage: accounting.Usage | None = None
    cost: float = 0.0  # USD, 0 when the upstream did not bill this answer
    charged: bool = True
    served_by: str | None = None  # Switchyard's x-switchyard-cache: miss, dedup or hit
    error: str | None = None


NAIVE_MODELS = {"naive-opus": "claude-opus-5-5", "naive-sonnet": "claude-sonnet-5-5"}
ARMS = ("switchyard", "naive-opus", "naive-sonnet")
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


async def _replay(calls: Sequence[Call], scale: float, send: Send) -> list[Outcome]:
    """Send each call at its scheduled time; ``send`` gets the due time (perf_counter)."""
    origin = time.perf_counter() + 0.2
    results: list[Outcome | None] = [None] * len(calls)

    async def one(call: Call) -> None:
        due = origin + call.at * scale
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        results[call.index] = await send(call, due)

    await asyncio.gather(*(one(call) for call in calls))
    return [result for result in results if result is not None]


def _cost(catalog: Catalog, model: str, usage: accounting.Usage) -> float:
    return float(accounting.cost(catalog.get(model), usage, at=datetime.now(UTC)).total)


def naive_sender(client: Any, catalog: Catalog, model: str, max_tokens: int, scale: float) -> Send:
    create = client.messages.with_raw_response.create

    async def send(call: Call, due: float) -> Outcome:
        try:
            raw = await create(model=model, max_tokens=max_tokens, **call.body)
            message = orjson.loads(await raw.read())
        except Exception as exc:
            return Outcome(call.index, call.task, call.interactive, error=_error_kind(exc))
        total = (time.perf_counter() - due) / scale
        usage = accounting.Usage.from_api(message.get("usage"))
        return Outcome(
            call.index,
            call.task,
            call.interactive,
            latency=total,  # no streaming: the first token arrives with the last
            total=total,
            model=model,
            usage=usage,
            cost=_cost(catalog, model, usage),
        )

    return send


def switchyard_sender(client: Any, catalog: Catalog, scale: float) -> Send:
    import anthropic

    async def complete(call: Call, due: float) -> Outcome:
        headers = {
            "x-switchyard-task": str(call.task),
            "x-switchyard-feature": call.feature,
            "x-switchyard-priority": "interactive" if call.interactive else "background",
        }
        if call.response_cache:
            headers["x-switchyard-cache"] = "on"
        raw = await client.messages.with_raw_response.create(
            model="auto", max_tokens=anthropic.omit, timeout=600, extra_headers=headers, **call.body
        )
        message = orjson.loads(await raw.read())
        total = (time.perf_counter() - due) / scale
        usage = accounting.Usage.from_api(message.get("usage"))
        charged = raw.headers.get("x-switchyard-cache", "miss") == "miss"
        model = str(message["model"])
        return Outcome(
            call.index,
            call.task,
            call.interactive,
            latency=total,
            total=total,
            model=model,
            usage=usage,
            cost=_cost(catalog, model, usage) if charged else 0.0,
            charged=charged,
            served_by=raw.headers.get("x-switchyard-cache"),
        )

    async def stream(call: Call, due: float) -> Outcome:
        headers = {"x-switchyard-task": str(call.task), "x-switchyard-feature": call.feature}
        first: float | None = None
        usage = accounting.Usage()
        model = ""
        error: str | None = None
        async with client.messages.with_streaming_response.create(
            model="auto", max_tokens=anthropic.omit, stream=True, extra_headers=headers, **call.body
        ) as response:
            charged = "x-switchyard-upstream-request-id" in response.headers
            buffer = b""
            async for chunk in response.http_response.aiter_bytes():
                buffer += chunk
                *events, buffer = buffer.split(b"\n\n")
                for event in events:
                    kind, data = _sse(event)
                    if kind == "content_block_delta" and first is None:
                        first = time.perf_counter()
                    elif kind == "message_start":
                        model = data["message"]["model"]
                        usage = usage.merge(data["message"].get("usage"))
                    elif kind == "message_delta":
                        usage = usage.merge(data.get("usage"))
                    elif kind == "error":
                        error = str(data.get("error", {}).get("type", "stream_error"))
        if error is not None or first is None:
            return Outcome(call.index, call.task, True, error=error or "no_content")
        done = time.perf_counter()
        return Outcome(
            call.index,
            call.task,
            True,
            latency=(first - due) / scale,
            total=(done - due) / scale,
            model=model,
            usage=usage,
            cost=_cost(catalog, model, usage) if charged else 0.0,
            charged=charged,
            served_by="miss" if charged else "hit",
        )

    async def send(call: Call, due: float) -> Outcome:
        try:
            return await (stream if call.interactive else complete)(call, due)
        except Exception as exc:
            return Outcome(call.index, call.task, call.interactive, error=_error_kind(exc))

    return send


def _sse(event: bytes) -> tuple[str, dict[str, Any]]:
    kind, data = "", b""
    for line in event.split(b"\n"):
        if line.startswith(b"event:"):
            kind = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            data = line[5:].strip()
    if kind not in ("message_start", "message_delta", "error"):
        return kind, {}
    return kind, orjson.loads(data) if data else {}


def _usage_totals(
    switchyard: processes.Switchyard, expected: int, since: datetime
) -> dict[str, Any]:
    """``GET /v1/usage`` totals once every call is recorded (the recorder writes off the path)."""
    url = f"{switchyard.server.url}/v1/usage"
    params = {
        "since": since.isoformat(),
        "until": (datetime.now(UTC) + timedelta(minutes=1)).isoformat(),
    }
    totals: dict[str, Any] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        answer = httpx.get(
            url, params=params, headers={"x-api-key": switchyard.api_key}, timeout=30
        )
        answer.raise_for_status()
        totals = answer.json()["totals"]
        if totals["requests"] >= expected:
            break
        time.sleep(0.5)
    return totals


@dataclass
class ArmRun:
    name: str
    outcomes: list[Outcome]
    sandbox: dict[str, Any]
    seconds: float
    gateway_usage: dict[str, Any] | None = None


def run_arm(name: str, workload: Workload, profile: Profile, calls: Sequence[Call]) -> ArmRun:
    catalog = Catalog.load()
    scale = profile.time_scale
    limits = scaled_limits(catalog, profile.limits_factor)
    sandbox = processes.start_sandbox(
        latency_scale=scale, dilate=True, limits=limits, seed=workload.seed
    )
    with sandbox:
        if name == "switchyard":
            switchyard = processes.start_switchyard(
                sandbox,
                # The gateway's buckets run on the wall clock: per-minute limits / scale.
                limits=scaled_limits(catalog, profile.limits_factor, divide=scale),
                gateway={
                    "interactive_deadline_seconds": 60 * scale,
                    "background_deadline_seconds": 900 * scale,
                },
            )
            with switchyard.server:
                since = datetime.now(UTC) - timedelta(seconds=5)
                started = time.perf_counter()
                outcomes = _run(
                    switchyard.server.url,
                    switchyard.api_key,
                    calls,
                    lambda client: switchyard_sender(client, catalog, scale),
                    scale,
                )
                seconds = time.perf_counter() - started
                usage = _usage_totals(switchyard, len(calls), since)
                return ArmRun(name, outcomes, processes.sandbox_stats(sandbox), seconds, usage)
        model = NAIVE_MODELS[name]
        started = time.perf_counter()
        outcomes = _run(
            sandbox.url,
            processes.SANDBOX_KEY,
            calls,
            lambda client: naive_sender(client, catalog, model, workload.naive_max_tokens, scale),
            scale,
        )
        seconds = time.perf_counter() - started
        return ArmRun(name, outcomes, processes.sandbox_stats(sandbox), seconds)


def _run(
    base_url: str, api_key: str, calls: Sequence[Call], make: Callable[[Any], Send], scale: float
) -> list[Outcome]:
    import anthropic
    import uvloop

    async def main() -> list[Outcome]:
        async with anthropic.AsyncAnthropic(base_url=base_url, api_key=api_key) as client:
            return await _replay(calls, scale, make(client))

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def run(workload: Workload, profile_name: str, arms: Sequence[str] = ARMS) -> list[ArmReport]:
    profile = workload.profile(profile_name)
    calls = build_calls(workload, profile)
    reports = []
    for name in arms:
        arm = run_arm(name, workload, profile, calls)
        reports.append(summarize(arm.name, arm.outcomes, workload, arm.sandbox, arm.gateway_usage))
    return reports


# --------------------------------------------------------------------------- the report


@dataclass
class ArmReport:
    name: str
    requests: int
    cost_usd: float
    cost_per_call: float
    cost_per_month: float
    p50: float
    p95: float
    p95_interactive: float
    p95_background: float
    rate_limit_errors: int  # reaching callers, in this run
    rate_limit_errors_per_day: float
    other_errors: dict[str, int]
    upstream_429: int
    models: dict[str, int]
    cache_read_share: float
    without_upstream: int
    token_check: str
    gateway_cost_usd: float | None = None


def _billed_tokens(outcomes: Sequence[Outcome]) -> dict[str, dict[str, int]]:
    billed: dict[str, dict[str, int]] = {}
    for o in outcomes:
        if o.usage is None or o.model is None or not o.charged:
            continue
        row = billed.setdefault(o.model, dict.fromkeys(_METER, 0))
        row["input_tokens"] += o.usage.input_tokens
        row["output_tokens"] += o.usage.output_tokens
        row["cache_read_input_tokens"] += o.usage.cache_read_input_tokens
        row["cache_creation_input_tokens"] += o.usage.cache_creation_input_tokens
    return billed


_METER = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def token_check(outcomes: Sequence[Outcome], sandbox: dict[str, Any]) -> str:
    """``ok`` when the tokens priced here are exactly those the sandbox billed, per model."""
    ours = _billed_tokens(outcomes)
    theirs = {
        model: {name: int(usage.get(name, 0)) for name in _METER}
        for model, usage in sandbox.get("usage", {}).items()
    }
    if ours == theirs:
        return "ok"
    return f"differs: priced {ours} but the sandbox billed {theirs}"


def summarize(
    name: str,
    outcomes: Sequence[Outcome],
    workload: Workload,
    sandbox: dict[str, Any],
    gateway_usage: dict[str, Any] | None = None,
) -> ArmReport:
    ok = [o for o in outcomes if o.error is None]
    requests = len(outcomes)
    cost = sum(o.cost for o in ok)
    per_call = cost / requests if requests else 0.0
    per_day = workload.interactions_per_month / 30
    limited = sum(o.error == "rate_limit" for o in outcomes)
    others: dict[str, int] = {}
    for o in outcomes:
        if o.error not in (None, "rate_limit"):
            others[str(o.error)] = others.get(str(o.error), 0) + 1
    models: dict[str, int] = {}
    read = prompt = 0
    for o in ok:
        models[str(o.model)] = models.get(str(o.model), 0) + 1
        if o.usage is not None and o.charged:
            read += o.usage.cache_read_input_tokens
            prompt += o.usage.prompt_tokens
    latencies = [o.latency for o in ok if o.latency is not None]
    return ArmReport(
        name=name,
        requests=requests,
        cost_usd=cost,
        cost_per_call=per_call,
        cost_per_month=per_call * workload.interactions_per_month,
        p50=processes.percentile(latencies, 50),
        p95=processes.percentile(latencies, 95),
        p95_interactive=processes.percentile(
            [o.latency for o in ok if o.interactive and o.latency is not None], 95
        ),
        p95_background=processes.percentile(
            [o.latency for o in ok if not o.interactive and o.latency is not None], 95
        ),
        rate_limit_errors=limited,
        rate_limit_errors_per_day=limited / requests * per_day if requests else 0.0,
        other_errors=others,
        upstream_429=int(sandbox.get("rate_limited", 0)),
        models=models,
        cache_read_share=read / prompt if prompt else 0.0,
        without_upstream=sum(not o.charged for o in ok),
        token_check=token_check(outcomes, sandbox),
        gateway_cost_usd=None if gateway_usage is None else float(gateway_usage["cost_usd"]),
    )


def delta(new: float, old: float) -> float:
    """Relative change as a fraction: -0.86 is 86% less."""
    return (new - old) / old if old else 0.0


LABELS = {"naive-opus": "naive Opus", "naive-sonnet": "naive Sonnet", "switchyard": "Switchyard"}


def _money(value: float) -> str:
    return f"${value:,.0f}" if value >= 100 else f"${value:,.4f}"


def _seconds(value: float) -> str:
    return f"{value:.2f} s"


def render(reports: Sequence[ArmReport], workload: Workload, profile: Profile, calls: int) -> str:
    """The side-by-side table, with the deltas of Switchyard against each naive arm."""
    by_name = {r.name: r for r in reports}
    ours = by_name.get("switchyard")
    bases = [r for r in reports if r.name != "switchyard"]
    volume = f"{workload.interactions_per_month:,}"
    rows: list[tuple[str, Callable[[ArmReport], float] | None, Callable[[ArmReport], str]]] = [
        (
            f"token cost / month at {volume} calls",
            lambda r: r.cost_per_month,
            lambda r: _money(r.cost_per_month),
        ),
        ("cost / interaction", lambda r: r.cost_per_call, lambda r: f"${r.cost_per_call:.5f}"),
        ("p95 latency, all calls", lambda r: r.p95, lambda r: _seconds(r.p95)),
        (
            "  p95 interactive (first token)",
            lambda r: r.p95_interactive,
            lambda r: _seconds(r.p95_interactive),
        ),
        (
            "  p95 background (whole answer)",
            lambda r: r.p95_background,
            lambda r: _seconds(r.p95_background),
        ),
        ("p50 latency, all calls", lambda r: r.p50, lambda r: _seconds(r.p50)),
        (
            "rate-limit errors reaching callers / day",
            None,
            lambda r: f"{r.rate_limit_errors_per_day:,.0f} ({r.rate_limit_errors} in run)",
        ),
        ("other errors reaching callers (run)", None, lambda r: str(sum(r.other_errors.values()))),
        ("upstream 429s (sandbox, run)", None, lambda r: str(r.upstream_429)),
        ("prompt tokens read from cache", None, lambda r: f"{r.cache_read_share:.0%}"),
        ("answered without an upstream call", None, lambda r: str(r.without_upstream)),
    ]
    names = [*(r.name for r in bases), *(["switchyard"] if ours else [])]
    header = ["", *(LABELS[n] for n in names)]
    if ours:
        header += [f"Δ vs {LABELS[b.name]}" for b in bases]
    table = [header]
    for label, value, show in rows:
        line = [label, *(show(by_name[n]) for n in names)]
        if ours:
            line += [f"{delta(value(ours), value(b)):+.2f}" if value else "" for b in bases]
        table.append(line)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    text = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in table
    ]
    text.insert(1, "  ".join("-" * w for w in widths))
    spikes = ", ".join(
        f"{s.per_minute:g}/min for {s.minutes:g} min from minute {s.start_minute:g}"
        for s in profile.spikes
    )
    notes = [
        f"Workload {workload.name!r}: {calls:,} calls over {profile.minutes:g} virtual minutes "
        f"({profile.base_per_minute:g}/min, spike {spikes}); rate limits = catalogue x "
        f"{profile.limits_factor:g}, the same for every arm.",
        f"Time compressed {1 / profile.time_scale:g}x: sandbox latency_scale {profile.time_scale:g}, "
        "arrivals and the sandbox's rate-limit and cache clocks sped up alike; latencies above are "
        f"measured / {profile.time_scale:g} (Switchyard's own overhead is magnified as much).",
        "Costs: usage reported per answer, priced by core.gateway.accounting.cost(); "
        "per day = errors per call x interactions_per_month / 30.",
    ]
    for r in reports:
        models = ", ".join(f"{m} {n}" for m, n in sorted(r.models.items()))
        check = f"tokens priced = tokens the sandbox billed: {r.token_check}"
        if r.gateway_cost_usd is not None:
            check += f"; GET /v1/usage cost ${r.gateway_cost_usd:.4f} vs ${r.cost_usd:.4f} here"
        notes.append(f"{LABELS[r.name]}: {models}; {check}; other errors {r.other_errors or 0}")
    return "\n".join([*text, "", *notes])


def key_values(reports: Sequence[ArmReport]) -> str:
    """The last line: Switchyard against naive Opus (and Sonnet), deltas as fractions."""
    by_name = {r.name: r for r in reports}
    ours = by_name.get("switchyard")
    figures: dict[str, str] = {}
    if ours is not None:
        for base, suffix in (("naive-opus", ""), ("naive-sonnet", "_vs_sonnet")):
            if base in by_name:
                figures[f"cost_delta{suffix}"] = (
                    f"{delta(ours.cost_per_call, by_name[base].cost_per_call):.2f}"
                )
                figures[f"p95_delta{suffix}"] = f"{delta(ours.p95, by_name[base].p95):.2f}"
        figures["surfaced_rate_limit_errors"] = f"{ours.rate_limit_errors_per_day:.0f}"
    for base in ("naive-opus", "naive-sonnet"):
        if base in by_name:
            key = base.replace("-", "_")
            figures[f"{key}_rate_limit_errors"] = f"{by_name[base].rate_limit_errors_per_day:.0f}"
    return " ".join(f"{k}={v}" for k, v in figures.items())
