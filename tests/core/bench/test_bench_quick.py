"""The benchmarks' pure parts (workload, report math, the sandbox server's app), fast; and
``switchyard bench savings --quick`` end to end, marked slow."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from core.bench import http_load, overhead, savings, savings_report
from core.bench.cli import overhead_table, savings_table
from core.bench.sandbox_server import BenchApp, dilated_clock, rewrite_headers
from core.bench.workload import Call, Workload, arrivals, build_calls, load
from core.gateway import accounting
from core.gateway.catalog import Catalog, RateLimits
from core.gateway.tokens import text_tokens
from core.sandbox.anthropic import AnthropicSandbox

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def workload() -> Workload:
    return load()


@pytest.fixture(scope="module")
def calls(workload: Workload) -> list[Call]:
    return build_calls(workload, workload.profile("full"))


def test_the_workload_is_deterministic_and_ordered(workload: Workload, calls: list[Call]) -> None:
    again = build_calls(workload, workload.profile("full"))
    assert [(c.at, c.task, c.body) for c in calls] == [(c.at, c.task, c.body) for c in again]
    assert [c.index for c in calls] == list(range(len(calls)))
    assert all(a.at <= b.at for a, b in itertools.pairwise(calls))


def test_the_mix_is_mostly_structured_work(calls: list[Call]) -> None:
    share = {
        group: sum(c.task in tasks for c in calls) / len(calls)
        for group, tasks in {
            "classify/extract": ("classify", "extract"),
            "summarize": ("summarize",),
            "reason/write": ("reason", "write"),
        }.items()
    }
    assert share["classify/extract"] == pytest.approx(0.60, abs=0.04)
    assert share["summarize"] == pytest.approx(0.25, abs=0.03)
    assert share["reason/write"] == pytest.approx(0.15, abs=0.03)
    assert all(c.interactive == (c.task in ("summarize", "reason", "write")) for c in calls)


def test_every_call_shares_the_system_prompt_and_reference(calls: list[Call]) -> None:
    systems = {c.body["system"] for c in calls}
    references = {str(c.body["messages"][0]["content"][0]) for c in calls}
    assert len(systems) == 1
    assert len(references) == 1
    model = Catalog.load().get("claude-haiku-5-5")
    reference = calls[0].body["messages"][0]["content"][0]["source"]["data"]
    shared = text_tokens(next(iter(systems)), model) + text_tokens(reference, model)
    assert 3_000 <= shared <= 6_000  # "a few thousand tokens"
    # Structured calls name their tool but do not force it (Opus 5.5 refuses forced tool use).
    tooled = [c for c in calls if "tools" in c.body]
    assert tooled
    assert all("tool_choice" not in c.body for c in tooled)


def test_repeats_are_exact_and_close_behind(workload: Workload, calls: list[Call]) -> None:
    repeats = [c for c in calls if c.repeat_of is not None]
    assert repeats
    within = workload.profile("full").repeat_within_seconds
    for repeat in repeats:
        original = calls[repeat.repeat_of or 0]
        assert original.body == repeat.body
        assert not repeat.interactive
        assert 0 <= repeat.at - original.at <= within


def test_arrivals_follow_the_spike(workload: Workload) -> None:
    import random

    profile = workload.profile("full")
    times = arrivals(profile, random.Random(1))
    spike = profile.spikes[0]
    start, end = spike.start_minute * 60, (spike.start_minute + spike.minutes) * 60
    inside = sum(start <= t < end for t in times) / spike.minutes
    outside = sum(not start <= t < end for t in times) / (profile.minutes - spike.minutes)
    assert inside == pytest.approx(spike.per_minute, rel=0.15)
    assert outside == pytest.approx(profile.base_per_minute, rel=0.15)


def test_a_workload_file_is_checked(workload: Workload) -> None:
    raw = workload.model_dump(mode="json")
    raw["tasks"]["classify"]["share"] = 0.9
    with pytest.raises(ValidationError, match="add up to 1"):
        Workload.model_validate(raw)
    raw = workload.model_dump(mode="json")
    raw["records"]["ticket"]["head"] = "Ticket from {nobody}"
    with pytest.raises(ValidationError, match="nobody"):
        Workload.model_validate(raw)
    with pytest.raises(ValueError, match="no profile"):
        workload.profile("weekly")


def test_limits_scale_for_every_model() -> None:
    catalog = Catalog.load()
    limits = savings.scaled_limits(catalog, 0.5, divide=0.1)
    opus = catalog.get("claude-opus-5-5").limits
    assert limits["claude-opus-5-5"] == {
        "rpm": opus.rpm * 5,
        "input_tpm": opus.input_tpm * 5,
        "output_tpm": opus.output_tpm * 5,
    }
    assert set(limits) == set(catalog.models)


# ------------------------------------------------------------------------- report math


def usage(input_tokens: int, output: int, read: int = 0) -> accounting.Usage:
    return accounting.Usage(
        input_tokens=input_tokens, output_tokens=output, cache_read_input_tokens=read
    )


def outcome(index: int, latency: float, cost: float, **extra: Any) -> savings.Outcome:
    fields: dict[str, Any] = {
        "model": "claude-haiku-5-5",
        "usage": usage(100, 10, 900),
        "total": latency,
        "interactive": index % 2 == 0,
        **extra,
    }
    return savings.Outcome(index, "classify", latency=latency, cost=cost, **fields)


def arm(name: str, outcomes: list[savings.Outcome], sandbox: dict[str, Any]) -> savings.ArmRun:
    return savings.ArmRun(name, outcomes, sandbox, 10.0, {"sandbox": 1.0}, 2.0, 0.5)


def meter(outcomes: list[savings.Outcome]) -> dict[str, Any]:
    billed = [o for o in outcomes if o.error is None and o.charged and o.usage]
    rows: dict[str, Any] = {}
    for o in billed:
        assert o.usage is not None
        assert o.model is not None
        row = rows.setdefault(o.model, dict.fromkeys(savings_report.METER, 0))
        for name in savings_report.METER:
            row[name] += getattr(o.usage, name)
    return {"usage": rows, "rate_limited": 3}


def test_summary_prices_answered_calls_and_counts_errors_per_day(workload: Workload) -> None:
    outcomes = [outcome(i, latency=float(i + 1), cost=0.01) for i in range(20)]
    outcomes.append(savings.Outcome(20, "classify", False, error="rate_limit"))
    outcomes.append(savings.Outcome(21, "classify", False, error="http_529"))
    outcomes.append(outcome(22, latency=0.5, cost=0.0, charged=False))  # a dedup answer
    report = savings_report.summarize(
        "switchyard", arm("switchyard", outcomes, meter(outcomes)), workload
    )
    assert report.answered == 21
    assert report.cost_per_call == pytest.approx(0.20 / 21)
    assert report.cost_per_month == pytest.approx(0.20 / 21 * workload.interactions_per_month)
    assert report.p95 == 19.0  # nearest rank over 21 answered latencies: 0.5, 1 .. 20
    assert report.p95_interactive == 19.0
    assert report.p95_background == 20.0
    per_day = workload.interactions_per_month / 30
    assert report.rate_limit_errors == 1
    assert report.rate_limit_errors_per_day == pytest.approx(per_day / 23)
    assert report.other_errors == {"http_529": 1}
    assert report.upstream_429 == 3
    assert report.without_upstream == 1
    assert report.cache_read_share == pytest.approx(0.9)
    assert report.token_check == "ok"


def test_the_token_check_catches_a_difference(workload: Workload) -> None:
    outcomes = [outcome(0, 1.0, 0.01)]
    sandbox = meter(outcomes)
    sandbox["usage"]["claude-haiku-5-5"]["output_tokens"] += 1
    report = savings_report.summarize("naive-opus", arm("naive-opus", outcomes, sandbox), workload)
    assert report.token_check.startswith("differs")


def test_key_values_are_fractions_against_the_opus_baseline(workload: Workload) -> None:
    def report(name: str, cost: float, latency: float, errors: int) -> savings_report.ArmReport:
        outcomes = [outcome(i, latency, cost) for i in range(10)]
        outcomes += [
            savings.Outcome(10 + i, "classify", False, error="rate_limit") for i in range(errors)
        ]
        return savings_report.summarize(name, arm(name, outcomes, meter(outcomes)), workload)

    reports = [
        report("switchyard", 0.001, 1.0, 0),
        report("naive-opus", 0.010, 10.0, 5),
        report("naive-sonnet", 0.005, 5.0, 0),
    ]
    line = savings_report.key_values(reports)
    figures = dict(pair.split("=") for pair in line.split())
    assert figures["cost_delta"] == "-0.90"
    assert figures["p95_delta"] == "-0.90"
    assert figures["cost_delta_vs_sonnet"] == "-0.80"
    assert figures["p95_delta_vs_sonnet"] == "-0.80"
    assert figures["surfaced_rate_limit_errors"] == "0"
    table = savings_table(reports, workload, workload.profile("quick"), 10)
    assert "Δ vs naive Opus" in table
    assert "-0.90" in table
    assert "compressed 10x" in table


def test_delta_is_relative() -> None:
    assert savings_report.delta(20, 100) == pytest.approx(-0.8)
    assert savings_report.delta(1, 0) == 0.0


# ---------------------------------------------------------------------- overhead math


def test_overhead_reports_added_latency_per_percentile() -> None:
    level = overhead.LevelResult(64, 100, 0.0, 10.0, 40.0, 12.5, 61.0, 500.0)
    slow = overhead.LevelResult(64, 100, 500.0, 501.0, 510.0, 503.0, 520.0, 120.0)
    result = overhead.OverheadResult(
        levels=[level, slow],
        stream_direct_ttfb_ms=(0.5, 1.0),
        stream_through_ttfb_ms=(2.0, 4.0),
        max_rps=600.0,
        cpu_ms_per_request=1.5,
        rss_mb=[(1_000, 150.0), (6_000, 151.0), (11_000, 151.5)],
        requests_through=11_000,
    )
    assert level.added_p50_ms == 2.5
    assert level.added_p99_ms == 21.0
    figures = dict(pair.split("=") for pair in overhead.key_values(result).split())
    assert figures["added_p99_ms_c64"] == "21.00"
    assert figures["added_p99_ms_c64_upstream500ms"] == "10.00"
    assert figures["stream_ttfb_added_p99_ms"] == "3.00"
    assert figures["max_rps"] == "600"
    assert figures["rss_growth_mb"] == "1.5"
    assert figures["rss_growth_second_half_mb"] == "0.5"
    assert "upstream 500 ms" in overhead_table(result, overhead.QUICK)


def test_direct_and_through_alternate_in_blocks_and_add_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A drifting machine must weigh on both arms alike: the arms take turns, block by block,
    and each arm's figures cover all of its blocks."""
    order: list[tuple[str, int]] = []

    def arm(name: str) -> Any:
        def run(count: int, concurrency: int, **_: Any) -> http_load.Load:
            order.append((name, count))
            value = 0.001 if name == "direct" else 0.003
            return http_load.Load(
                count, count * value, [value] * count, [value] * count, {200: count}
            )

        return run

    bench = object.__new__(overhead._Bench)
    monkeypatch.setattr(bench, "direct", arm("direct"), raising=False)
    monkeypatch.setattr(bench, "through", arm("through"), raising=False)
    monkeypatch.setattr(overhead, "FLUSH_PAUSE", 0)
    direct, through = bench.alternating(10, 1, 3)
    assert order == [
        ("direct", 4),
        ("through", 4),
        ("direct", 3),
        ("through", 3),
        ("direct", 3),
        ("through", 3),
    ]
    assert (direct.requests, len(direct.latencies), direct.statuses) == (10, 10, {200: 10})
    assert through.seconds == pytest.approx(0.03)
    assert through.ms(99) - direct.ms(99) == pytest.approx(2.0)


