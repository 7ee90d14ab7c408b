"""The gateway: the one async API every Claude call in Switchyard goes through.

``complete`` (a whole answer) and ``stream`` (SSE bytes as they arrive) run the same steps:
:mod:`prepare` (route, output cap, compression, cache breakpoints, fingerprint) → response
cache → single-flight dedup → :mod:`attempts` (admission + retry) → :mod:`upstream` →
accounting → a :class:`~core.gateway.records.CallRecord` handed to the recorder (off the
request path) and to telemetry. Policy, redaction, budgets and prompt versions (the
governance steps) wrap this in their own modules.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from core.db.types import new_ordered_id
from core.gateway import accounting
from core.gateway.accounting import picodollars, usage_of_body
from core.gateway.admission import Admission, Priority
from core.gateway.attempts import Attempted, T, fill_attempt_usage, with_admission_and_retry
from core.gateway.budgets import Reservation
from core.gateway.call_audit import CallAuditLog
from core.gateway.calls import CallOptions, Completion
from core.gateway.catalog import Catalog, ModelInfo
from core.gateway.governance import Governance
from core.gateway.prepare import Prepared, prepare
from core.gateway.records import CallRecord, Recorder
from core.gateway.redaction import RedactionPolicy, Redactor
from core.gateway.response_cache import ResponseCache
from core.gateway.routing import Route, RoutingTable
from core.gateway.singleflight import SingleFlight, StreamFlight
from core.gateway.streaming import GatewayStream, StreamSource, replay_stream
from core.gateway.telemetry import GatewayTelemetry
from core.gateway.upstream import Upstream, UpstreamError, UpstreamResponse, UpstreamStream
from core.retry import RetryPolicy
from core.settings import GatewaySettings


@dataclass(frozen=True)
class _Shared:
    """What identical concurrent requests share: the upstream's answer."""

    response: UpstreamResponse


