"""Dry run: the prompt as sent, the model, the answer and the patch, and nothing written."""

from __future__ import annotations

import pytest

from core.flows.dryrun import dry_run
from core.flows.engine import FlowUnavailable
from tests.core.flows.conftest import SECRET_NOTE, TICKET, World

FLOW = "webhook/ticket_updates"


async def test_a_dry_run_shows_everything_and_writes_nothing(world: World) -> None:
    before = world.tool.get("ticket", "T-1")
    run = await dry_run(
        world.services, FLOW, dict(TICKET), tenant_id=world.tenant_id, record_id="T-1"
    )
    assert run.prompt == "ticket_test@1"
    assert "<subject>Printer on fire</subject>" in run.user
    assert SECRET_NOTE not in run.user  # not an input
    assert "ada@example.com" not in run.user  # pseudonymized
    assert run.fields_sent == ["body", "customer_email", "subject"]
    assert run.redacted == {"pseudonymize": 1}
    assert run.model is not None
    assert run.model.startswith("claude-haiku")
    assert run.output is not None
    assert run.patch == {k: run.output[k] for k in ("category", "summary")}
    assert run.review is None  # status is open: the review rule is false
    assert run.cost_usd > 0
    (sent,) = world.upstream.bodies
    assert sent["messages"][0]["content"] == run.user  # shown exactly as sent
    assert world.tool.applied == []
    assert world.tool.get("ticket", "T-1") == before


async def test_a_dry_run_says_when_the_write_would_wait_for_review(world: World) -> None:
    record = {**TICKET, "status": "escalated"}
    run = await dry_run(world.services, FLOW, record, tenant_id=world.tenant_id, record_id="T-1")
    assert run.review == "review rule: record.status == 'escalated'"


async def test_a_dry_run_stops_where_the_engine_would(world: World) -> None:
    run = await dry_run(
        world.services, FLOW, {**TICKET, "body": " "}, tenant_id=world.tenant_id, record_id="x"
    )
    assert run.skipped == "required inputs are empty: body"
    assert run.model is None
    assert world.upstream.bodies == []


async def test_an_unknown_flow_is_a_clear_error(world: World) -> None:
    with pytest.raises(FlowUnavailable, match="webhook/nope"):
        await dry_run(world.services, "webhook/nope", {}, tenant_id=world.tenant_id, record_id="x")