def read(data: bytes) -> tuple[int, float]:
    async def go() -> tuple[int, float]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await http_load._read_answer(reader)

    return asyncio.run(go())


def test_the_load_generator_reads_whole_answers() -> None:
    plain = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nevent\r\n3;x=1\r\n: a\r\n0\r\n\r\n"
    )
    assert read(plain)[0] == 200
    assert read(chunked)[0] == 200
    requests = http_load.build_requests(1234, "key", 2, start=7, stream=True)
    assert b"T-7" in requests[0]
    assert b"T-8" in requests[1]
    assert b'"stream":true' in requests[0]


# ---------------------------------------------------------------------- sandbox server


def test_dilation_turns_virtual_times_into_wall_clock_times() -> None:
    headers = [
        (b"retry-after", b"3"),
        (b"anthropic-ratelimit-requests-limit", b"2000"),
        (b"anthropic-ratelimit-requests-remaining", b"1500"),
    ]
    assert rewrite_headers(headers, 0.1) == [
        (b"retry-after", b"0.300"),
        (b"anthropic-ratelimit-requests-limit", b"20000"),
        (b"anthropic-ratelimit-requests-remaining", b"1500"),
    ]
    clock = dilated_clock(0.01)
    before, wall = clock(), time.monotonic()
    time.sleep(0.02)
    assert clock() - before == pytest.approx((time.monotonic() - wall) * 100, rel=0.2)


