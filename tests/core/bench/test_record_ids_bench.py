"""The record-ids benchmark runs end to end at a small size and reports what it measured."""

from __future__ import annotations

from tests.bench import record_ids


def test_both_kinds_of_id_are_written_and_reported_by_stage() -> None:
    payload = record_ids.run(rows=600, batch=100, stages=2, tune=False)
    assert [stage["rows"] for stage in payload["stages"]] == [300, 600]
    for stage in payload["stages"]:
        assert stage["flush_p50_ms_random"] > 0
        assert stage["flush_p50_ms_ordered"] > 0
        assert stage["held_p99_ms_random"] > 0  # the writer held the loop at some point
    assert set(payload["db_mib"]) == {"random", "ordered"}
    lines = record_ids.report(payload)
    assert lines[0].startswith("call records in flushes of 100")
    assert lines[3].split()[0] == "300"
    assert record_ids.key_values(payload).startswith("rows=600 flush_ordered_over_random=")
