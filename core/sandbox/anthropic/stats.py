"""Counters of the SANDBOX that tests and benchmarks read (plain ints, reset by ``reset()``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class ModelUsage:
    """Tokens billed for one model, summed over every answer (streams and batches included)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_creation_5m_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0


@dataclass
class SandboxStats:
    """What the sandbox has seen since it was made or last reset.

    ``requests`` counts every HTTP request; ``responses`` counts them by status (a stream
    counts as its 200 even when it later sends ``event: error``); ``rate_limited`` counts
    429s from the buckets (injected 429s are in ``injected``, keyed by status);
    ``mid_stream_errors`` counts streams ended by an error event; ``batch_requests``
    counts batch requests answered and ``batch_injected`` the injected batch results, by
    outcome (``expired``, ``api_error``, ``invalid_request_error``).
    """

    requests: int = 0
    responses: Counter[int] = field(default_factory=Counter)
    rate_limited: int = 0
    injected: Counter[int] = field(default_factory=Counter)
    streams: int = 0
    mid_stream_errors: int = 0
    batch_requests: int = 0
    batch_injected: Counter[str] = field(default_factory=Counter)
    usage: dict[str, ModelUsage] = field(default_factory=dict)

    def model(self, model_id: str) -> ModelUsage:
        usage = self.usage.get(model_id)
        if usage is None:
            usage = self.usage[model_id] = ModelUsage()
        return usage
