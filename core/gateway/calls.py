"""What a caller hands the gateway besides the body, and what a complete call gives back.

Kept apart from :mod:`core.gateway.gateway` so callers (flows, the Messages API, tests)
can name these types without importing the gateway's machinery.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from core.gateway.admission import Priority
from core.gateway.records import CallRecord
from core.gateway.redaction import RedactionPolicy, Redactor


@dataclass(frozen=True)
class CallOptions:
    """Who is calling and how; everything a gateway step needs besides the body."""

    tenant_id: str
    trace_id: str
    feature: str = "api"
    api_key_id: str | None = None
    task: str | None = None
    priority: Priority = Priority.INTERACTIVE
    headers: Mapping[str, str] = field(default_factory=dict)
    dedup: bool = True
    cache_response: bool = False  # opt in to the response cache beyond temperature-0 calls
    no_cache: bool = False  # opt out of dedup and the response cache altogether
    compress: bool | None = None
    deadline_seconds: float | None = None
    # The caller's check of an answer (a flow's output schema): a failure is counted on the
    # call record and, with escalation on, retried once a tier up.
    validate: Callable[[Mapping[str, Any]], bool] | None = None
    escalate: bool = True  # False: the caller repairs a failed answer itself (flows do)
    prompt_ref: str | None = None  # the registry prompt version used (name@version)
    data_policy: RedactionPolicy | None = None  # a flow's override of the tenant's policy


@dataclass
class Completion:
    status: int
    body: bytes
    record: CallRecord
    upstream_request_id: str | None = None

    def message(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.body)
        return parsed

    def restored(self, redactor: Redactor | None) -> Completion:
        """The answer with the request's redacted values put back (for the caller only:
        records, caches and dedup keep the redacted form)."""
        if redactor is None:
            return self
        body = orjson.dumps(redactor.restore_message(self.message()))
        return Completion(self.status, body, self.record, self.upstream_request_id)
