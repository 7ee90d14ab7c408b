"""The official SDK → Switchyard's /v1/messages → the gateway → the Anthropic sandbox.

Switchyard runs in the test's event loop (the SDK reaches it over an ASGI transport); the
sandbox is a real HTTP server in its own thread, as the upstream is in production.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import pytest
from sqlalchemy import select
from starlette.types import ASGIApp, Receive, Scope, Send

from connectors.registry import ConnectorRegistry
from core.db.models import BudgetPeriod, BudgetScope, GatewayRequest, Role
from core.gateway import accounting
from core.gateway.budget_store import put_budget
from core.gateway.catalog import Catalog, RateLimits
from core.sandbox import SandboxServer
from core.sandbox.anthropic import AnthropicSandbox, Faults
from core.services import Services, build_services
from core.settings import Settings
from core.web.app import create_app
from tests.web.support import make_tenant

SANDBOX_KEY = "sk-ant-sandbox"
SYSTEM = "You triage CRM support tickets for Acme Corp. " * 120  # ~1.8K tokens: cacheable
TICKET_TOOL = {
    "name": "triage",
    "description": "Record the ticket's triage.",
    "input_schema": {
        "type": "object",
        "properties": {
            "priority": {"type": "string", "enum": ["low", "medium", "high"]},
            "summary": {"type": "string", "maxLength": 120},
            "refund": {"type": "boolean"},
        },
        "required": ["priority", "summary"],
    },
}


class Recording:
    """ASGI wrapper that keeps each request's headers and body (what reached the upstream)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.requests: list[tuple[dict[str, str], bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def replay() -> Any:
            message = await receive()
            chunks.append(message.get("body", b""))
            return message

        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        try:
            await self.app(scope, replay, send)
        finally:
            self.requests.append((headers, b"".join(chunks)))


@pytest.fixture
def sandbox() -> AnthropicSandbox:
    return AnthropicSandbox(latency_scale=0, seed=7)


@pytest.fixture
def recording(sandbox: AnthropicSandbox) -> Recording:
    return Recording(sandbox.app)


@pytest.fixture
def upstream(recording: Recording) -> Iterator[SandboxServer]:
    with SandboxServer(recording) as server:
        yield server


@pytest.fixture
def settings(settings: Settings, upstream: SandboxServer) -> Settings:
    from pydantic import SecretStr

    return settings.model_copy(
        update={
            "anthropic_base_url": upstream.url,
            "anthropic_api_key": SecretStr(SANDBOX_KEY),
        }
    )


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    built = build_services(settings, registry=ConnectorRegistry.from_entry_points())
    yield built
    await built.aclose()


@dataclass
class Tenant:
    id: str
    client: anthropic.AsyncAnthropic


@pytest.fixture
async def connect(services: Services) -> AsyncIterator[Callable[[str], Awaitable[Tenant]]]:
    app = create_app(services)
    clients: list[anthropic.AsyncAnthropic] = []

    async def tenant(name: str) -> Tenant:
        keys = await make_tenant(services, name)
        client = anthropic.AsyncAnthropic(
            base_url="http://switchyard.test",
            api_key=keys.keys[Role.SERVICE],
            max_retries=0,
            http_client=httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)),
        )
        clients.append(client)
        return Tenant(keys.id, client)

    yield tenant
    for client in clients:
        await client.close()


async def records(services: Services) -> list[GatewayRequest]:
    await services.gateway.recorder.flush()
    async with services.sessions() as session:
        rows = await session.scalars(select(GatewayRequest).order_by(GatewayRequest.created_at))
        return list(rows)


