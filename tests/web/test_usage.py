"""The usage API: grouping, time buckets, totals, exact money, percentiles, ratios,
tenant scoping and the 422s. Rows are inserted straight into ``gateway_requests``."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import fastapi.routing
import httpx
import pytest
from fastapi import FastAPI

from core.db.models import GatewayRequest, Role
from core.gateway.usage import usage_report
from core.services import Services
from core.web import problems
from core.web.app import create_app
from core.web.routers import usage
from tests.web.support import TenantKeys, assert_problem

T0 = datetime(2025, 3, 1, tzinfo=UTC)
DAY = {"since": "2025-03-01T00:00:00Z", "until": "2025-03-02T00:00:00Z"}
METRICS = {
    "requests",
    "errors",
    "rate_limited",
    "error_rate",
    "rate_limited_rate",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_hit_ratio",
    "response_cache_hits",
    "dedup_hits",
    "escalations",
    "validation_failures",
    "retries",
    "cost_usd",
    "list_cost_usd",
    "naive_cost_usd",
    "savings_usd",
    "latency_ms",
    "ttft_ms",
    "queue_ms",
}


def _has_route(app: FastAPI, path: str) -> bool:
    # FastAPI >= 0.16x keeps included routers as one entry each; expand them if it can.
    expand: Callable[[Any], Iterable[Any]] | None = getattr(
        fastapi.routing, "iter_route_contexts", None
    )
    routes = expand(app.routes) if expand is not None else app.routes
    return any(getattr(route, "path", None) == path for route in routes)


@pytest.fixture
def app(services: Services) -> FastAPI:
    built = create_app(services)
    if not _has_route(built, "/v1/usage"):  # until app.py includes the router
        built.include_router(usage.router, responses=problems.API_PROBLEMS)
    return built


def _request(tenant: TenantKeys, minutes: float = 0, **values: Any) -> GatewayRequest:
    row: dict[str, Any] = {
        "id": f"req_{secrets.token_hex(8)}",
        "trace_id": secrets.token_hex(16),
        "tenant_id": tenant.id,
        "feature": "triage",
        "model": "claude-haiku",
        "task": "classify",
        "stream": False,
        "priority": "normal",
        "status": "ok",
        "http_status": 200,
        "total_ms": 100.0,
        "prompt_hash": "0" * 64,
        "created_at": T0 + timedelta(minutes=minutes),
    }
    row.update(values)
    return GatewayRequest(**row)


async def _insert(services: Services, *rows: GatewayRequest) -> None:
    async with services.sessions.begin() as session:
        session.add_all(rows)


async def _usage(
    client: httpx.AsyncClient, tenant: TenantKeys, role: Role = Role.REVIEWER, **params: str
) -> dict[str, Any]:
    response = await client.get("/v1/usage", params={**DAY, **params}, headers=tenant.headers(role))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_grouped_by_feature_shows_only_that_key(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    await _insert(
        services,
        *(_request(tenant_a, i, feature="triage", output_tokens=10) for i in range(3)),
        *(_request(tenant_a, i, feature="summarize", output_tokens=7) for i in range(2)),
    )

    body = await _usage(client, tenant_a, group_by="feature")

    assert (body["since"], body["until"]) == ("2025-03-01T00:00:00Z", "2025-03-02T00:00:00Z")
    assert (body["group_by"], body["bucket"]) == (["feature"], "none")
    assert [(r["feature"], r["requests"], r["output_tokens"]) for r in body["rows"]] == [
        ("summarize", 2, 14),
        ("triage", 3, 30),
    ]
    assert set(body["rows"][0]) == METRICS | {"feature"}
    assert set(body["totals"]) == METRICS
    assert (body["totals"]["requests"], body["totals"]["output_tokens"]) == (5, 44)


async def test_grouped_by_feature_and_model_sorted_by_keys_nulls_last(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    await _insert(
        services,
        _request(tenant_a, 1, feature="b", model="opus", task=None),
        _request(tenant_a, 2, feature="a", model="sonnet"),
        _request(tenant_a, 3, feature="a", model="haiku"),
        _request(tenant_a, 4, feature="b", model="opus", task="extract"),
    )

    body = await _usage(client, tenant_a, group_by="feature, model,task")

    assert body["group_by"] == ["feature", "model", "task"]
    assert [(r["feature"], r["model"], r["task"]) for r in body["rows"]] == [
        ("a", "haiku", "classify"),
        ("a", "sonnet", "classify"),
        ("b", "opus", "extract"),
        ("b", "opus", None),
    ]


async def test_hourly_buckets_in_utc(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    await _insert(
        services,
        _request(tenant_a, 10, model="haiku"),
        _request(tenant_a, 50, model="opus"),
        _request(tenant_a, 59.99, model="haiku"),
        _request(tenant_a, 65, model="haiku"),
        _request(tenant_a, 3 * 60 + 59, model="haiku"),
    )

    body = await _usage(client, tenant_a, bucket="hour", group_by="model")

    assert [(r["bucket_start"], r["model"], r["requests"]) for r in body["rows"]] == [
        ("2025-03-01T00:00:00Z", "haiku", 2),
        ("2025-03-01T00:00:00Z", "opus", 1),
        ("2025-03-01T01:00:00Z", "haiku", 1),
        ("2025-03-01T03:00:00Z", "haiku", 1),
    ]
    assert set(body["rows"][0]) == METRICS | {"bucket_start", "model"}
    assert body["totals"]["requests"] == 5


async def test_day_buckets_are_utc_days_whatever_the_offset_asked(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    await _insert(services, _request(tenant_a, -30), _request(tenant_a, 30))

    body = await _usage(
        client,
        tenant_a,
        bucket="day",
        since="2025-03-01T00:00:00+02:00",  # 2025-02-28T22:00Z
        until="2025-03-01T12:00:00Z",
    )

    assert body["since"] == "2025-02-28T22:00:00Z"
    assert [(r["bucket_start"], r["requests"]) for r in body["rows"]] == [
        ("2025-02-28T00:00:00Z", 1),
        ("2025-03-01T00:00:00Z", 1),
    ]


async def test_money_is_summed_exactly_then_rounded_once(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    await _insert(
        services,
        *(
            _request(
                tenant_a,
                i,
                feature="big",
                cost_picodollars=1_234_567_891_234,
                list_cost_picodollars=2_000_000_000_001,
                naive_cost_picodollars=5_000_000_000_000,
            )
            for i in range(3)
        ),
        *(_request(tenant_a, i, feature="small", cost_picodollars=1_234_567) for i in range(3)),
        # 3 x 0.0000015: rounding per row would give 0.000006; the exact sum is 0.0000045.
        *(_request(tenant_a, i, feature="tie", cost_picodollars=1_500_000) for i in range(3)),
    )

    body = await _usage(client, tenant_a, group_by="feature")

    rows = {r["feature"]: r for r in body["rows"]}
    big = rows["big"]
    assert big["cost_usd"] == 3.703704  # 3_703_703_673_702 pico
    assert big["list_cost_usd"] == 6.0  # 6_000_000_000_003 pico
    assert big["naive_cost_usd"] == 15.0
    assert big["savings_usd"] == 11.296296  # 11_296_296_326_298 pico
    assert rows["small"]["cost_usd"] == 0.000004  # 3_703_701 pico
    assert rows["tie"]["cost_usd"] == 0.000004  # half-even
    totals = body["totals"]
    assert totals["cost_usd"] == 3.703712  # 3_703_703_673_702 + 3_703_701 + 4_500_000 pico
    assert totals["savings_usd"] == 11.296288


async def test_percentiles_use_nearest_rank(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    await _insert(
        services,
        *(
            _request(
                tenant_a,
                i,
                feature="stream",
                total_ms=float(i),
                queue_ms=float(100 - i),
                ttft_ms=float(i * 10) if i % 2 else None,
                stream=bool(i % 2),
            )
            for i in range(1, 21)
        ),
        _request(tenant_a, 0, feature="single", total_ms=250.5, queue_ms=0.0),
    )

    body = await _usage(client, tenant_a, group_by="feature")

    single, stream = body["rows"]
    # 20 values: p50 is the 10th smallest, p95 the 19th.
    assert stream["latency_ms"] == {"p50": 10.0, "p95": 19.0}
    assert stream["queue_ms"] == {"p50": 89.0, "p95": 98.0}  # 80..99
    # ttft over the 10 streams only (10, 30, ..., 190): the 5th and the 10th.
    assert stream["ttft_ms"] == {"p50": 90.0, "p95": 190.0}
    assert single["latency_ms"] == {"p50": 250.5, "p95": 250.5}
    assert single["ttft_ms"] is None
    # 21 values (1..20 and 250.5): ranks 11 and 20.
    assert body["totals"]["latency_ms"] == {"p50": 11.0, "p95": 20.0}


async def test_tokens_cache_hit_ratio_and_flags(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    await _insert(
        services,
        _request(
            tenant_a,
            1,
            feature="cached",
            input_tokens=100,
            cache_read_tokens=300,
            cache_write_5m_tokens=60,
            cache_write_1h_tokens=40,
            output_tokens=9,
            retries=2,
            escalated=True,
            validation_failed=True,
        ),
        _request(tenant_a, 2, feature="cached", cache_hit=True, dedup_hit=True, retries=1),
        _request(tenant_a, 3, feature="empty"),
    )

    body = await _usage(client, tenant_a, group_by="feature")

    cached, empty = body["rows"]
    assert (cached["input_tokens"], cached["cache_read_tokens"]) == (100, 300)
    assert cached["cache_write_tokens"] == 100
    assert cached["cache_hit_ratio"] == 0.6  # 300 / (100 + 300 + 100)
    assert (cached["response_cache_hits"], cached["dedup_hits"]) == (1, 1)
    assert (cached["escalations"], cached["retries"]) == (1, 3)
    assert (cached["validation_failures"], empty["validation_failures"]) == (1, 0)
    assert empty["cache_hit_ratio"] == 0.0  # no prompt tokens at all
    assert body["totals"]["cache_hit_ratio"] == 0.6


async def test_grouped_by_prompt_version(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    await _insert(
        services,
        _request(tenant_a, 1, prompt_ref="triage@1"),
        _request(tenant_a, 2, prompt_ref="triage@2", validation_failed=True),
        _request(tenant_a, 3, prompt_ref="triage@2"),
        _request(tenant_a, 4),  # a /v1/messages call names no prompt version
    )

    body = await _usage(client, tenant_a, group_by="prompt")

    assert [(r["prompt"], r["requests"], r["validation_failures"]) for r in body["rows"]] == [
        ("triage@1", 1, 0),
        ("triage@2", 2, 1),
        (None, 1, 0),
    ]


async def test_errors_and_rate_limits_by_status(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    await _insert(
        services,
        _request(tenant_a, 1),
        _request(tenant_a, 2, status="error", http_status=429, error_type="rate_limit_error"),
        _request(tenant_a, 3, status="error", http_status=529, error_type="overloaded_error"),
        _request(tenant_a, 4, status="canceled", http_status=499),
    )

    body = await _usage(client, tenant_a, group_by="status")

    assert [(r["status"], r["requests"], r["errors"]) for r in body["rows"]] == [
        ("canceled", 1, 0),
        ("error", 2, 2),
        ("ok", 1, 0),
    ]
    totals = body["totals"]
    assert (totals["errors"], totals["rate_limited"]) == (2, 1)
    assert (totals["error_rate"], totals["rate_limited_rate"]) == (0.5, 0.25)
    assert body["rows"][1]["rate_limited_rate"] == 0.5


async def test_only_the_callers_tenant_and_range(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys, tenant_b: TenantKeys
) -> None:
    await _insert(
        services,
        _request(tenant_a, 0, feature="a-first"),  # since is inclusive
        _request(tenant_a, 24 * 60, feature="a-late"),  # until is exclusive
        _request(tenant_a, -1, feature="a-early"),
        *(_request(tenant_b, i, feature="b-secret", cost_picodollars=10**12) for i in range(3)),
    )

    for role in Role:
        body = await _usage(client, tenant_a, role=role, group_by="feature")
        assert [r["feature"] for r in body["rows"]] == ["a-first"], role
        assert (body["totals"]["requests"], body["totals"]["cost_usd"]) == (1, 0.0)
    seen_by_b = await _usage(client, tenant_b, group_by="feature")
    assert [(r["feature"], r["requests"]) for r in seen_by_b["rows"]] == [("b-secret", 3)]


async def test_default_range_is_the_last_24_hours(
    client: httpx.AsyncClient, services: Services, tenant_a: TenantKeys
) -> None:
    now = datetime.now(UTC)
    await _insert(
        services,
        _request(tenant_a, feature="recent", created_at=now - timedelta(hours=1)),
        _request(tenant_a, feature="old", created_at=now - timedelta(hours=25)),
    )

    response = await client.get("/v1/usage", headers=tenant_a.headers())

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["group_by"] == []
    assert body["rows"] == [body["totals"]]  # one ungrouped row
    assert body["totals"]["requests"] == 1
    since = datetime.fromisoformat(body["since"])
    until = datetime.fromisoformat(body["until"])
    assert until - since == timedelta(hours=24)
    assert abs(until - now) < timedelta(minutes=1)


async def test_nothing_in_range(client: httpx.AsyncClient, tenant_a: TenantKeys) -> None:
    body = await _usage(client, tenant_a, group_by="model", bucket="hour")

    assert body["rows"] == []
    totals = body["totals"]
    assert (totals["requests"], totals["error_rate"], totals["cost_usd"]) == (0, 0.0, 0.0)
    assert totals["latency_ms"] is totals["ttft_ms"] is totals["queue_ms"] is None


async def test_the_report_function_for_the_cli(services: Services, tenant_a: TenantKeys) -> None:
    await _insert(services, _request(tenant_a, 30), _request(tenant_a, 90))
    async with services.sessions.begin() as session:
        report = await usage_report(
            session, tenant_a.id, group_by=["model"], bucket="hour", now=T0 + timedelta(hours=1)
        )

    assert (report.since, report.until) == (T0 - timedelta(hours=23), T0 + timedelta(hours=1))
    assert [(r.bucket_start, r.model, r.requests) for r in report.rows] == [(T0, "claude-haiku", 1)]
    assert report.rows[0].model_fields_set >= {"bucket_start", "model", "requests"}
    assert "feature" not in report.rows[0].model_fields_set


INVALID = [
    ({"since": "2025-03-01T00:00:00"}, "since: give a timezone"),
    ({"until": "2025-03-02T00:00:00"}, "until: give a timezone"),
    ({"since": "yesterday"}, "since"),
    ({"until": "2025-03-01T00:00:00Z"}, "until must be later than since"),
    ({"since": "2025-03-02T00:00:00Z"}, "until must be later than since"),
    ({"since": "2024-11-01T00:00:00Z"}, "at most 93"),
    ({"group_by": "feature,tenant"}, "allowed: feature, model, task, status"),
    ({"bucket": "week"}, "bucket"),
]


async def test_invalid_queries_are_422_problems(
    client: httpx.AsyncClient, tenant_a: TenantKeys
) -> None:
    # One test, not a parametrization: each case needs the same app and tenant.
    for params, fragment in INVALID:
        response = await client.get(
            "/v1/usage", params={**DAY, **params}, headers=tenant_a.headers(Role.SERVICE)
        )
        problem = assert_problem(response, 422, "invalid-request")
        assert fragment in problem["detail"], (params, problem["detail"])
    assert_problem(await client.get("/v1/usage"), 401, "unauthenticated")


async def test_the_range_limit_says_how_to_fix_it(
    client: httpx.AsyncClient, tenant_a: TenantKeys
) -> None:
    response = await client.get(
        "/v1/usage",
        params={"since": "2025-01-01T00:00:00Z", "until": "2025-04-04T00:00:01Z"},
        headers=tenant_a.headers(),
    )

    problem = assert_problem(response, 422, "invalid-request")
    assert problem["max_days"] == 93
    assert "move since or until closer together" in problem["detail"]
    exactly_93 = {"since": "2025-01-01T00:00:00Z", "until": "2025-04-04T00:00:00Z"}
    allowed = await client.get("/v1/usage", params=exactly_93, headers=tenant_a.headers())
    assert allowed.status_code == 200, allowed.text


def test_documented_with_response_models(app: FastAPI) -> None:
    schema = app.openapi()
    operation = schema["paths"]["/v1/usage"]["get"]
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("/UsageReport")
    assert {"UsageRow", "UsageMetrics", "Percentiles"} <= schema["components"]["schemas"].keys()
    assert {p["name"] for p in operation["parameters"]} == {"since", "until", "group_by", "bucket"}
