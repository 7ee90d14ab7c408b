"""The gateway's own API (as flows call it) against the Anthropic sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr
from sqlalchemy import select

from core.auth import create_tenant
from core.db.models import GatewayRequest, UpstreamCall
from core.gateway.admission import Priority
from core.gateway.calls import CallOptions
from core.gateway.gateway import Gateway
from core.gateway.telemetry import GatewayTelemetry
from core.sandbox import SandboxServer
from core.sandbox.anthropic import AnthropicSandbox, Faults
from core.services import Services, build_services
from core.settings import Settings

TOOL = {
    "name": "extract",
    "input_schema": {
        "type": "object",
        "properties": {"amount": {"type": "number"}, "currency": {"type": "string"}},
        "required": ["amount", "currency"],
    },
}


@pytest.fixture
def sandbox() -> AnthropicSandbox:
    return AnthropicSandbox(latency_scale=0, seed=3)


@pytest.fixture
def upstream(sandbox: AnthropicSandbox) -> Iterator[SandboxServer]:
    with SandboxServer(sandbox.app) as server:
        yield server


@pytest.fixture
async def services(settings: Settings, upstream: SandboxServer) -> AsyncIterator[Services]:
    built = build_services(
        settings.model_copy(
            update={
                "anthropic_base_url": upstream.url,
                "anthropic_api_key": SecretStr("sk-ant-sandbox"),
            }
        )
    )
    yield built
    await built.aclose()


@pytest.fixture
async def tenant_id(services: Services) -> str:
    async with services.sessions.begin() as session:
        return (await create_tenant(session, "acme")).id


def options(tenant_id: str, **extra: object) -> CallOptions:
    return CallOptions(tenant_id=tenant_id, trace_id="t" * 32, **extra)  # type: ignore[arg-type]


def extraction(text: str) -> dict[str, object]:
    return {
        "model": "auto",
        "tools": [TOOL],
        "tool_choice": {"type": "tool", "name": "extract"},
        "messages": [{"role": "user", "content": text}],
    }


async def stored(services: Services) -> tuple[list[GatewayRequest], list[UpstreamCall]]:
    await services.gateway.recorder.flush()
    async with services.sessions() as session:
        requests = list(await session.scalars(select(GatewayRequest)))
        calls = list(await session.scalars(select(UpstreamCall).order_by(UpstreamCall.id)))
        return requests, calls


async def test_an_answer_failing_validation_is_retried_one_tier_up(
    services: Services, tenant_id: str
) -> None:
    seen: list[str] = []

    def valid(message: object) -> bool:
        assert isinstance(message, dict)
        seen.append(message["model"])
        return message["model"] != "claude-haiku-5-5"  # the small tier's answer "fails"

    completion = await services.gateway.complete(
        extraction("Invoice total 1,200 EUR"),
        options(tenant_id, task="extract", priority=Priority.BACKGROUND, validate=valid),
    )
    assert completion.message()["model"] == "claude-sonnet-5-5"
    assert seen == ["claude-haiku-5-5"]  # validated once; the escalated answer is returned
    (row,), calls = await stored(services)
    assert row.escalated
    assert (row.model, row.upstream_calls) == ("claude-sonnet-5-5", 2)
    assert [call.model for call in calls] == ["claude-haiku-5-5", "claude-sonnet-5-5"]
    assert row.cost_picodollars == sum(call.cost_picodollars for call in calls)
    assert row.priority == "background"


async def test_explicit_models_are_not_escalated(services: Services, tenant_id: str) -> None:
    body = {**extraction("x"), "model": "claude-haiku-5-5"}
    completion = await services.gateway.complete(
        body, options(tenant_id, task="extract", validate=lambda message: False)
    )
    assert completion.message()["model"] == "claude-haiku-5-5"
    (row,), _ = await stored(services)
    assert not row.escalated
    assert row.upstream_calls == 1


async def test_retries_are_recorded_per_upstream_call(
    services: Services, tenant_id: str, sandbox: AnthropicSandbox
) -> None:
    sandbox.faults = Faults(rate_500=1.0)
    gateway: Gateway = services.gateway
    gateway.retry_policy = type(gateway.retry_policy)(max_attempts=3, initial=0.001, maximum=0.01)
    with pytest.raises(Exception, match="500"):
        await gateway.complete(extraction("x"), options(tenant_id, task="extract"))
    (row,), calls = await stored(services)
    assert (row.status, row.http_status, row.error_type, row.retries) == (
        "error",
        500,
        "api_error",
        2,
    )
    assert [call.http_status for call in calls] == [500, 500, 500]


async def test_compression_is_measured_in_tokens(services: Services, tenant_id: str) -> None:
    record = {"id": "0015", "name": "Acme", "notes": None, "tags": [], "address": {"city": ""}}
    document = orjson.dumps({"records": [record] * 200}, option=orjson.OPT_INDENT_2).decode()
    body = {
        "model": "auto",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "document", "source": {"type": "text", "data": document}},
                    {"type": "text", "text": "Summarize the accounts."},
                ],
            }
        ],
    }
    await services.gateway.complete(body, options(tenant_id, task="summarize", compress=True))
    (row,), _ = await stored(services)
    assert row.compression_tokens_saved > 1000


async def test_each_call_is_a_span_with_its_attempts(services: Services, tenant_id: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    services.gateway.telemetry = GatewayTelemetry(
        services.metrics, provider.get_tracer("switchyard.gateway")
    )
    await services.gateway.complete(extraction("x"), options(tenant_id, task="classify"))
    spans = {span.name: span for span in exporter.get_finished_spans()}
    request, upstream = spans["gateway.request"], spans["gateway.upstream"]
    assert upstream.parent is not None
    assert upstream.parent.span_id == request.context.span_id
    assert request.attributes is not None
    assert request.attributes["gen_ai.request.model"] == "claude-haiku-5-5"
    assert request.attributes["switchyard.tenant_id"] == tenant_id
    sample = services.metrics.registry.get_sample_value(
        "switchyard_gateway_requests_total",
        {"model": "claude-haiku-5-5", "task": "classify", "status": "ok", "cache": "miss"},
    )
    assert sample == 1.0