def ask(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "max_tokens": 300,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


async def test_text_through_the_gateway_is_routed_costed_and_recorded(
    connect: Callable[[str], Awaitable[Tenant]], services: Services
) -> None:
    acme = await connect("acme")
    raw = await acme.client.messages.with_raw_response.create(
        model="auto",
        extra_headers={"x-switchyard-task": "summarize", "x-switchyard-feature": "digest"},
        **ask("Summarize ticket T-1"),
    )
    message = await raw.parse()
    assert message.model == "claude-haiku-5-5"  # summarize → the small tier
    assert message.content[0].type == "text"
    assert raw.headers["x-switchyard-trace-id"]
    (row,) = await records(services)
    assert (row.tenant_id, row.feature, row.task, row.model) == (
        acme.id,
        "digest",
        "summarize",
        "claude-haiku-5-5",
    )
    assert row.output_tokens == message.usage.output_tokens
    assert (row.status, row.upstream_calls) == ("ok", 1)
    expected = accounting.cost(
        Catalog.load().get("claude-haiku-5-5"),
        accounting.Usage.from_api(message.usage.model_dump()),
        at=row.created_at,
    ).total
    assert Decimal(row.cost_picodollars) / 10**12 == expected
    assert row.naive_cost_picodollars > row.cost_picodollars > 0


async def test_streamed_tool_use_is_reassembled_by_the_sdk(
    connect: Callable[[str], Awaitable[Tenant]], services: Services
) -> None:
    acme = await connect("acme")
    async with acme.client.messages.stream(
        model="auto",
        extra_headers={"x-switchyard-task": "classify"},
        tools=[TICKET_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "triage"},
        **ask("Printer on fire, customer wants a refund"),
    ) as stream:
        final = await stream.get_final_message()
    (block,) = final.content
    assert block.type == "tool_use"
    assert block.input["priority"] in {"low", "medium", "high"}  # type: ignore[index]
    (row,) = await records(services)
    assert row.stream
    assert row.ttft_ms is not None
    assert row.output_tokens == final.usage.output_tokens
    assert row.input_tokens + row.cache_read_tokens + row.cache_write_5m_tokens > 0


async def test_breakpoints_make_the_second_call_read_the_cache(
    connect: Callable[[str], Awaitable[Tenant]], services: Services
) -> None:
    acme = await connect("acme")
    first = await acme.client.messages.create(
        model="claude-sonnet-5-5", **ask("Ticket T-1: refund please")
    )
    second = await acme.client.messages.create(
        model="claude-sonnet-5-5", **ask("Ticket T-2: password reset")
    )
    assert (first.usage.cache_creation_input_tokens or 0) > 1000
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    rows = await records(services)
    assert rows[0].breakpoints_added >= 1
    sonnet = Catalog.load().get("claude-sonnet-5-5")
    for row, message in zip(rows, (first, second), strict=True):
        usage = accounting.Usage.from_api(message.usage.model_dump())
        assert Decimal(row.cost_picodollars) / 10**12 == (
            accounting.cost(sonnet, usage, at=row.created_at).total
        )
        assert row.cost_picodollars < row.list_cost_picodollars or row is rows[0]


async def test_a_storm_of_429_and_529_never_reaches_the_caller(
    connect: Callable[[str], Awaitable[Tenant]],
    sandbox: AnthropicSandbox,
    services: Services,
) -> None:
    sandbox.faults = Faults(rate_429=0.3, rate_529=0.3)
    services.gateway.retry_policy = type(services.gateway.retry_policy)(
        max_attempts=10, initial=0.01, maximum=0.05
    )
    acme = await connect("acme")
    answers = await asyncio.gather(
        *(
            acme.client.messages.create(model="claude-haiku-5-5", **ask(f"ticket {i}"))
            for i in range(20)
        )
    )
    assert len(answers) == 20
    rows = await records(services)
    assert sum(row.retries for row in rows) > 0
    assert all(row.status == "ok" for row in rows)


async def test_a_burst_of_200_stays_within_the_upstream_limits(settings: Settings) -> None:
    limit = RateLimits(rpm=180, input_tpm=10_000_000, output_tpm=10_000_000)
    tight_sandbox = AnthropicSandbox(latency_scale=0, limits={"claude-haiku-5-5": limit})
    with SandboxServer(tight_sandbox.app) as server:
        tight = settings.model_copy(
            update={
                "anthropic_base_url": server.url,
                "gateway": settings.gateway.model_copy(
                    update={"limits": {"claude-haiku-5-5": limit.model_dump()}}
                ),
            }
        )
        built = build_services(tight, registry=ConnectorRegistry.from_entry_points())
        try:
            keys = await make_tenant(built, "acme")
            app = create_app(built)
            async with anthropic.AsyncAnthropic(
                base_url="http://switchyard.test",
                api_key=keys.keys[Role.SERVICE],
                max_retries=0,
                http_client=httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)),
            ) as client:
                answers = await asyncio.gather(
                    *(
                        client.messages.create(
                            model="claude-haiku-5-5",
                            max_tokens=50,
                            messages=[{"role": "user", "content": f"ticket {i}"}],
                        )
                        for i in range(200)
                    )
                )
            assert len(answers) == 200
            assert tight_sandbox.stats.rate_limited == 0
            rows = await records(built)
            assert len(rows) == 200
            assert max(row.queue_ms for row in rows) > 100  # some waited for their turn
        finally:
            await built.aclose()


