"""Message Batches in the SANDBOX: an in-memory store processed in the background.

A created batch is ``in_progress`` with every request ``processing``; after ``delay``
seconds a task on the server's loop answers each request with the same model as
``/v1/messages`` (no rate limits or latency), then the batch is ``ended`` with a
``results_url``. Cancelling makes it ``canceling`` at once (cutting the delay short); the
task then marks the requests it has not answered ``canceled`` and ends the batch. Results
are JSONL (``application/x-jsonl``), one line per request keyed by ``custom_id``, in a
deterministic shuffled order. ``expires_at`` is ``created_at`` + 24 h; batches do not
expire here, but the sandbox's faults (``batch_*_rate``) can make single results
``errored`` (with the error response the API gives) or ``expired``, drawn per request from
a seeded generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from core.sandbox.anthropic.errors import ApiError, InvalidRequest, NotFound
from core.sandbox.anthropic.listing import page

MAX_REQUESTS = 100_000
EXPIRY = timedelta(hours=24)
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
YIELD_EVERY = 100  # requests answered between yields to the event loop

Process = Callable[[str, dict[str, Any]], dict[str, Any]]
# The injected result of the next request: "expired", an error type, or None (answer it).
Fault = Callable[[], str | None]
ERROR_MESSAGES = {
    "api_error": "Internal server error",
    "overloaded_error": "Overloaded",
    "invalid_request_error": "The request parameters are invalid for this model",
}


def _stamp(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


@dataclass
class Batch:
    id: str
    api_key: str
    requests: list[tuple[str, dict[str, Any]]]
    created_at: datetime
    results_base: str
    status: str = "in_progress"
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    ended_at: datetime | None = None
    cancel_initiated_at: datetime | None = None
    cancel_requested: asyncio.Event = field(default_factory=asyncio.Event)

    def counts(self) -> dict[str, int]:
        kinds = [result["type"] for result in self.results.values()]
        return {
            "processing": len(self.requests) - len(kinds),
            "succeeded": kinds.count("succeeded"),
            "errored": kinds.count("errored"),
            "canceled": kinds.count("canceled"),
            "expired": kinds.count("expired"),
        }

    def to_json(self) -> dict[str, Any]:
        ended = self.status == "ended"
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status,
            "request_counts": self.counts(),
            "created_at": _stamp(self.created_at),
            "expires_at": _stamp(self.created_at + EXPIRY),
            "ended_at": _stamp(self.ended_at),
            "cancel_initiated_at": _stamp(self.cancel_initiated_at),
            "archived_at": None,
            "results_url": f"{self.results_base}/{self.id}/results" if ended else None,
        }


def _requests(body: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    raw = body.get("requests")
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("requests: a non-empty list of requests is required")
    if len(raw) > MAX_REQUESTS:
        raise InvalidRequest(f"requests: at most {MAX_REQUESTS} requests per batch")
    seen: set[str] = set()
    out = []
    for i, item in enumerate(raw):
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        params = item.get("params") if isinstance(item, dict) else None
        if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
            raise InvalidRequest(f"requests.{i}.custom_id: 1-64 characters of [a-zA-Z0-9_-]")
        if not isinstance(params, dict):
            raise InvalidRequest(f"requests.{i}.params: Field required")
        if custom_id in seen:
            raise InvalidRequest(f"requests.{i}.custom_id: duplicate custom_id {custom_id!r}")
        seen.add(custom_id)
        out.append((custom_id, params))
    return out


def _errored(error_type: str, message: str) -> dict[str, Any]:
    """An ``errored`` result as the API writes it: the error response a Messages call
    would have answered (``{"type": "error", "error": {...}, "request_id": ...}``)."""
    return {
        "type": "errored",
        "error": {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": f"req_01{secrets.token_hex(12)}",
        },
    }


class BatchStore:
    """Batches by id, newest last; answers via ``process(api_key, params) -> message``."""

    def __init__(
        self,
        process: Process,
        *,
        delay: float = 0.05,
        seed: int = 0,
        fault: Fault = lambda: None,
    ) -> None:
        self._process = process
        self._fault = fault
        self.delay = delay
        self._seed = seed
        self._batches: dict[str, Batch] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def reset(self) -> None:
        for task in self._tasks:
            task.get_loop().call_soon_threadsafe(task.cancel)
        self._tasks.clear()
        self._batches.clear()

    def get(self, batch_id: str) -> Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise NotFound(f"message batch {batch_id!r} not found")
        return batch

    def create(self, api_key: str, body: Mapping[str, Any], results_base: str) -> Batch:
        """Store a batch and start processing it on the running loop."""
        batch = Batch(
            id=f"msgbatch_01{secrets.token_hex(12)}",
            api_key=api_key,
            requests=_requests(body),
            created_at=datetime.now(UTC),
            results_base=results_base,
        )
        self._batches[batch.id] = batch
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return batch

    def listing(self, query: Mapping[str, str]) -> dict[str, Any]:
        newest_first = [batch.to_json() for batch in reversed(self._batches.values())]
        return page(newest_first, query)

    def cancel(self, batch_id: str) -> Batch:
        batch = self.get(batch_id)
        if batch.status == "in_progress":
            batch.status = "canceling"
            batch.cancel_initiated_at = datetime.now(UTC)
            batch.cancel_requested.set()
        return batch

    def delete(self, batch_id: str) -> dict[str, Any]:
        batch = self.get(batch_id)
        if batch.status != "ended":
            raise InvalidRequest(
                f"message batch {batch_id!r} is still processing; cancel it before deleting it"
            )
        del self._batches[batch_id]
        return {"id": batch_id, "type": "message_batch_deleted"}

    def results(self, batch_id: str) -> bytes:
        """The JSONL results, shuffled deterministically (match lines by ``custom_id``)."""
        batch = self.get(batch_id)
        if batch.status != "ended":
            raise NotFound(f"message batch {batch_id!r} has no results yet; it is {batch.status}")
        lines = [
            orjson.dumps({"custom_id": custom_id, "result": result}) + b"\n"
            for custom_id, result in batch.results.items()
        ]
        random.Random(f"{self._seed}:{batch.id}").shuffle(lines)
        return b"".join(lines)

    def _answer(self, batch: Batch, params: dict[str, Any]) -> dict[str, Any]:
        injected = self._fault()
        if injected == "expired":
            return {"type": "expired"}
        if injected is not None:
            return _errored(injected, ERROR_MESSAGES.get(injected, injected))
        try:
            return {"type": "succeeded", "message": self._process(batch.api_key, params)}
        except ApiError as error:
            return _errored(error.error_type, error.message)

    async def _wait_for_start(self, batch: Batch) -> None:
        """Sleep ``delay`` seconds, or less if the batch is cancelled meanwhile.

        The API ends a cancelled batch soon after the cancel call, whatever its queue; a test
        can hold a batch in progress with a long ``delay`` and still see the cancel promptly.
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(batch.cancel_requested.wait(), self.delay)

    async def _run(self, batch: Batch) -> None:
        try:
            await self._wait_for_start(batch)
            for n, (custom_id, params) in enumerate(batch.requests, 1):
                if batch.status == "canceling":
                    break
                batch.results[custom_id] = self._answer(batch, params)
                if n % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        finally:  # a batch always ends, even if this task is cancelled or fails
            for custom_id, _ in batch.requests:
                batch.results.setdefault(custom_id, {"type": "canceled"})
            batch.status = "ended"
            batch.ended_at = datetime.now(UTC)