async def test_the_bench_app_serves_stats_and_dilated_429s() -> None:
    sandbox = AnthropicSandbox(
        latency_scale=0,
        limits={"claude-opus-5-5": RateLimits(rpm=1, input_tpm=10**6, output_tpm=10**6)},
    )
    app = BenchApp(sandbox, dilation=0.5)
    headers = {"x-api-key": "sk-ant-sandbox", "anthropic-version": "2023-06-01"}
    body = {
        "model": "claude-opus-5-5",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://b"
    ) as client:
        assert (await client.post("/v1/messages", json=body, headers=headers)).status_code == 200
        limited = await client.post("/v1/messages", json=body, headers=headers)
        assert limited.status_code == 429
        assert float(limited.headers["retry-after"]) == pytest.approx(
            0.5 * 60, abs=0.5
        )  # a whole virtual minute to refill one request, in wall-clock seconds
        assert limited.headers["anthropic-ratelimit-requests-limit"] == "2"
        stats = (await client.get("/_bench/stats")).json()
        assert stats["rate_limited"] == 1
        assert stats["usage"]["claude-opus-5-5"]["output_tokens"] > 0
        faults = await client.post("/_bench/faults", json={"slow_rate": 1, "slow_seconds": 0.01})
        assert faults.json()["slow_rate"] == 1
        assert sandbox.faults.slow_seconds == 0.01


# ---------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_savings_quick_end_to_end() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "core.bench.cli", "savings", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    elapsed = time.monotonic() - started
    last = done.stdout.strip().splitlines()[-1]
    figures = dict(pair.split("=") for pair in last.split())
    assert {"cost_delta", "p95_delta", "surfaced_rate_limit_errors"} <= set(figures)
    assert float(figures["cost_delta"]) < 0
    assert "priced tokens = sandbox-billed tokens: ok" in done.stdout
    print(f"savings --quick took {elapsed:.0f} s")