async def test_identical_concurrent_requests_share_one_upstream_call(
    connect: Callable[[str], Awaitable[Tenant]],
    sandbox: AnthropicSandbox,
    recording: Recording,
    services: Services,
) -> None:
    sandbox.faults = Faults(slow_rate=1.0, slow_seconds=0.3)  # keep the first one in flight
    acme = await connect("acme")
    answers = await asyncio.gather(
        *(acme.client.messages.create(model="claude-haiku-5-5", **ask("same")) for _ in range(8))
    )
    assert len({answer.id for answer in answers}) == 1
    assert len(recording.requests) == 1
    rows = await records(services)
    assert sorted(row.dedup_hit for row in rows) == [False] + [True] * 7
    assert sum(row.cost_picodollars for row in rows) == max(row.cost_picodollars for row in rows)


async def test_caches_and_dedup_are_never_shared_across_tenants(
    connect: Callable[[str], Awaitable[Tenant]], recording: Recording, services: Services
) -> None:
    acme, globex = await connect("acme"), await connect("globex")
    body = ask("Classify: invoice overdue", extra_body={"temperature": 0})
    first = await acme.client.messages.create(model="claude-haiku-5-5", **body)
    again = await acme.client.messages.create(model="claude-haiku-5-5", **body)
    other = await globex.client.messages.create(model="claude-haiku-5-5", **body)
    assert again.id == first.id  # temperature 0: answered from acme's response cache
    assert len(recording.requests) == 2  # globex's identical request went upstream
    assert other.id != first.id
    rows = await records(services)
    assert [(row.tenant_id == acme.id, row.cache_hit) for row in rows] == [
        (True, False),
        (True, True),
        (False, False),
    ]
    assert rows[1].cost_picodollars == 0 < rows[1].naive_cost_picodollars


async def test_opting_out_of_the_cache_goes_upstream_every_time(
    connect: Callable[[str], Awaitable[Tenant]], recording: Recording
) -> None:
    acme = await connect("acme")
    body = ask("Classify: invoice overdue", extra_body={"temperature": 0})
    for _ in range(2):
        await acme.client.messages.create(
            model="claude-haiku-5-5", extra_headers={"x-switchyard-cache": "off"}, **body
        )
    assert len(recording.requests) == 2


async def test_a_mid_stream_error_reaches_the_caller_as_an_error_event(
    connect: Callable[[str], Awaitable[Tenant]],
    sandbox: AnthropicSandbox,
    services: Services,
) -> None:
    sandbox.faults = Faults(mid_stream_error_rate=1.0)
    acme = await connect("acme")
    received: list[str] = []

    async def read_all() -> None:
        async with acme.client.messages.stream(model="claude-haiku-5-5", **ask("long")) as stream:
            async for text in stream.text_stream:
                received.append(text)

    with pytest.raises(anthropic.APIStatusError) as caught:
        await read_all()
    assert "overloaded" in str(caught.value).lower()
    assert received  # the caller saw the first deltas; nothing was replayed
    (row,) = await records(services)
    assert (row.status, row.error_type, row.upstream_calls) == ("error", "overloaded_error", 1)


async def test_beta_headers_and_unknown_fields_reach_the_upstream_unchanged(
    connect: Callable[[str], Awaitable[Tenant]], recording: Recording
) -> None:
    acme = await connect("acme")
    await acme.client.messages.create(
        model="claude-haiku-5-5",
        extra_headers={
            "anthropic-beta": "context-1m-2026-08-01,fancy-tools-2026-10-01",
            "anthropic-version": "2023-06-01",
        },
        extra_body={"future_option": {"depth": 3}, "context_management": {"edits": []}},
        **ask("hello"),
    )
    headers, body = recording.requests[0]
    assert headers["anthropic-beta"] == "context-1m-2026-08-01,fancy-tools-2026-10-01"
    assert headers["anthropic-version"] == "2023-06-01"
    # Switchyard's own key upstream (the SDK sends it as a bearer token); the tenant's stays.
    presented = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
    assert presented == SANDBOX_KEY
    sent = json.loads(body)
    assert sent["future_option"] == {"depth": 3}
    assert sent["context_management"] == {"edits": []}


