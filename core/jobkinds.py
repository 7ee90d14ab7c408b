"""The job kinds a standard worker runs, assembled in one place."""

from __future__ import annotations

from core.callbacks import deliver_job_kind
from core.flows.engine import flow_job_kind
from core.handlers import Handlers
from core.scheduler import poll_job_kind


def builtin_handlers() -> Handlers:
    return Handlers([flow_job_kind(), poll_job_kind(), deliver_job_kind()])