class Gateway:
    def __init__(
        self,
        *,
        settings: GatewaySettings,
        catalog: Catalog,
        routing: RoutingTable,
        upstream: Upstream,
        admission: Admission,
        recorder: Recorder,
        telemetry: GatewayTelemetry,
        response_cache: ResponseCache | None = None,
        governance: Governance | None = None,
        call_audit: CallAuditLog | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.routing = routing
        self.upstream = upstream
        self.admission = admission
        self.recorder = recorder
        self.telemetry = telemetry
        self.response_cache = response_cache if settings.response_cache_seconds > 0 else None
        self.governance = governance or Governance(
            policy=RedactionPolicy(), tenant_policies={}, catalog=catalog, budgets=None
        )
        self.call_audit = call_audit
        self.naive_model = catalog.get(settings.naive_model)
        self.retry_policy = RetryPolicy(
            max_attempts=settings.max_retries + 1, initial=0.5, maximum=20.0
        )
        self._clock = clock
        self._flights: SingleFlight[str, _Shared] = SingleFlight()
        self._streams: StreamFlight[str] = StreamFlight()

    # ----------------------------------------------------------------- helpers

    def _prepare(
        self, body: Mapping[str, Any], options: CallOptions, route_override: Route | None = None
    ) -> Prepared:
        return prepare(
            body,
            tenant_id=options.tenant_id,
            task=options.task,
            headers=options.headers,
            catalog=self.catalog,
            routing=self.routing,
            auto_cache=self.settings.auto_cache,
            compress=self.settings.compress if options.compress is None else options.compress,
            cache_opt_in=options.cache_response,
            model_override=route_override,
        )

    def _deadline(self, options: CallOptions, started: float) -> float:
        if options.deadline_seconds is not None:
            return started + options.deadline_seconds
        if options.priority == Priority.INTERACTIVE:
            return started + self.settings.interactive_deadline_seconds
        return started + self.settings.background_deadline_seconds

    def _new_record(
        self, body: Mapping[str, Any], options: CallOptions, prepared: Prepared, stream: bool
    ) -> CallRecord:
        requested = body.get("model")
        return CallRecord(
            id=new_ordered_id("gwr"),
            trace_id=options.trace_id,
            tenant_id=options.tenant_id,
            feature=options.feature,
            api_key_id=options.api_key_id,
            task=prepared.route.task,
            requested_model=requested if isinstance(requested, str) else None,
            model=prepared.route.model,
            stream=stream,
            priority=options.priority.name.lower(),
            prompt_hash=prepared.fingerprint,
            prompt_ref=options.prompt_ref,
            created_at=datetime.now(UTC),
            breakpoints_added=prepared.breakpoints_added,
            compression_tokens_saved=prepared.tokens_saved,
        )

    async def _attempt(
        self,
        operation: Callable[[], Awaitable[T]],
        prepared: Prepared,
        options: CallOptions,
        record: CallRecord,
        started: float,
    ) -> Attempted[T]:
        """``operation`` upstream, through admission and retry, within the call's deadline."""
        return await with_admission_and_retry(
            operation,
            admission=self.admission,
            policy=self.retry_policy,
            model=prepared.route.model,
            input_tokens=prepared.input_estimate,
            max_tokens=prepared.max_tokens,
            priority=options.priority,
            deadline=self._deadline(options, started),
            tenant=options.tenant_id,
            record=record,
            clock=self._clock,
        )

    def account(
        self, record: CallRecord, model: ModelInfo, usage: accounting.Usage, *, charged: bool
    ) -> int:
        """Add a call's tokens and costs to ``record``; returns the cost in picodollars.

        ``charged=False`` (a dedup follower or a cache hit) records the tokens the answer
        represents and what they would have cost, but no spend.
        """
        now = record.created_at
        record.input_tokens += usage.input_tokens
        record.output_tokens += usage.output_tokens
        record.cache_read_tokens += usage.cache_read_input_tokens
        record.cache_write_5m_tokens += usage.cache_write_5m
        record.cache_write_1h_tokens += usage.cache_write_1h
        spent = picodollars(accounting.cost(model, usage, at=now).total) if charged else 0
        record.cost_picodollars += spent
        record.list_cost_picodollars += picodollars(accounting.naive_cost(usage, model, at=now))
        record.naive_cost_picodollars += picodollars(
            accounting.naive_cost(usage, self.naive_model, at=now)
        )
        return spent

    def finish(self, record: CallRecord, started: float) -> None:
        record.total_ms = (self._clock() - started) * 1000
        self.telemetry.observe(record)
        self.recorder.submit(record)

    def fail(self, record: CallRecord, started: float, exc: BaseException) -> None:
        record.status = "error"
        if isinstance(exc, asyncio.CancelledError):
            record.status, record.http_status = "canceled", 499
            record.error_type = "client_disconnected"
        elif isinstance(exc, UpstreamError):
            record.http_status = exc.http_status or 502
            record.error_type = exc.error_type
        else:
            record.http_status = int(getattr(exc, "status", 500))
            record.error_type = str(getattr(exc, "problem_type", type(exc).__name__))
        self.finish(record, started)

    def audit(self, record: CallRecord, request: Mapping[str, Any], response: bytes | None) -> None:
        """Hand what went upstream (redacted) and the answer as received (JSON, not
        restored) to the encrypted call audit log, if it is on; only buffers."""
        if self.call_audit is not None:
            self.call_audit.submit(record, request, response)

    # ---------------------------------------------------------------- complete

    async def complete(self, body: Mapping[str, Any], options: CallOptions) -> Completion:
        started = self._clock()
        body, redactor = await self.governance.redact(body, options.tenant_id, options.data_policy)
        prepared = self._prepare(body, options)
        record = self._new_record(body, options, prepared, stream=False)
        record.redactions = redactor.counts() if redactor is not None else {}
        reservation: Reservation | None = None
        sent = prepared.body
        try:
            reservation = await self._reserve(prepared, options)
            completion = await self._complete_once(prepared, options, record, started)
            if options.validate is not None and not options.validate(completion.message()):
                record.validation_failed = True
                # One retry of an answer that failed validation, one tier up (counted).
                escalate = self.settings.escalate and options.escalate
                higher = self.routing.escalate(prepared.route) if escalate else None
                if higher is not None:
                    record.escalated = True
                    record.model = higher.model
                    retry = self._prepare(body, options, route_override=higher)
                    sent = retry.body
                    completion = await self._complete_once(retry, options, record, started)
        except BaseException as exc:
            self.fail(record, started, exc)
            self.audit(record, sent, None)
            await self.governance.settle(reservation, record.cost_picodollars)
            raise
        self.finish(record, started)
        self.audit(record, sent, completion.body)
        await self.governance.settle(reservation, record.cost_picodollars)
        return completion.restored(redactor)

    async def prepare_deferred(
        self, body: Mapping[str, Any], options: CallOptions
    ) -> tuple[Prepared, Redactor | None, CallRecord]:
        """The steps of :meth:`complete` before anything goes upstream (data policy and
        redaction, routing, output cap, compression, cache breakpoints) and the call's
        record, for a request sent later (:mod:`core.gateway.message_batches`)."""
        body, redactor = await self.governance.redact(body, options.tenant_id, options.data_policy)
        prepared = self._prepare(body, options)
        record = self._new_record(body, options, prepared, stream=False)
        record.redactions = redactor.counts() if redactor is not None else {}
        return prepared, redactor, record

    async def _reserve(self, prepared: Prepared, options: CallOptions) -> Reservation | None:
        return await self.governance.reserve(
            prepared, options.tenant_id, options.feature, options.api_key_id
        )

    async def _complete_once(
        self,
        prepared: Prepared,
        options: CallOptions,
        record: CallRecord,
        started: float,
    ) -> Completion:
        cache = self.response_cache if prepared.cacheable and not options.no_cache else None
        if cache is not None:
            cached = await cache.get(prepared.fingerprint)
            if cached is not None:
                record.cache_hit = True
                return self._settle(prepared, record, cached, None, charged=False)

        async def call() -> _Shared:
            attempted = await self._attempt(
                lambda: self.upstream.send(prepared.body, prepared.headers),
                prepared,
                options,
                record,
                started,
            )
            usage = usage_of_body(attempted.answer.body)
            attempted.permit.settle(
                input_tokens=usage.input_tokens + usage.cache_creation_input_tokens,
                output_tokens=usage.output_tokens,
            )
            return _Shared(attempted.answer)

        dedup = self.settings.dedup and options.dedup and not options.no_cache
        if dedup:
            shared, follower = await self._flights.run(prepared.fingerprint, call)
        else:
            shared, follower = await call(), False
        record.dedup_hit = follower
        response = shared.response
        if cache is not None and not follower:
            await cache.set(
                prepared.fingerprint, response.body, self.settings.response_cache_seconds
            )
        return self._settle(prepared, record, response.body, response.request_id, not follower)

    def _settle(
        self,
        prepared: Prepared,
        record: CallRecord,
        body: bytes,
        upstream_request_id: str | None,
        charged: bool,
    ) -> Completion:
        message = orjson.loads(body)
        usage = accounting.Usage.from_api(message.get("usage"))
        spent = self.account(record, prepared.model, usage, charged=charged)
        if charged and record.attempts:
            fill_attempt_usage(record.attempts[-1], usage, spent)
        record.stop_reason = message.get("stop_reason")
        record.response_hash = hashlib.sha256(body).hexdigest()
        return Completion(200, body, record, upstream_request_id)

    # ------------------------------------------------------------------ stream

    async def stream(self, body: Mapping[str, Any], options: CallOptions) -> GatewayStream:
        """Open a stream: returns once the upstream answered 200 (retries happen before).

        After that nothing is replayed: a failure mid-stream reaches the caller as an SSE
        ``error`` event. Identical concurrent streams of a tenant share one upstream stream
        (each reader gets every byte from the start); only the first is charged.
        """
        started = self._clock()
        body, redactor = await self.governance.redact(body, options.tenant_id, options.data_policy)
        prepared = self._prepare(body, options)
        record = self._new_record(body, options, prepared, stream=True)
        record.redactions = redactor.counts() if redactor is not None else {}
        reservation: Reservation | None = None
        try:
            reservation = await self._reserve(prepared, options)
            use_cache = prepared.cacheable and not options.no_cache
            if use_cache and self.response_cache is not None:
                cached = await self.response_cache.get(prepared.fingerprint)
                if cached is not None:
                    record.cache_hit = True
                    completion = self._settle(prepared, record, cached, None, charged=False)
                    self.audit(record, prepared.body, completion.body)
                    await self.governance.settle(reservation, 0)  # a cache hit costs nothing
                    return replay_stream(self, completion.restored(redactor), started)
            opened: list[Attempted[UpstreamStream]] = []

            async def upstream_bytes() -> AsyncIterator[bytes]:
                attempted = await self._attempt(
                    lambda: self.upstream.open_stream(prepared.body, prepared.headers),
                    prepared,
                    options,
                    record,
                    started,
                )
                opened.append(attempted)
                try:
                    async for chunk in attempted.answer.chunks():
                        yield chunk
                finally:
                    await attempted.answer.aclose()

            if self.settings.dedup and options.dedup and not options.no_cache:
                source = StreamSource.shared(
                    self._streams.subscribe(prepared.fingerprint, upstream_bytes), opened
                )
            else:
                source = StreamSource.own(upstream_bytes(), opened)
            await source.open()  # the first bytes, or the error that came instead
        except BaseException as exc:
            self.fail(record, started, exc)
            self.audit(record, prepared.body, None)
            await self.governance.settle(reservation, record.cost_picodollars)
            raise
        record.dedup_hit = source.follower
        cache = self.response_cache if use_cache and not source.follower else None
        return GatewayStream(
            self,
            prepared,
            record,
            source,
            started,
            cache,
            redactor=redactor,
            reservation=reservation,
        )

    # ------------------------------------------------------------ count_tokens

    async def count_tokens(self, body: Mapping[str, Any], options: CallOptions) -> UpstreamResponse:
        requested = body.get("model")
        route = self.routing.route(
            requested if isinstance(requested, str) else None, options.task, catalog=self.catalog
        )
        return await self.upstream.count_tokens(
            {**body, "model": route.model},
            {k: v for k, v in options.headers.items() if k.startswith("anthropic-")},
        )

    async def aclose(self) -> None:
        if self.call_audit is not None:
            await self.call_audit.aclose()
        await self.recorder.aclose()
        await self.recorder.transactions.aclose()  # the call audit's too (the factory's)
        await self.admission.aclose()
        await self.upstream.aclose()
