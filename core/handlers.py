"""Job kinds and their handlers.

A handler is ``async def handler(ctx: JobContext) -> Outcome | None`` and must be
idempotent: it may run again after a crash, and ``ctx.job.idempotency_key`` (stable across
attempts) is what it hands to anything outside the database.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.db.models import JobStatus
from core.queue import ClaimedJob
from core.retry import RetryPolicy

if TYPE_CHECKING:
    from core.services import Services


@dataclass(frozen=True)
class Outcome:
    """What a handler reports. ``AWAITING_REVIEW`` parks the job for a reviewer."""

    result: dict[str, Any] = field(default_factory=dict)
    status: JobStatus = JobStatus.DONE


@dataclass(frozen=True)
class JobContext:
    job: ClaimedJob
    services: Services


Handler = Callable[[JobContext], Awaitable[Outcome | None]]


@dataclass(frozen=True)
class JobKind:
    name: str
    handler: Handler
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    notify: bool = True  # finished jobs of this kind trigger subscriber callbacks


class Handlers:
    """The job kinds one worker process runs. Workers claim only kinds they know."""

    def __init__(self, kinds: list[JobKind] | None = None) -> None:
        self._kinds: dict[str, JobKind] = {}
        for kind in kinds or []:
            self.register(kind)

    def register(self, kind: JobKind) -> None:
        if kind.name in self._kinds:
            raise ValueError(f"job kind {kind.name!r} registered twice")
        self._kinds[kind.name] = kind

    def __getitem__(self, name: str) -> JobKind:
        return self._kinds[name]

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __iter__(self) -> Iterator[JobKind]:
        return iter(self._kinds.values())

    def names(self) -> list[str]:
        return sorted(self._kinds)
