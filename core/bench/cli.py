"""``switchyard bench savings`` and ``switchyard bench overhead`` (also ``python -m core.bench.cli``).

Each prints what it ran and how to run it again, a table, and ends with one line of
``key=value`` figures; the figures are also written to ``var/bench/<name>.json``.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

bench_app = typer.Typer(
    help="Benchmarks of the Claude gateway against the Anthropic sandbox.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

QUICK_HELP = "Smaller and more compressed, under a minute; for a smoke check, not for figures."


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
) -> None:
    """Cost, latency and rate-limit errors of a CRM workload, naive SDK vs through Switchyard."""
    from core.bench import processes, savings
    from core.bench.workload import build_calls, load

    workload = load(workload_file)
    profile_name = "quick" if quick else "full"
    profile = workload.profile(profile_name)
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
        reports.append(
            savings.summarize(name, run.outcomes, workload, run.sandbox, run.gateway_usage)
        )
    path = processes.write_result(
        "savings", {"profile": profile_name, "arms": [asdict(r) for r in reports]}
    )
    typer.echo(_reproduce("savings", quick))
    typer.echo("")
    typer.echo(savings.render(reports, workload, profile, len(calls)))
    typer.echo(f"Results: {path}")
    typer.echo(savings.key_values(reports))


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
    typer.echo(overhead.render(result, plan))
    typer.echo(f"Results: {path}")
    typer.echo(overhead.key_values(result))


if __name__ == "__main__":
    bench_app()
