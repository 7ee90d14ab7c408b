"""Prometheus metrics and OpenTelemetry spans from each finished call record.

Spans are built from the record after the fact (start and end times given explicitly), so
tracing costs nothing on the request path and the span tree matches the stored rows:
``gateway.request`` with one ``gateway.upstream`` child per upstream attempt. Without an
OpenTelemetry SDK configured the API's no-op tracer makes this free.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from core.gateway.records import CallRecord
from core.metrics import Metrics

PICO = 10**12


def _ns(record: CallRecord) -> int:
    return int(record.created_at.timestamp() * 1e9)


class GatewayTelemetry:
    def __init__(self, metrics: Metrics, tracer: trace.Tracer | None = None) -> None:
        self.metrics = metrics
        self.tracer = tracer or trace.get_tracer("switchyard.gateway")
        # prometheus_client's labels() validates and locks on every call (~4 µs each, a
        # dozen per request); the label sets are few, so their children are kept here.
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, record: CallRecord) -> None:
        m, child, model = self.metrics, self._child, record.model
        cache = "hit" if record.cache_hit else "dedup" if record.dedup_hit else "miss"
        child(m.gateway_requests, model, record.task or "none", record.status, cache).inc()
        tokens = m.gateway_tokens
        child(tokens, model, "input").inc(record.input_tokens)
        child(tokens, model, "output").inc(record.output_tokens)
        child(tokens, model, "cache_read").inc(record.cache_read_tokens)
        child(tokens, model, "cache_write").inc(
            record.cache_write_5m_tokens + record.cache_write_1h_tokens
        )
        child(m.gateway_cost, model).inc(record.cost_picodollars / PICO)
        saved = record.naive_cost_picodollars - record.cost_picodollars
        if saved > 0:
            child(m.gateway_savings, model).inc(saved / PICO)
        child(m.gateway_latency, "queue").observe(record.queue_ms / 1000)
        child(m.gateway_latency, "total").observe(record.total_ms / 1000)
        if record.ttft_ms is not None:
            child(m.gateway_latency, "ttft").observe(record.ttft_ms / 1000)
        for attempt in record.attempts:
            child(m.gateway_upstream_calls, attempt.model, str(attempt.http_status)).inc()
        self._span(record)

    def _span(self, record: CallRecord) -> None:
        start = _ns(record)
        span = self.tracer.start_span(
            "gateway.request",
            start_time=start,
            attributes={
                "switchyard.trace_id": record.trace_id,
                "switchyard.tenant_id": record.tenant_id,
                "switchyard.feature": record.feature,
                "switchyard.task": record.task or "",
                "gen_ai.system": "anthropic",
                "gen_ai.request.model": record.model,
                "gen_ai.usage.input_tokens": record.input_tokens,
                "gen_ai.usage.output_tokens": record.output_tokens,
                "switchyard.cache_read_tokens": record.cache_read_tokens,
                "switchyard.cost_usd": record.cost_picodollars / PICO,
                "switchyard.status": record.status,
                "switchyard.dedup_hit": record.dedup_hit,
                "switchyard.cache_hit": record.cache_hit,
                "switchyard.retries": record.retries,
            },
        )
        context = trace.set_span_in_context(span)
        offset = start + int(record.queue_ms * 1e6)
        for attempt in record.attempts:
            child = self.tracer.start_span(
                "gateway.upstream",
                context=context,
                start_time=offset,
                attributes={
                    "gen_ai.request.model": attempt.model,
                    "http.response.status_code": attempt.http_status,
                    "switchyard.attempt": attempt.attempt,
                    "switchyard.error_type": attempt.error_type or "",
                },
            )
            offset += int(attempt.latency_ms * 1e6)
            child.end(end_time=offset)
        span.end(end_time=start + int(record.total_ms * 1e6))
