"""The flow engine end to end: the test connector's records API and the Anthropic sandbox on
real sockets, the job run as the worker runs it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from core.db.models import Job, JobStatus, ReviewItem
from core.errors import TerminalError
from core.flows.question import AnswerInvalid
from core.queue import JobQueue
from core.retry import RetryPolicy
from core.sandbox.anthropic import Faults
from tests.core.flows.conftest import SECRET_NOTE, TICKET, World


def sent_text(body: dict[str, Any]) -> str:
    return json.dumps({k: body[k] for k in ("system", "messages")})


async def test_only_allow_listed_fields_reach_claude_and_the_patch_is_written(
    world: World,
) -> None:
    job = await world.claim(await world.change())
    outcome = await world.run(job)
    (sent,) = world.upstream.bodies
    text = sent_text(sent)
    assert "Printer on fire" in text
    assert "firmware update" in text
    assert SECRET_NOTE not in text
    assert "12,000" not in text
    assert "ada@example.com" not in text  # pseudonymized
    assert "customer_" in text
    assert sent["tool_choice"] == {"type": "tool", "name": "record_result"}
    assert "model" in sent
    assert sent["model"].startswith("claude-haiku")
    steps = {step["step"]: step for step in outcome.result["steps"]}
    assert steps["inputs"]["fields"] == ["body", "customer_email", "subject"]
    assert steps["inputs"]["redacted"] == {"pseudonymize": 1}
    assert outcome.status is JobStatus.DONE
    written = world.tool.get("ticket", "T-1")
    answer = outcome.result["output"]
    assert written is not None
    assert (written["category"], written["summary"]) == (answer["category"], answer["summary"])
    assert written["internal_note"] == SECRET_NOTE  # the patch touches only its fields
    assert steps["write"]["status"] == "written"
    assert world.tool.applied == [("ticket", "T-1", f"job-{job.id}")]
    assert steps["claude"]["prompt"] == "ticket_test@1"
    assert steps["claude"]["cost_usd"] > 0


async def test_a_job_that_runs_twice_writes_once(world: World) -> None:
    job = await world.claim(await world.change())
    first = await world.run(job)
    assert first.status is JobStatus.DONE
    second = await world.run(job)  # e.g. the worker died before recording the outcome
    assert len(world.tool.applied) == 1
    steps = {step["step"]: step for step in second.result["steps"]}
    assert steps["write"]["skipped"] == "the answer changes nothing on the record"


async def test_invalid_output_gets_one_repair_then_fails_and_writes_nothing(
    world: World,
) -> None:
    world.claude.faults = Faults(schema_break_rate=1.0)
    job = await world.claim(await world.change())
    with pytest.raises(AnswerInvalid) as caught:
        await world.run(job)
    assert isinstance(caught.value, TerminalError)
    assert len(world.upstream.bodies) == 2  # the call and one repair
    repair = world.upstream.bodies[1]["messages"]
    assert [m["role"] for m in repair] == ["user", "assistant", "user"]
    assert repair[2]["content"][0]["type"] == "tool_result"
    assert repair[2]["content"][0]["is_error"] is True
    assert world.tool.applied == []
    # The job keeps its story up to the failure beside last_error.
    queue = JobQueue(world.services.sessions, worker_id="test", lease_seconds=60)
    assert await queue.fail(job, caught.value, RetryPolicy(max_attempts=1)) is JobStatus.DEAD
    async with world.services.sessions() as session:
        row = await session.get(Job, job.id)
    assert row is not None
    assert row.last_error is not None
    assert row.last_error.startswith("AnswerInvalid")
    assert row.result is not None
    assert [step["step"] for step in row.result["steps"]] == ["fetch", "inputs"]
    assert row.result["failed_at"] == "AnswerInvalid"


async def test_review_rule_true_holds_the_write_with_before_and_after(world: World) -> None:
    job = await world.claim(
        await world.change({**TICKET, "status": "escalated"}, changed_fields=["status"])
    )
    outcome = await world.run(job)
    assert outcome.status is JobStatus.AWAITING_REVIEW
    async with world.services.sessions() as session:
        item = await session.scalar(select(ReviewItem).where(ReviewItem.job_id == job.id))
    assert item is not None
    assert item.patch == {k: outcome.result["output"][k] for k in ("category", "summary")}
    assert item.before == {"category": None, "summary": None}  # not set on the ticket yet
    assert item.reasons == ["review rule: record.status == 'escalated'"]
    assert item.trace_id == job.trace_id
    assert world.tool.applied == []
    again = await world.run(job)  # a rerun proposes nothing new
    assert again.status is JobStatus.AWAITING_REVIEW
    async with world.services.sessions() as session:
        items = (await session.scalars(select(ReviewItem))).all()
    assert len(items) == 1


async def test_review_rule_false_writes_directly(world: World) -> None:
    job = await world.claim(await world.change({**TICKET, "status": "open"}))
    outcome = await world.run(job)
    assert outcome.status is JobStatus.DONE
    assert len(world.tool.applied) == 1


async def test_a_disabled_flow_skips_jobs_queued_before(world: World) -> None:
    job = await world.claim(await world.change())
    await world.set_enabled(False)
    outcome = await world.run(job)
    assert outcome.result["steps"] == [
        {"step": "enabled", "skipped": "the flow was disabled on this connection"}
    ]
    assert world.upstream.bodies == []


async def test_an_empty_required_input_skips_without_calling_claude(world: World) -> None:
    job = await world.claim(await world.change({**TICKET, "body": ""}))
    outcome = await world.run(job)
    assert "required inputs are empty: body" in outcome.result["steps"][-1]["skipped"]
    assert world.upstream.bodies == []
