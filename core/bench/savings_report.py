"""What a savings run found: one report per arm and the key=value line that compares them.

:mod:`core.bench.savings` measures (one :class:`~core.bench.savings.Outcome` per call);
this module turns the outcomes into figures: cost per call and per month at the workload's
stated volume, latency percentiles, rate-limit errors reaching callers per day-equivalent,
and a check that the tokens priced here are exactly those the sandbox billed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from core.bench import processes
from core.bench.savings import ArmRun, Outcome
from core.bench.workload import Workload


@dataclass
class ArmReport:
    name: str
    requests: int
    answered: int
    cost_usd: float
    cost_per_call: float  # per answered call
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
    machine: str = ""
    notes: list[str] = field(default_factory=list)


METER = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def token_check(outcomes: Sequence[Outcome], sandbox: dict[str, Any]) -> str:
    """``ok`` when the tokens priced here are exactly those the sandbox billed, per model."""
    ours: dict[str, dict[str, int]] = {}
    for o in outcomes:
        if o.usage is not None and o.model is not None and o.charged and o.error is None:
            row = ours.setdefault(o.model, dict.fromkeys(METER, 0))
            for name in METER:
                row[name] += getattr(o.usage, name)
    theirs = {
        model: {name: int(usage.get(name, 0)) for name in METER}
        for model, usage in sandbox.get("usage", {}).items()
    }
    return "ok" if ours == theirs else f"differs: priced {ours}, sandbox billed {theirs}"


def _p95(outcomes: Sequence[Outcome]) -> float:
    return processes.percentile([o.latency for o in outcomes if o.latency is not None], 95)


def summarize(name: str, run: ArmRun, workload: Workload) -> ArmReport:
    outcomes = run.outcomes
    ok = [o for o in outcomes if o.error is None]
    cost = sum(o.cost for o in ok)
    per_call = cost / len(ok) if ok else 0.0
    limited = sum(o.error == "rate_limit" for o in outcomes)
    others: dict[str, int] = {}
    models: dict[str, int] = {}
    for o in outcomes:
        if o.error is not None and o.error != "rate_limit":
            others[o.error] = others.get(o.error, 0) + 1
        elif o.model is not None:
            models[o.model] = models.get(o.model, 0) + 1
    billed = [o.usage for o in ok if o.usage is not None and o.charged]
    prompt = sum(u.prompt_tokens for u in billed)
    cpu = ", ".join(f"{k} {v / run.seconds:.0%}" for k, v in run.cpu_seconds.items())
    return ArmReport(
        name=name,
        requests=len(outcomes),
        answered=len(ok),
        cost_usd=cost,
        cost_per_call=per_call,
        cost_per_month=per_call * workload.interactions_per_month,
        p50=processes.percentile([o.latency for o in ok if o.latency is not None], 50),
        p95=_p95(ok),
        p95_interactive=_p95([o for o in ok if o.interactive]),
        p95_background=_p95([o for o in ok if not o.interactive]),
        rate_limit_errors=limited,
        rate_limit_errors_per_day=(
            limited / len(outcomes) * workload.interactions_per_month / 30 if outcomes else 0.0
        ),
        other_errors=others,
        upstream_429=int(run.sandbox.get("rate_limited", 0)),
        models=models,
        cache_read_share=sum(u.cache_read_input_tokens for u in billed) / prompt if prompt else 0,
        without_upstream=sum(not o.charged for o in ok),
        token_check=token_check(outcomes, run.sandbox),
        gateway_cost_usd=(
            None if run.gateway_usage is None else float(run.gateway_usage["cost_usd"])
        ),
        machine=(
            f"{run.seconds:.1f} s wall; CPU of one core: {cpu}; load generator's event loop "
            f"late by {run.loop_lag_p99_ms:.1f} ms at p99; load average {run.load_average:.1f}"
            + "".join(f"; {k} logged errors: {v}" for k, v in run.logged_errors.items())
        ),
    )


def delta(new: float, old: float) -> float:
    """Relative change as a fraction: -0.86 is 86% less."""
    return (new - old) / old if old else 0.0


def key_values(reports: Sequence[ArmReport]) -> str:
    """The last line: Switchyard against naive Opus (and Sonnet), deltas as fractions."""
    by_name = {r.name: r for r in reports}
    ours = by_name.get("switchyard")
    figures: dict[str, str] = {}
    if ours is not None:
        for base, suffix in (("naive-opus", ""), ("naive-sonnet", "_vs_sonnet")):
            if base in by_name:
                old = by_name[base]
                figures[f"cost_delta{suffix}"] = (
                    f"{delta(ours.cost_per_call, old.cost_per_call):.2f}"
                )
                figures[f"p95_delta{suffix}"] = f"{delta(ours.p95, old.p95):.2f}"
        figures["surfaced_rate_limit_errors"] = f"{ours.rate_limit_errors_per_day:.0f}"
    for base in ("naive-opus", "naive-sonnet"):
        if base in by_name:
            key = base.replace("-", "_")
            figures[f"{key}_rate_limit_errors"] = f"{by_name[base].rate_limit_errors_per_day:.0f}"
    return " ".join(f"{k}={v}" for k, v in figures.items())