async def test_caller_set_cache_control_is_respected(
    connect: Callable[[str], Awaitable[Tenant]], recording: Recording
) -> None:
    acme = await connect("acme")
    system = [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    answer = await acme.client.messages.create(
        model="claude-sonnet-5-5",
        max_tokens=100,
        system=system,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "hi"}],
    )
    sent = json.loads(recording.requests[0][1])
    assert sent["system"] == system
    assert answer.usage.cache_creation is not None
    assert answer.usage.cache_creation.ephemeral_1h_input_tokens > 1000


async def test_errors_come_back_in_the_anthropic_shape(
    connect: Callable[[str], Awaitable[Tenant]], services: Services
) -> None:
    acme = await connect("acme")
    with pytest.raises(anthropic.BadRequestError) as caught:
        await acme.client.messages.create(model="auto", **ask("no task header"))
    assert caught.value.body["error"]["switchyard_problem"] == "/problems/unknown-task"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError):
        await acme.client.messages.create(model="claude-nonexistent-9", **ask("x"))
    stranger = anthropic.AsyncAnthropic(
        base_url="http://switchyard.test",
        api_key="sy_nope_nope",
        max_retries=0,
        http_client=acme.client._client,
    )
    with pytest.raises(anthropic.AuthenticationError):
        await stranger.messages.create(model="claude-haiku-5-5", **ask("x"))
    # Data policy: a credential in the prompt is refused before anything goes upstream.
    with pytest.raises(anthropic.BadRequestError) as blocked:
        await acme.client.messages.create(
            model="claude-haiku-5-5", **ask("deploy with key AKIAIOSFODNN7EXAMPLE please")
        )
    assert blocked.value.body["error"]["switchyard_problem"] == "/problems/data-blocked"  # type: ignore[index]
    assert "AKIA" not in str(blocked.value.body)
    # An exhausted budget is 402, which the SDK does not retry.
    async with services.sessions.begin() as session:
        await put_budget(
            session,
            tenant_id=acme.id,
            scope=BudgetScope.TENANT,
            scope_value=None,
            period=BudgetPeriod.DAY,
            limit_picodollars=0,
        )
    services.gateway.governance.forget_budgets(acme.id)
    with pytest.raises(anthropic.APIStatusError) as broke:
        await acme.client.messages.create(model="claude-haiku-5-5", **ask("x"))
    assert broke.value.status_code == 402
    assert broke.value.body["error"]["type"] == "billing_error"  # type: ignore[index]
    assert broke.value.body["error"]["switchyard_problem"] == "/problems/budget-exhausted"  # type: ignore[index]


async def test_count_tokens_routes_auto_models(
    connect: Callable[[str], Awaitable[Tenant]],
) -> None:
    acme = await connect("acme")
    counted = await acme.client.messages.count_tokens(
        model="auto",
        extra_headers={"x-switchyard-task": "extract"},
        system=SYSTEM,
        messages=[{"role": "user", "content": "hello"}],
    )
    assert counted.input_tokens > 1000


async def test_identical_concurrent_streams_share_one_upstream_stream(
    connect: Callable[[str], Awaitable[Tenant]],
    sandbox: AnthropicSandbox,
    recording: Recording,
    services: Services,
) -> None:
    sandbox.faults = Faults(slow_rate=1.0, slow_seconds=0.3)
    acme = await connect("acme")

    states: list[str] = []

    async def read() -> str:
        async with acme.client.messages.stream(model="claude-haiku-5-5", **ask("same")) as s:
            states.append(s.response.headers["x-switchyard-cache"])
            return "".join([text async for text in s.text_stream])

    texts = await asyncio.gather(*(read() for _ in range(4)))
    assert sorted(states) == ["dedup", "dedup", "dedup", "miss"]
    assert len(set(texts)) == 1
    assert texts[0]
    assert len(recording.requests) == 1
    rows = await records(services)
    assert sorted(row.dedup_hit for row in rows) == [False, True, True, True]
    assert all(row.status == "ok" for row in rows)
    assert [row.cost_picodollars > 0 for row in rows if not row.dedup_hit] == [True]
    assert all(row.output_tokens == rows[0].output_tokens for row in rows)
