"""Injected Message Batches results: errored with the API's error response, expired;
seeded and per instance like the sandbox's other faults."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import orjson
import pytest

from core.sandbox import SandboxServer
from core.sandbox.anthropic import AnthropicSandbox
from core.sandbox.anthropic.faults import Faults, draw_batch


def test_batch_fault_rates_are_probabilities() -> None:
    with pytest.raises(ValueError, match="batch_expired_rate"):
        Faults(batch_expired_rate=1.5)


def test_batch_faults_draw_each_outcome_at_its_rate() -> None:
    rng = random.Random(1)
    faults = Faults(batch_errored_rate=0.1, batch_invalid_rate=0.05, batch_expired_rate=0.1)
    drawn = [draw_batch(faults, rng) for _ in range(20_000)]
    assert 0.08 < drawn.count("expired") / len(drawn) < 0.12
    assert 0.07 < drawn.count("api_error") / len(drawn) < 0.11  # of the 90% not expired
    assert 0.03 < drawn.count("invalid_request_error") / len(drawn) < 0.06
    assert draw_batch(Faults(), rng) is None


async def _results(claude: AnthropicSandbox, count: int) -> list[dict[str, Any]]:
    params = {
        "model": "claude-haiku-5-5",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
    }
    requests = [{"custom_id": f"r{n}", "params": params} for n in range(count)]
    with SandboxServer(claude.app) as server:
        async with httpx.AsyncClient(
            base_url=server.url,
            headers={"x-api-key": "sk-ant-sandbox", "anthropic-version": "2023-06-01"},
        ) as client:
            created = await client.post("/v1/messages/batches", json={"requests": requests})
            batch_id = created.json()["id"]
            for _ in range(200):
                state = (await client.get(f"/v1/messages/batches/{batch_id}")).json()
                if state["processing_status"] == "ended":
                    break
                await asyncio.sleep(0.02)
            body = (await client.get(f"/v1/messages/batches/{batch_id}/results")).content
    return [orjson.loads(line) for line in body.splitlines()]


async def test_expired_results_carry_only_their_type() -> None:
    claude = AnthropicSandbox(latency_scale=0, faults=Faults(batch_expired_rate=1.0))
    lines = await _results(claude, 3)
    assert [line["result"] for line in lines] == [{"type": "expired"}] * 3
    assert claude.stats.batch_injected["expired"] == 3
    assert claude.stats.batch_requests == 0  # never processed, never billed


async def test_sandbox_batch_faults_use_the_api_wire_format() -> None:
    claude = AnthropicSandbox(latency_scale=0, faults=Faults(batch_invalid_rate=1.0))
    params = {"model": "claude-haiku-5-5", "max_tokens": 10, "messages": []}
    params["messages"] = [{"role": "user", "content": "hi"}]
    with SandboxServer(claude.app) as server:
        async with httpx.AsyncClient(
            base_url=server.url,
            headers={"x-api-key": "sk-ant-sandbox", "anthropic-version": "2023-06-01"},
        ) as client:
            created = (
                await client.post(
                    "/v1/messages/batches",
                    json={"requests": [{"custom_id": "a", "params": params}]},
                )
            ).json()
            for _ in range(100):
                state = (await client.get(f"/v1/messages/batches/{created['id']}")).json()
                if state["processing_status"] == "ended":
                    break
                await asyncio.sleep(0.02)
            assert state["request_counts"]["errored"] == 1
            line = orjson.loads(
                (await client.get(f"/v1/messages/batches/{created['id']}/results")).content
            )
    error = line["result"]["error"]
    assert line["result"]["type"] == "errored"
    assert error["type"] == "error"
    assert error["request_id"].startswith("req_")
    assert error["error"]["type"] == "invalid_request_error"
    assert claude.stats.batch_injected["invalid_request_error"] == 1
