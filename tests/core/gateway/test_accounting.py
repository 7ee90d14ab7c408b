"""Usage parsing and merging, and exact costs from the catalogue's effective-dated prices."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from core.gateway.accounting import Cost, Usage, cost, merge_usage_objects, naive_cost
from core.gateway.catalog import Catalog

LATE_2026 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


# (name, model, usage as the API reports it, at, batch, expected total in USD)
CASES: list[tuple[str, str, dict[str, Any], datetime, bool, str]] = [
    # 1000 x 2 + 500 x 10 = 7000 $/M
    ("plain", "claude-sonnet-5-5", {"input_tokens": 1000, "output_tokens": 500}, LATE_2026,
     False, "0.007"),
    # 100 x 2 + 2000 x 2.50 (no breakdown: 5m) + 100 x 10 = 6200
    ("5m writes", "claude-sonnet-5-5",
     {"input_tokens": 100, "cache_creation_input_tokens": 2000, "output_tokens": 100},
     LATE_2026, False, "0.0062"),
    # 10 x 4 + 4000 x 8 + 50 x 20 = 33040
    ("1h writes", "claude-opus-5-5",
     {"input_tokens": 10, "cache_creation_input_tokens": 4000, "output_tokens": 50,
      "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 4000}},
     LATE_2026, False, "0.03304"),
    # 10 x 4 + 10000 x 0.20 + 100 x 20 = 4040
    ("reads", "claude-opus-5-5",
     {"input_tokens": 10, "cache_read_input_tokens": 10000, "output_tokens": 100},
     LATE_2026, False, "0.00404"),
    # 50 x 2 + 1000 x 2.50 + 2000 x 4 + 20000 x 0.10 + 400 x 10 = 16600
    ("mixed", "claude-sonnet-5-5",
     {"input_tokens": 50, "cache_creation_input_tokens": 3000, "cache_read_input_tokens": 20000,
      "output_tokens": 400,
      "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000}},
     LATE_2026, False, "0.0166"),
    # prompt = 1000 + 99000 = 100000, not above 100K: 1000 x 0.10 + 99000 x 0.01 + 1000 x 0.50
    ("haiku at 100K", "claude-haiku-5-5",
     {"input_tokens": 1000, "cache_read_input_tokens": 99000, "output_tokens": 1000},
     LATE_2026, False, "0.00159"),
    # prompt = 100001 (cache reads count): every token at the long tier, output included:
    # 1001 x 0.50 + 99000 x 0.05 + 1000 x 2.50 = 7950.5
    ("haiku above 100K", "claude-haiku-5-5",
     {"input_tokens": 1001, "cache_read_input_tokens": 99000, "output_tokens": 1000},
     LATE_2026, False, "0.0079505"),
    # long tier for writes too: 1 x 0.50 + 100000 x 0.625 + 10 x 2.50 = 62525.5
    ("haiku long writes", "claude-haiku-5-5",
     {"input_tokens": 1, "cache_creation_input_tokens": 100000, "output_tokens": 10},
     LATE_2026, False, "0.0625255"),
    # Sonnet 5.5 cache reads: 0.20 until 2026-10-06, 0.10 from 2026-10-07 (UTC)
    ("sonnet read before cut", "claude-sonnet-5-5", {"cache_read_input_tokens": 100000},
     datetime(2026, 10, 6, 23, 59, 59, tzinfo=UTC), False, "0.02"),
    ("sonnet read after cut", "claude-sonnet-5-5", {"cache_read_input_tokens": 100000},
     datetime(2026, 10, 7, 0, 0, tzinfo=UTC), False, "0.01"),
    # batch: everything at 50%: (1000 x 2 + 500 x 10) / 2 = 3500
    ("batch", "claude-sonnet-5-5", {"input_tokens": 1000, "output_tokens": 500}, LATE_2026,
     True, "0.0035"),
    # batch with caching: (50 x 2 + 1000 x 2.5 + 2000 x 4 + 20000 x 0.1 + 400 x 10) / 2 = 8300
    ("batch mixed", "claude-sonnet-5-5",
     {"input_tokens": 50, "cache_creation_input_tokens": 3000, "cache_read_input_tokens": 20000,
      "output_tokens": 400,
      "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000}},
     LATE_2026, True, "0.0083"),
    # missing and null fields count as zero: 10 x 10 = 100
    ("missing fields", "claude-sonnet-5-5",
     {"output_tokens": 10, "input_tokens": None, "cache_creation": None}, LATE_2026, False,
     "0.0001"),
    ("empty usage", "claude-opus-5-5", {}, LATE_2026, False, "0"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("model", "usage", "at", "batch", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_cost_is_exact(
    catalog: Catalog, model: str, usage: dict[str, Any], at: datetime, batch: bool, expected: str
) -> None:
    result = cost(
        catalog.get(model),
        Usage.from_api(usage),
        at=at,
        batch=batch,
        batch_discount=catalog.batch_discount,
    )
    assert result.total == Decimal(expected)
    assert isinstance(result.total, Decimal)
    parts = (
        result.input,
        result.output,
        result.cache_write_5m,
        result.cache_write_1h,
        result.cache_read,
    )
    assert sum(parts, Decimal(0)) == result.total


def test_cost_breaks_down_by_component(catalog: Catalog) -> None:
    usage = Usage.from_api(CASES[4][2])
    assert cost(catalog.get("claude-sonnet-5-5"), usage, at=LATE_2026) == Cost(
        total=Decimal("0.0166"),
        input=Decimal("0.0001"),
        output=Decimal("0.004"),
        cache_write_5m=Decimal("0.0025"),
        cache_write_1h=Decimal("0.008"),
        cache_read=Decimal("0.002"),
        long_prompt=False,
    )


def test_the_long_prompt_flag_follows_the_threshold(catalog: Catalog) -> None:
    haiku = catalog.get("claude-haiku-5-5")
    assert not cost(haiku, Usage(input_tokens=100_000), at=LATE_2026).long_prompt
    assert cost(haiku, Usage(input_tokens=100_001), at=LATE_2026).long_prompt
    # A model without a long tier never has one.
    assert not cost(
        catalog.get("claude-opus-5-5"), Usage(input_tokens=10**6), at=LATE_2026
    ).long_prompt


def test_a_date_works_as_well_as_an_instant(catalog: Catalog) -> None:
    usage = Usage(cache_read_input_tokens=100_000)
    sonnet = catalog.get("claude-sonnet-5-5")
    assert cost(sonnet, usage, at=date(2026, 10, 7)).total == Decimal("0.01")


def test_a_batch_cost_needs_the_catalogue_discount(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="batch_discount"):
        cost(catalog.get("claude-opus-5-5"), Usage(input_tokens=1), at=LATE_2026, batch=True)


def test_naive_cost_is_list_price_without_caching(catalog: Catalog) -> None:
    usage = Usage.from_api(CASES[4][2])  # prompt 23050, output 400
    # On Opus 5.5: 23050 x 4 + 400 x 20 = 100200
    assert naive_cost(usage, catalog.get("claude-opus-5-5"), at=LATE_2026) == Decimal("0.1002")
    # On Haiku 5.5 above 100K the long tier applies: 100001 x 0.50 + 1000 x 2.50 = 52500.5
    long = Usage(input_tokens=1, cache_read_input_tokens=100_000, output_tokens=1000)
    assert naive_cost(long, catalog.get("claude-haiku-5-5"), at=LATE_2026) == Decimal("0.0525005")


def test_usage_reads_the_cache_creation_breakdown() -> None:
    usage = Usage.from_api(
        {
            "input_tokens": 5,
            "cache_creation_input_tokens": 300,
            "cache_read_input_tokens": 7,
            "output_tokens": 9,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
            "server_tool_use": {"web_search_requests": 1},
            "service_tier": "standard",
        }
    )
    assert usage == Usage(5, 9, 7, 300, 100, 200)
    assert usage.prompt_tokens == 312


def test_writes_without_breakdown_are_5m_and_a_breakdown_alone_gives_the_total() -> None:
    assert Usage.from_api({"cache_creation_input_tokens": 40}) == Usage(
        cache_creation_input_tokens=40, cache_write_5m=40
    )
    only_breakdown = {"cache_creation": {"ephemeral_1h_input_tokens": 60}}
    assert Usage.from_api(only_breakdown) == Usage(
        cache_creation_input_tokens=60, cache_write_1h=60
    )
    # Writes the breakdown leaves unattributed count as 5m.
    partial = {
        "cache_creation_input_tokens": 100,
        "cache_creation": {"ephemeral_1h_input_tokens": 30},
    }
    assert Usage.from_api(partial) == Usage(
        cache_creation_input_tokens=100, cache_write_5m=70, cache_write_1h=30
    )
    assert Usage.from_api(None) == Usage()
    assert Usage.from_api({"input_tokens": True, "output_tokens": "7"}) == Usage()


def test_merge_takes_the_latest_value_and_never_sums() -> None:
    start = Usage.from_api({"input_tokens": 20, "output_tokens": 1})
    after = start.merge({"output_tokens": 15}).merge({"output_tokens": 42, "input_tokens": None})
    assert after == Usage(input_tokens=20, output_tokens=42)
    assert start.merge(None) is start
    assert start.merge({}) is start


def test_merge_picks_up_cache_usage_reported_only_in_message_delta() -> None:
    start = Usage.from_api({"input_tokens": 20, "output_tokens": 1})
    final = start.merge(
        {
            "output_tokens": 50,
            "cache_creation_input_tokens": 500,
            "cache_read_input_tokens": 1000,
        }
    )
    assert final == Usage(20, 50, 1000, 500, 500, 0)
    # A later repeat without the breakdown keeps the one already known.
    hour = Usage.from_api(
        {"cache_creation_input_tokens": 500, "cache_creation": {"ephemeral_1h_input_tokens": 500}}
    )
    assert hour.merge({"cache_creation_input_tokens": 500, "output_tokens": 3}) == Usage(
        output_tokens=3, cache_creation_input_tokens=500, cache_write_1h=500
    )


def test_to_api_round_trips() -> None:
    usage = Usage(5, 9, 7, 300, 100, 200)
    assert Usage.from_api(usage.to_api()) == usage


def test_raw_usage_objects_merge_field_by_field_keeping_unknown_fields() -> None:
    first = {
        "input_tokens": 10,
        "output_tokens": 1,
        "cache_creation": {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 0},
        "service_tier": "standard",
    }
    later = {
        "output_tokens": 30,
        "input_tokens": None,
        "cache_creation": {"ephemeral_1h_input_tokens": 4},
        "server_tool_use": {"web_search_requests": 2},
    }
    assert merge_usage_objects(first, later) == {
        "input_tokens": 10,
        "output_tokens": 30,
        "cache_creation": {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 4},
        "service_tier": "standard",
        "server_tool_use": {"web_search_requests": 2},
    }
    assert first["output_tokens"] == 1  # inputs untouched
