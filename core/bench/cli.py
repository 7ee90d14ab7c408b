"""``switchyard bench savings|overhead|fairness`` (without the mount: ``python -m core.bench.cli``).

Each command prints how to run it again, a table and notes on how it was measured, and
ends with one line of ``key=value`` figures; the figures also go to
``var/bench/<name>.json``. The measuring lives in :mod:`core.bench.savings`,
:mod:`core.bench.overhead` and :mod:`core.bench.fairness`; this module only runs them and
lays out what they found.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from core.bench.fairness import FairnessResult
    from core.bench.fairness import Plan as FairnessPlan
    from core.bench.overhead import LevelResult, OverheadResult, Plan
    from core.bench.savings_report import ArmReport
    from core.bench.workload import Profile, Workload

bench_app = typer.Typer(
    help="Benchmarks of the Claude gateway against the Anthropic sandbox.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

QUICK_HELP = (
    "Fewer requests, done in under a minute: a smoke check; the full run gives the figures."
)
LABELS = {"naive-opus": "naive Opus", "naive-sonnet": "naive Sonnet", "switchyard": "Switchyard"}
OVERHEAD_TARGETS = (
    "added p99 <= 3 ms at concurrency 1 and <= 25 ms at 64; >= 500 req/s; memory flat"
)


def _progress(message: str) -> None:
    typer.echo(message, err=True)


def _reproduce(command: str, quick: bool) -> str:
    flag = " --quick" if quick else ""
    return (
        f"Reproduce: switchyard bench {command}{flag}   "
        f"(or: {Path(sys.executable).name} -m core.bench.cli {command}{flag})"
    )


@bench_app.command("savings")
def savings_command(
    quick: Annotated[bool, typer.Option("--quick", help=QUICK_HELP)] = False,
    workload_file: Annotated[
        Path | None, typer.Option("--workload", help="A workload file (default: the bundled one).")
    ] = None,
    arms: Annotated[
        str, typer.Option(help="Comma-separated: switchyard, naive-opus, naive-sonnet.")
    ] = "switchyard,naive-opus,naive-sonnet",
    time_scale: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            max=1.0,
            help="Override the profile's compression (e.g. 0.25: slower, and Switchyard's "
            "real-time overhead is magnified less).",
        ),
    ] = None,
) -> None:
    """Cost, latency and rate-limit errors of a CRM workload, naive SDK vs through Switchyard."""
    from core.bench import processes, savings, savings_report
    from core.bench.workload import build_calls, load

    workload = load(workload_file)
    profile_name = "quick" if quick else "full"
    profile = workload.profile(profile_name)
    if time_scale is not None:
        profile = profile.model_copy(update={"time_scale": time_scale})
    chosen = [arm.strip() for arm in arms.split(",") if arm.strip()]
    unknown = set(chosen) - set(savings.ARMS)
    if unknown:
        raise typer.BadParameter(f"unknown arms {sorted(unknown)}; choose from {savings.ARMS}")
    calls = build_calls(workload, profile)
    reports = []
    for name in chosen:
        _progress(f"bench savings: arm {name}, {len(calls):,} calls ...")
        run = savings.run_arm(name, workload, profile, calls)
        _progress(f"bench savings: arm {name} done in {run.seconds:.1f} s")
        reports.append(savings_report.summarize(name, run, workload))
    path = processes.write_result(
        "savings", {"profile": profile.model_dump(), "arms": [asdict(r) for r in reports]}
    )
    typer.echo(_reproduce("savings", quick))
    typer.echo("")
    typer.echo(savings_table(reports, workload, profile, len(calls)))
    typer.echo(f"Results: {path}")
    typer.echo(savings_report.key_values(reports))


@bench_app.command("overhead")
def overhead_command(
    quick: Annotated[bool, typer.Option("--quick", help=QUICK_HELP)] = False,
) -> None:
    """Latency Switchyard adds over a direct call, its maximum requests/s and its memory."""
    from core.bench import overhead, processes

    plan = overhead.QUICK if quick else overhead.FULL
    result = overhead.run(plan, progress=_progress)
    path = processes.write_result("overhead", {"quick": quick, **asdict(result)})
    typer.echo(_reproduce("overhead", quick))
    typer.echo("")
    typer.echo(overhead_table(result, plan))
    typer.echo(f"Results: {path}")
    typer.echo(overhead.key_values(result))


@bench_app.command("fairness")
def fairness_command(
    quick: Annotated[bool, typer.Option("--quick", help=QUICK_HELP)] = False,
) -> None:
    """Tenant B's interactive latency while tenant A bursts 1,000 calls, fairness on and off."""
    from core.bench import fairness, processes

    plan = fairness.QUICK if quick else fairness.FULL
    result = fairness.run(plan, progress=_progress)
    path = processes.write_result(
        "fairness", {"quick": quick, "plan": asdict(plan), **asdict(result)}
    )
    typer.echo(_reproduce("fairness", quick))
    typer.echo("")
    typer.echo(fairness_table(result, plan))
    typer.echo(f"Results: {path}")
    typer.echo(fairness.key_values(result))


