"""``switchyard bench fairness``'s report math and table (the benchmark itself is not a
test: ``make bench`` runs it)."""

from __future__ import annotations

from core.bench import fairness
from core.bench.cli import fairness_table


def run(
    name: str, latencies: list[float], errors: dict[str, int] | None = None
) -> fairness.RunResult:
    queue_ms = [1.0] * len(latencies)
    return fairness.RunResult(name, name, latencies, queue_ms, errors or {}, 100, 10.0)


def test_ratios_against_alone_and_the_bound() -> None:
    result = fairness.FairnessResult(
        [
            run("alone", [0.5] * 19 + [0.6]),
            run("background-fair", [0.5] * 19 + [0.7]),
            run("background-fifo", [0.5] * 19 + [0.7]),
            run("interactive-fair", [0.6] * 20),
            run("interactive-fifo", [6.0] * 20, errors={"admission-timeout": 20}),
        ],
        upstream_429=0,
    )
    assert result.run("alone").p95 == 0.5  # nearest rank: the 19th of 20
    assert result.ratio("interactive-fair") == 1.2
    assert result.ratio("interactive-fifo", median=True) == 12.0
    assert result.holds("interactive-fair")
    assert not result.holds("interactive-fifo")
    figures = dict(pair.split("=") for pair in fairness.key_values(result).split())
    assert figures["b_p95_alone_s"] == "0.500"
    assert figures["interactive_fifo_p95_ratio"] == "12.00"
    assert figures["bound_holds"] == "true"  # judged on the fairness-on runs only
    table = fairness_table(result, fairness.QUICK)
    assert "admission-timeout 20" in table
    assert "MISSED" not in table
    assert "1,200 requests a minute" in table
