"""Prometheus metrics. One registry per process (or per app in tests), never the global."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ingress_requests = Counter(
            "switchyard_ingress_requests",
            "Webhook deliveries by connector and outcome (accepted, duplicate, rejected).",
            ["connector", "outcome"],
            registry=r,
        )
        self.ingress_events = Counter(
            "switchyard_ingress_events",
            "Change events received, by connector and whether they were new or duplicates.",
            ["connector", "result"],
            registry=r,
        )
        self.ingress_latency = Histogram(
            "switchyard_ingress_ack_seconds",
            "Time from request to durable acknowledgement.",
            ["connector"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "switchyard_queue_jobs",
            "Unfinished jobs by status (sampled at scrape).",
            ["status"],
            registry=r,
        )
        self.jobs_finished = Counter(
            "switchyard_jobs_finished",
            "Job attempts by kind and outcome (done, retry, dead, awaiting_review, lost).",
            ["kind", "outcome"],
            registry=r,
        )
        self.job_latency = Histogram(
            "switchyard_job_run_seconds",
            "Handler run time per attempt.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.job_wait = Histogram(
            "switchyard_job_queue_wait_seconds",
            "From when a job was due (enqueued, or its retry time) to when a worker started it.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.job_retries = Counter(
            "switchyard_job_retries", "Retries scheduled, by kind.", ["kind"], registry=r
        )
        self.dead_letters = Counter(
            "switchyard_dead_letters", "Jobs moved to dead, by kind.", ["kind"], registry=r
        )
        self.leases_recovered = Counter(
            "switchyard_leases_recovered",
            "Expired leases taken back from lost workers.",
            registry=r,
        )
        self.callbacks = Counter(
            "switchyard_callback_deliveries",
            "Callback delivery attempts by outcome.",
            ["outcome"],
            registry=r,
        )
        self.gateway_requests = Counter(
            "switchyard_gateway_requests",
            "Gateway requests by model, task, status (ok, error, canceled) and cache "
            "(miss, hit, dedup).",
            ["model", "task", "status", "cache"],
            registry=r,
        )
        self.gateway_tokens = Counter(
            "switchyard_gateway_tokens",
            "Tokens by model and kind (input, output, cache_read, cache_write).",
            ["model", "kind"],
            registry=r,
        )
        self.gateway_cost = Counter(
            "switchyard_gateway_cost_dollars",
            "Spend in USD by model, from the usage the API reported.",
            ["model"],
            registry=r,
        )
        self.gateway_savings = Counter(
            "switchyard_gateway_savings_dollars",
            "The naive model at list price without caching, minus what was spent, in USD.",
            ["model"],
            registry=r,
        )
        self.gateway_latency = Histogram(
            "switchyard_gateway_latency_seconds",
            "Gateway latency by phase: queue (admission wait), ttft (streams), total.",
            ["phase"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.gateway_upstream_calls = Counter(
            "switchyard_gateway_upstream_calls",
            "Upstream calls by model and HTTP status (0: no answer).",
            ["model", "status"],
            registry=r,
        )