# ------------------------------------------------------------------------------ savings

Row = tuple[str, "Callable[[ArmReport], float] | None", "Callable[[ArmReport], str]"]


def _savings_rows(volume: int) -> list[Row]:
    def seconds(value: float) -> str:
        return f"{value:.2f} s"

    return [
        (
            f"token cost / month at {volume:,} calls",
            lambda r: r.cost_per_month,
            lambda r: f"${r.cost_per_month:,.0f}",
        ),
        ("cost / answered call", lambda r: r.cost_per_call, lambda r: f"${r.cost_per_call:.5f}"),
        ("p95 latency, all answered calls", lambda r: r.p95, lambda r: seconds(r.p95)),
        (
            "  p95 interactive (first token)",
            lambda r: r.p95_interactive,
            lambda r: seconds(r.p95_interactive),
        ),
        (
            "  p95 background (whole answer)",
            lambda r: r.p95_background,
            lambda r: seconds(r.p95_background),
        ),
        ("p50 latency, all answered calls", lambda r: r.p50, lambda r: seconds(r.p50)),
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


def savings_table(
    reports: Sequence[ArmReport], workload: Workload, profile: Profile, calls: int
) -> str:
    """The arms side by side with Switchyard's delta against each naive arm, then notes."""
    from core.bench.processes import columns
    from core.bench.savings_report import delta

    by_name = {r.name: r for r in reports}
    ours = by_name.get("switchyard")
    bases = [r for r in reports if r.name != "switchyard"]
    shown = [*bases, *([ours] if ours else [])]
    table = [["", *(LABELS[r.name] for r in shown)]]
    if ours:
        table[0] += [f"Δ vs {LABELS[b.name]}" for b in bases]
    for label, value, show in _savings_rows(workload.interactions_per_month):
        line = [label, *(show(r) for r in shown)]
        if ours:
            line += [f"{delta(value(ours), value(b)):+.2f}" if value else "" for b in bases]
        table.append(line)
    spikes = ", ".join(
        f"{s.per_minute:g}/min for {s.minutes:g} min from minute {s.start_minute:g}"
        for s in profile.spikes
    )
    scale = profile.time_scale
    notes = [
        f"Workload {workload.name!r}: {calls:,} calls over {profile.minutes:g} virtual minutes "
        f"({profile.base_per_minute:g}/min; spike {spikes}); rate limits = catalogue x "
        f"{profile.limits_factor:g}, the same for every arm; a fresh sandbox per arm.",
        f"Time compressed {1 / scale:g}x: sandbox latency_scale {scale:g}, arrivals and the "
        "sandbox's rate-limit and cache clocks sped up alike; latencies are measured / "
        f"{scale:g}, so Switchyard's own real-time overhead counts {1 / scale:g}x here.",
        "Cost: the usage each answer reports, priced by core.gateway.accounting.cost(), per "
        "answered call; errors per day = errors per call x interactions_per_month / 30. "
        "Latency percentiles are over answered calls.",
    ]
    for r in reports:
        models = ", ".join(f"{m} {n}" for m, n in sorted(r.models.items()))
        check = f"priced tokens = sandbox-billed tokens: {r.token_check}"
        if r.gateway_cost_usd is not None:
            check += f"; GET /v1/usage ${r.gateway_cost_usd:.4f} vs ${r.cost_usd:.4f} here"
        errors = f"; other errors {r.other_errors}" if r.other_errors else ""
        notes.append(f"{LABELS[r.name]}: {models}; {check}{errors}. {r.machine}.")
    return "\n".join([*columns(table), "", *notes])


# ----------------------------------------------------------------------------- overhead


def _level_label(level: LevelResult) -> str:
    upstream = f", upstream {level.upstream_ms:.0f} ms" if level.upstream_ms else ""
    return f"concurrency {level.concurrency}{upstream} ({level.requests:,} each way)"


def overhead_table(result: OverheadResult, plan: Plan) -> str:
    from core.bench.http_load import MODEL
    from core.bench.overhead import LOG_DRAIN
    from core.bench.processes import columns

    rows = [["", "direct p50 / p99", "through p50 / p99", "added p50 / p99", "through req/s"]]
    for level in result.levels:
        rows.append(
            [
                _level_label(level),
                f"{level.direct_p50_ms:.2f} / {level.direct_p99_ms:.2f} ms",
                f"{level.through_p50_ms:.2f} / {level.through_p99_ms:.2f} ms",
                f"{level.added_p50_ms:+.2f} / {level.added_p99_ms:+.2f} ms",
                f"{level.through_rps:,.0f}",
            ]
        )
    (d50, d99), (t50, t99) = result.stream_direct_ttfb_ms, result.stream_through_ttfb_ms
    rows.append(
        [
            f"streaming, first byte, concurrency 1 ({plan.stream_requests:,} each way)",
            f"{d50:.2f} / {d99:.2f} ms",
            f"{t50:.2f} / {t99:.2f} ms",
            f"{t50 - d50:+.2f} / {t99 - d99:+.2f} ms",
            "",
        ]
    )
    samples = ", ".join(f"{n:,}: {mb:.0f}" for n, mb in result.rss_mb)
    pending = {writer: n for writer, n in result.log_pending.items() if n} or "none"
    after_warmup = result.requests_through - result.rss_mb[0][0] if result.rss_mb else 0
    notes = [
        "Closed loop: each connection sends its next request when the previous answer is in. "
        "With a zero-latency upstream, concurrency 16 and 64 saturate the gateway, so their "
        "added latency is mostly waiting in line (latency ~ concurrency / max req/s); with "
        f"the upstream answering in {plan.upstream_seconds * 1000:.0f} ms the connections "
        "start spread over that time and offer concurrency / upstream time req/s.",
        f"Maximum rate through Switchyard (64 connections): {result.max_rps:,.0f} req/s, "
        f"p99 {result.max_rps_p99_ms:.1f} ms; the sandbox alone: "
        f"{result.direct_max_rps:,.0f} req/s.",
        f"CPU per request: Switchyard {result.cpu_ms_per_request:.2f} ms, "
        f"the sandbox {result.sandbox_cpu_ms_per_request:.2f} ms.",
        f"Switchyard VmRSS in MiB after N requests through it: {samples}; growth after "
        f"warm-up {result.rss_growth_mb:+.1f} MiB over {after_warmup:,} requests, "
        f"{result.rss_growth_second_half_mb:+.1f} MiB over the second half of them.",
        "Call records and call audit records dropped (buffer full or refused): "
        f"{result.log_dropped or 'none'}; still unwritten {LOG_DRAIN:.0f} s after the load: "
        f"{pending}.",
        f"Non-2xx answers: {result.non_2xx or 'none'}; Switchyard logged "
        f"{result.gateway_logged_errors} errors ({result.gateway_log}).",
        f"Request: POST /v1/messages, {MODEL}, max_tokens 16, one short user turn, unique per "
        "call; the sandbox's rate limits far above the load; the load generator, the sandbox "
        "and Switchyard share this machine's cores.",
        f"Targets: {OVERHEAD_TARGETS}.",
    ]
    return "\n".join([*columns(rows), "", *notes])


# ----------------------------------------------------------------------------- fairness


def fairness_table(result: FairnessResult, plan: FairnessPlan) -> str:
    from core.bench.fairness import MODEL
    from core.bench.processes import columns

    rows = [
        [
            "",
            "B p50 / p95",
            "÷ alone (p50 / p95)",
            "B admission wait p95",
            "B errors",
            "A answered meanwhile",
            f"p95 ≤ {result.bound:g}x alone",
        ]
    ]
    for run in result.runs:
        alone = run.name == "alone"
        bound = ""
        if run.name.endswith("-fair"):
            bound = "met" if result.holds(run.name) else "MISSED"
        errors = ", ".join(f"{k} {v}" for k, v in sorted(run.errors.items())) or "0"
        rows.append(
            [
                run.label,
                f"{run.p50:.3f} / {run.p95:.3f} s",
                ""
                if alone
                else f"{result.ratio(run.name, median=True):.2f} / {result.ratio(run.name):.2f}",
                f"{run.queue_p95_ms:.0f} ms",
                errors,
                "" if alone else f"{run.a_answered:,}",
                bound,
            ]
        )
    rate = plan.rpm / 60
    notes = [
        f"One model ({MODEL}) limited to {plan.rpm:,} requests a minute ({rate:g}/s), "
        f"no headroom; the in-process sandbox answers every call in "
        f"{plan.upstream_seconds * 1000:.0f} ms; each run spends the bucket's burst "
        "allowance first, so admission is the bottleneck from the first call.",
        f"Tenant B: {plan.b_calls} interactive calls, one every {plan.b_interval:g} s, "
        f"latency from each call's scheduled time to the whole answer; a call still waiting "
        f"after {plan.b_deadline:g} s gets the gateway's 429 and counts at that time. "
        f"Tenant A: {plan.burst:,} calls queued at once, {plan.b_delay:g} s before B's "
        "first; the run ends with B's last answer.",
        f"Bound (fairness on): B's p95 under A's burst ≤ {result.bound:g}x its p95 alone. "
        "By design B waits at most for the head's refill and its own: about "
        f"{2000 / rate:.0f} ms at {rate:g} requests/s.",
        "Fairness off means one first-come-first-served queue per priority (interactive "
        "still before background), i.e. the gateway before fair queueing.",
        f"Upstream 429s (sandbox, all runs): {result.upstream_429}.",
    ]
    return "\n".join([*columns(rows), "", *notes])


if __name__ == "__main__":
    bench_app()
