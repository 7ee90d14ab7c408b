"""``AnthropicSandbox``: the SANDBOX's state and its answer flows, without the HTTP layer.

One instance owns the catalogue, the rate-limit buckets, the prompt cache, the seeded fault
draws, the deterministic responder, the batch store and the stats. :mod:`.app` puts it on
HTTP; ``sandbox.app`` is that ASGI app.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import orjson
from starlette.applications import Starlette

from core.gateway.catalog import Catalog, RateLimits
from core.sandbox.anthropic.app import create_app
from core.sandbox.anthropic.batches import BatchStore
from core.sandbox.anthropic.errors import RateLimited, injected
from core.sandbox.anthropic.faults import Fate, Faults, draw, draw_batch
from core.sandbox.anthropic.messages import (
    Turn,
    check_messages,
    check_prompt_parts,
    count_tokens,
    final_message,
    prepare,
    resolve_model,
)
from core.sandbox.anthropic.promptcache import PromptCache
from core.sandbox.anthropic.ratelimit import RateLimiter, RawHeaders
from core.sandbox.anthropic.responder import Answer, Responder, request_digest
from core.sandbox.anthropic.stats import SandboxStats
from core.sandbox.anthropic.streaming import StreamPlan, events


class AnthropicSandbox:
    """A local stand-in for the Anthropic Messages API (SANDBOX; nothing real is called).

    The official ``anthropic`` SDK works against it unchanged::

        sandbox = AnthropicSandbox(latency_scale=0)
        with SandboxServer(sandbox.app) as server:
            client = AsyncAnthropic(base_url=server.url, api_key="sk-ant-sandbox")

    Options: ``api_keys`` accepted (401 otherwise); ``limits`` overrides the catalogue's
    per-model rate limits; ``latency_scale`` scales the catalogue's latency model (time to
    first token, then output speed; 0 answers at once); ``faults`` (:class:`Faults`);
    ``text_tokens_range`` bounds the length of text answers; ``clock`` (monotonic seconds)
    drives the rate-limit buckets and cache TTLs, so tests can move time; ``seed`` fixes the
    fault draws, the answers and the batch result order; ``batch_delay`` is the seconds
    before a batch is processed; ``cache_usage_in_delta_only`` moves stream cache usage
    from ``message_start`` to ``message_delta``; ``emit_unknown_events`` adds an unknown SSE
    event type to every stream.

    Attributes: ``app`` (the ASGI app), ``stats`` (:class:`SandboxStats`), ``faults``,
    ``cache_usage_in_delta_only``, ``emit_unknown_events`` and ``latency_scale`` (all may be
    changed while running), ``batches`` (the store; ``batches.delay`` is adjustable),
    ``cache_entries``, ``limits`` and ``default_model`` (whose rate-limit headers answers
    without a model carry). :meth:`fail_next` forces the next Messages answers to any API
    error status. State lives on the server's event loop: call :meth:`reset` only while no
    request is in flight.
    """

    def __init__(
        self,
        catalog: Catalog | None = None,
        *,
        api_keys: Iterable[str] = ("sk-ant-sandbox",),
        limits: Mapping[str, RateLimits] | None = None,
        latency_scale: float = 1.0,
        faults: Faults | None = None,
        text_tokens_range: tuple[int, int] = (40, 400),
        clock: Callable[[], float] = time.monotonic,
        seed: int = 0,
        batch_delay: float = 0.05,
        cache_usage_in_delta_only: bool = False,
        emit_unknown_events: bool = False,
    ) -> None:
        self.catalog = catalog or Catalog.load()
        unknown = set(limits or {}) - set(self.catalog.models)
        if unknown:
            raise ValueError(f"limits for models not in the catalogue: {sorted(unknown)}")
        if latency_scale < 0:
            raise ValueError("latency_scale must be >= 0")
        self.api_keys = frozenset(api_keys)
        self.limits = {m.id: (limits or {}).get(m.id, m.limits) for m in self.catalog}
        self.latency_scale = latency_scale
        self.faults = faults or Faults()
        self.clock = clock
        self.seed = seed
        self.cache_usage_in_delta_only = cache_usage_in_delta_only
        self.emit_unknown_events = emit_unknown_events
        self.default_model = next((m.id for m in self.catalog if not m.legacy), "")
        self.stats = SandboxStats()
        self._rng = random.Random(seed)
        self._limiter = RateLimiter(self.limits, clock)
        self._cache = PromptCache(clock)
        self._responder = Responder(text_tokens_range, seed)
        self._batch_rng = random.Random(f"{seed}:batches")
        self.batches = BatchStore(
            self._batch_answer, delay=batch_delay, seed=seed, fault=self._batch_fault
        )
        self._forced: list[int] = []
        self._ids = itertools.count(1)
        self._id_stem = secrets.token_hex(5)
        self.app: Starlette = create_app(self)

    def reset(self) -> None:
        """Forget buckets, cache entries, batches and stats; restart the fault draws."""
        self._limiter.reset()
        self._cache.reset()
        self.batches.reset()
        self.stats = SandboxStats()
        self._rng = random.Random(self.seed)
        self._batch_rng = random.Random(f"{self.seed}:batches")
        self._forced.clear()

    def fail_next(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` Messages requests (after validation) with ``status``:
        any error status of the API (400-529; 429 carries ``retry-after: 1``)."""
        injected(status)  # unknown statuses fail here, not in a request
        self._forced.extend([status] * times)

    @property
    def cache_entries(self) -> int:
        return len(self._cache)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}01{self._id_stem}{next(self._ids):014d}"

    def ratelimit_headers(self, model_id: str | None) -> RawHeaders:
        return self._limiter.headers(model_id or self.default_model)

    # ----------------------------------------------------------------- flows

    def _begin(self, api_key: str, body: dict[str, Any]) -> tuple[Turn, Fate, Answer]:
        turn = prepare(api_key, body, self.catalog, self._cache)
        fate = draw(self.faults, self._rng)
        status = self._forced.pop(0) if self._forced else fate.status
        if status is not None:
            self.stats.injected[status] += 1
            raise injected(status)
        answer = self._responder.answer(
            body, turn.model, request_digest(body, self.seed), schema_break=fate.schema_break
        )
        try:
            self._limiter.admit(turn.model.id, turn.limited_input, turn.max_tokens)
        except RateLimited:
            self.stats.rate_limited += 1
            raise
        self._cache.commit(turn.plan)
        self._record_input(turn)
        return turn, fate, answer

    def _record_input(self, turn: Turn) -> None:
        usage = self.stats.model(turn.model.id)
        usage.input_tokens += turn.uncached_input
        usage.cache_read_input_tokens += turn.plan.read_tokens
        usage.cache_creation_input_tokens += turn.plan.write_tokens
        usage.cache_creation_5m_input_tokens += turn.plan.write_5m
        usage.cache_creation_1h_input_tokens += turn.plan.write_1h

    def _first_token_delay(self, turn: Turn) -> float:
        if not self.latency_scale:
            return 0.0
        latency = turn.model.latency
        fresh = turn.total_input - turn.plan.read_tokens
        ms = latency.ttft_ms + latency.ttft_ms_per_1k_input * fresh / 1000
        return ms / 1000 * self.latency_scale

    def _output_seconds(self, turn: Turn, tokens: int) -> float:
        return tokens * self.latency_scale / turn.model.latency.output_tokens_per_second

    async def complete(self, api_key: str, body: dict[str, Any]) -> bytes:
        """A non-streaming answer's JSON, after the modelled latency."""
        turn, fate, answer = self._begin(api_key, body)
        try:
            delay = self._first_token_delay(turn) + fate.delay
            if self.latency_scale:
                delay += self._output_seconds(turn, answer.output_tokens)
            if delay > 0:
                await asyncio.sleep(delay)
        finally:
            self._limiter.settle(turn.model.id, turn.max_tokens, answer.output_tokens)
            self.stats.model(turn.model.id).output_tokens += answer.output_tokens
        return orjson.dumps(final_message(self.new_id("msg_"), turn, answer))

    def stream(self, api_key: str, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """The SSE bytes of a streamed answer (admission happens now, before HTTP 200)."""
        turn, fate, answer = self._begin(api_key, body)
        self.stats.streams += 1
        plan = StreamPlan(
            first_token_delay=self._first_token_delay(turn) + fate.delay,
            output_seconds=self._output_seconds(turn, answer.output_tokens),
            mid_stream_error=fate.mid_stream_error,
            unknown_event=self.emit_unknown_events,
            cache_usage_in_delta_only=self.cache_usage_in_delta_only,
        )

        def done(output_tokens: int, errored: bool) -> None:
            self._limiter.settle(turn.model.id, turn.max_tokens, output_tokens)
            self.stats.model(turn.model.id).output_tokens += output_tokens
            self.stats.mid_stream_errors += errored

        return events(self.new_id("msg_"), turn, answer, plan, done)

    def count_tokens(self, body: dict[str, Any]) -> bytes:
        model = resolve_model(body, self.catalog)
        check_messages(body)
        check_prompt_parts(body)
        return orjson.dumps({"input_tokens": count_tokens(body, model)[0]})

    def _batch_fault(self) -> str | None:
        injected = draw_batch(self.faults, self._batch_rng)
        if injected is not None:
            self.stats.batch_injected[injected] += 1
        return injected

    def _batch_answer(self, api_key: str, params: dict[str, Any]) -> dict[str, Any]:
        """One batch request answered (no rate limits, no latency, batch service tier)."""
        turn = prepare(api_key, params, self.catalog, self._cache)
        answer = self._responder.answer(params, turn.model, request_digest(params, self.seed))
        self._cache.commit(turn.plan)
        self._record_input(turn)
        self.stats.model(turn.model.id).output_tokens += answer.output_tokens
        self.stats.batch_requests += 1
        message = final_message(self.new_id("msg_"), turn, answer)
        message["usage"]["service_tier"] = "batch"
        return message
