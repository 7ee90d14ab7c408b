"""Data policy and budgets on the gateway's request path, against the Anthropic sandbox."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from sqlalchemy import select

from core.callbacks import create_subscription
from core.db.models import BudgetPeriod, BudgetScope, Delivery, GatewayRequest, Job
from core.gateway.admission import Priority
from core.gateway.budget_store import put_budget
from core.gateway.budgets import BudgetExhausted, worst_case_picodollars
from core.gateway.redaction import RedactionBlocked, RedactionPolicy
from core.gateway.sse import SSEParser
from core.sandbox.anthropic import AnthropicSandbox, Faults
from core.services import Services
from tests.core.flows.conftest import Recording
from tests.core.gateway.conftest import EMAIL, asking, options


@pytest.fixture(name="services")
def _services(claude_services: Services) -> Services:
    return claude_services


@pytest.fixture(name="tenant_id")
def _tenant_id(acme: str) -> str:
    return acme


async def test_personal_data_leaves_as_placeholders_and_comes_back(
    services: Services, tenant_id: str, recording: Recording
) -> None:
    completion = await services.gateway.complete(
        asking(f"Who wrote? From: {EMAIL}", system=f"Reply to {EMAIL} politely."),
        options(tenant_id),
    )
    (sent,) = recording.bodies
    assert EMAIL not in orjson.dumps(sent).decode()
    assert sent["messages"][0]["content"] == "Who wrote? From: <EMAIL_1>"
    assert sent["system"] == "Reply to <EMAIL_1> politely."  # same value, same placeholder
    (block,) = completion.message()["content"]
    assert block["input"] == {"who": EMAIL}  # restored for the caller
    await services.gateway.recorder.flush()
    async with services.sessions() as session:
        row = await session.scalar(select(GatewayRequest))
    assert row is not None
    assert row.redactions == {"email": 2}


async def test_a_streamed_answer_gets_the_originals_back_across_deltas(
    services: Services, tenant_id: str
) -> None:
    stream = await services.gateway.stream(
        asking(f"Who wrote? {EMAIL}", stream=True), options(tenant_id)
    )
    parser = SSEParser()
    partial = ""
    raw = b""
    async for chunk in stream:
        raw += chunk
        for event in parser.feed(chunk):
            payload = event.json()
            delta = payload.get("delta", {})
            if delta.get("type") == "input_json_delta":
                partial += delta["partial_json"]
    assert orjson.loads(partial) == {"who": EMAIL}
    assert b"<EMAIL_1>" not in raw


async def test_credentials_are_blocked_before_anything_leaves(
    services: Services, tenant_id: str, recording: Recording
) -> None:
    key = "sk-ant-api03-" + "x7Q2" * 20
    with pytest.raises(RedactionBlocked) as caught:
        await services.gateway.complete(asking(f"my key is {key}"), options(tenant_id))
    assert "api_key in message 0" in caught.value.detail
    assert key not in caught.value.detail
    assert recording.bodies == []
    # A flow may allow a class the tenant policy would redact (never the reverse by accident).
    allowed = RedactionPolicy(actions={"email": "allow"})
    await services.gateway.complete(
        asking(f"From: {EMAIL}"), options(tenant_id, data_policy=allowed)
    )
    assert EMAIL in orjson.dumps(recording.bodies[-1]).decode()


async def test_fifty_concurrent_calls_against_a_budget_that_fits_ten(
    services: Services, tenant_id: str, claude: AnthropicSandbox
) -> None:
    claude.faults = Faults(slow_rate=1.0, slow_seconds=2.0)  # all reserve before any settles
    body = asking("Classify: the printer is on fire")
    prepared = services.gateway._prepare(body, options(tenant_id))
    worst = worst_case_picodollars(
        services.gateway.catalog, prepared.model.id, prepared.input_estimate, prepared.max_tokens
    )
    async with services.sessions.begin() as session:
        await put_budget(
            session,
            tenant_id=tenant_id,
            scope=BudgetScope.TENANT,
            scope_value=None,
            period=BudgetPeriod.MONTH,
            limit_picodollars=worst * 10 + worst // 2,
        )
    results = await asyncio.gather(
        *(
            services.gateway.complete(
                asking(f"Classify ticket {n}: the printer is on fire"),
                options(tenant_id, priority=Priority.BACKGROUND),
            )
            for n in range(50)
        ),
        return_exceptions=True,
    )
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BudgetExhausted)]
    assert len(admitted) == 10
    assert len(refused) == 40
    assert refused[0].status == 402
    assert refused[0].problem_type == "budget-exhausted"
    # Settled at the real cost (below the worst case): the next call fits again.
    claude.faults = Faults()
    await services.gateway.complete(asking("Classify: one more"), options(tenant_id))


async def test_a_soft_threshold_sends_one_callback_per_period(
    services: Services, tenant_id: str
) -> None:
    async with services.sessions.begin() as session:
        subscription, _ = await create_subscription(
            session,
            tenant_id=tenant_id,
            url="http://127.0.0.1:9/budget-hook",
            events=["budget.threshold"],
            services=services,
        )
        await put_budget(
            session,
            tenant_id=tenant_id,
            scope=BudgetScope.TENANT,
            scope_value=None,
            period=BudgetPeriod.MONTH,
            limit_picodollars=10**12,  # $1: the worst case of a small call fits many times
            soft_thresholds=[0.000001],  # crossed by the first call's real cost
        )
    for n in range(2):
        await services.gateway.complete(asking(f"Classify {n}"), options(tenant_id))
    async with services.sessions() as session:
        deliveries = list(await session.scalars(select(Delivery)))
        senders = list(await session.scalars(select(Job).where(Job.kind == "callback.deliver")))
    (delivery,) = deliveries  # once per period, not once per call
    assert delivery.event_type == "budget.threshold"
    assert delivery.job_id is None
    assert delivery.subscription_id == subscription.id
    event = delivery.payload["budget_threshold"]
    assert event["threshold"] == 0.000001
    assert event["budget"]["scope"] == "tenant"
    assert delivery.payload["type"] == "budget.threshold"
    assert [job.payload["delivery_id"] for job in senders] == [delivery.id]
