"""Message Batches through the SDK: create, retrieve, list, cancel, results, delete."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from anthropic import AsyncAnthropic, BadRequestError, NotFoundError

from core.sandbox.anthropic import AnthropicSandbox
from tests.core.sandbox.anthropic.conftest import MODEL, user


def _requests(count: int, *, broken: int | None = None) -> list[Any]:
    items: list[Any] = [
        {
            "custom_id": f"req-{i}",
            "params": {"model": MODEL, "max_tokens": 50, "messages": user(f"question {i}")},
        }
        for i in range(count)
    ]
    if broken is not None:
        items[broken]["params"]["model"] = "claude-nope"
    return items


async def _ended(client: AsyncAnthropic, batch_id: str) -> Any:
    for _ in range(400):
        batch = await client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        await asyncio.sleep(0.01)
    raise AssertionError("the batch did not end")


async def test_a_batch_runs_to_the_end_and_its_results_are_keyed_by_custom_id(
    client: AsyncAnthropic, sandbox: AnthropicSandbox, url: str
) -> None:
    created = await client.messages.batches.create(requests=_requests(12, broken=3))
    assert created.id.startswith("msgbatch_")
    assert created.type == "message_batch"
    assert created.processing_status == "in_progress"
    assert created.results_url is None
    assert created.request_counts.processing == 12
    assert created.expires_at - created.created_at == timedelta(hours=24)
    batch = await _ended(client, created.id)
    assert batch.ended_at is not None
    assert batch.results_url == f"{url}/v1/messages/batches/{created.id}/results"
    counts = batch.request_counts
    assert (counts.processing, counts.succeeded, counts.errored, counts.canceled) == (0, 11, 1, 0)
    results = [item async for item in await client.messages.batches.results(created.id)]
    by_id = {item.custom_id: item.result for item in results}
    assert set(by_id) == {f"req-{i}" for i in range(12)}
    assert [item.custom_id for item in results] != sorted(by_id, key=lambda c: int(c[4:]))
    errored = by_id["req-3"]
    assert errored.type == "errored"
    assert errored.error.error.type == "not_found_error"
    succeeded = by_id["req-0"]
    assert succeeded.type == "succeeded"
    assert succeeded.message.content[0].type == "text"
    assert succeeded.message.usage.service_tier == "batch"
    plain = await client.messages.create(model=MODEL, max_tokens=50, messages=user("question 0"))
    assert plain.content == succeeded.message.content
    again = [item.custom_id async for item in await client.messages.batches.results(created.id)]
    assert again == [item.custom_id for item in results]  # shuffled, but deterministically
    assert sandbox.stats.batch_requests == 11


async def test_results_are_jsonl(client: AsyncAnthropic, http: httpx.AsyncClient) -> None:
    created = await client.messages.batches.create(requests=_requests(2))
    early = await http.get(f"/v1/messages/batches/{created.id}/results")
    assert early.status_code == 404
    await _ended(client, created.id)
    response = await http.get(f"/v1/messages/batches/{created.id}/results")
    assert response.headers["content-type"] == "application/x-jsonl"
    lines = response.content.decode().splitlines()
    assert len(lines) == 2
    assert all(line.startswith('{"custom_id":') for line in lines)


async def test_cancelling_goes_through_canceling_to_ended(
    make_sandbox: Any, client: AsyncAnthropic
) -> None:
    make_sandbox(batch_delay=60)
    created = await client.messages.batches.create(requests=_requests(3))
    canceling = await client.messages.batches.cancel(created.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    batch = await _ended(client, created.id)
    assert batch.request_counts.canceled == 3
    assert batch.request_counts.succeeded == 0
    results = [item async for item in await client.messages.batches.results(created.id)]
    assert {item.result.type for item in results} == {"canceled"}


async def test_listing_pages_newest_first(client: AsyncAnthropic) -> None:
    ids = [(await client.messages.batches.create(requests=_requests(1))).id for _ in range(5)]
    first = await client.messages.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[::-1][:2]
    assert first.has_more
    assert first.first_id == ids[4]
    assert first.last_id == ids[3]
    everything = [batch.id async for batch in client.messages.batches.list(limit=2)]
    assert everything == ids[::-1]
    before = await client.messages.batches.list(before_id=ids[1], limit=2)
    assert [b.id for b in before.data] == [ids[3], ids[2]]
    assert before.has_more


async def test_deleting_needs_an_ended_batch(make_sandbox: Any, client: AsyncAnthropic) -> None:
    make_sandbox(batch_delay=60)
    created = await client.messages.batches.create(requests=_requests(1))
    with pytest.raises(BadRequestError):
        await client.messages.batches.delete(created.id)
    await client.messages.batches.cancel(created.id)
    await _ended(client, created.id)
    deleted = await client.messages.batches.delete(created.id)
    assert (deleted.id, deleted.type) == (created.id, "message_batch_deleted")
    with pytest.raises(NotFoundError):
        await client.messages.batches.retrieve(created.id)


async def test_bad_batches_are_rejected(http: httpx.AsyncClient) -> None:
    duplicate = _requests(2)
    duplicate[1]["custom_id"] = "req-0"
    bodies: list[dict[str, Any]] = [
        {"requests": []},
        {"requests": duplicate},
        {"requests": [{"custom_id": "a"}]},
    ]
    for body in bodies:
        response = await http.post("/v1/messages/batches", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["type"] == "invalid_request_error"
