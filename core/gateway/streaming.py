"""Streaming answers: bytes pass through as they arrive, while a parser follows the events.

The parser (:mod:`core.gateway.sse`) only watches: usage (merged from ``message_start`` and
every ``message_delta``), the time of the first content delta, errors, and the assembled
message for the response cache. The caller's bytes are the upstream's bytes, unbuffered.
Once bytes have gone out nothing is replayed: a broken upstream becomes one SSE ``error``
event, and the record says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import orjson

from core.gateway.sse import SSEParser, StreamError, StreamState, encode_event, message_to_events
from core.gateway.upstream import UpstreamError, UpstreamStream

if TYPE_CHECKING:
    from core.gateway.attempts import Attempted
    from core.gateway.gateway import Completion, Gateway
    from core.gateway.prepare import Prepared
    from core.gateway.records import CallRecord
    from core.gateway.response_cache import ResponseCache

MEDIA_TYPE = "text/event-stream"


class GatewayStream:
    """An open stream; iterate it once for the SSE bytes."""

    def __init__(
        self,
        gateway: Gateway,
        prepared: Prepared,
        record: CallRecord,
        attempted: Attempted[UpstreamStream] | None,
        started: float,
        cache: ResponseCache | None,
    ) -> None:
        self._gateway = gateway
        self._prepared = prepared
        self.record = record
        self._attempted = attempted
        self._started = started
        self._cache = cache
        self._iterated = False

    async def abandon(self) -> None:
        """Close a stream whose body was never read (the caller left before it started):
        the upstream connection goes back to the pool and the call is still recorded."""
        if self._iterated or self._attempted is None:
            return
        self._iterated = True
        await self._attempted.answer.aclose()
        self.record.status = "canceled"
        self.record.error_type = "client_disconnected"
        await self._finish(StreamState())

    @property
    def upstream_request_id(self) -> str | None:
        return self._attempted.answer.request_id if self._attempted else None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        assert self._attempted is not None
        self._iterated = True
        upstream = self._attempted.answer
        clock = self._gateway._clock
        parser = SSEParser()
        state = StreamState()
        finished = False
        try:
            async for chunk in upstream.chunks():
                for event in parser.feed(chunk):
                    if state.consume(event) and self.record.ttft_ms is None:
                        self.record.ttft_ms = (clock() - self._started) * 1000
                yield chunk
            finished = True
        except UpstreamError as exc:
            state.error = StreamError("api_error", str(exc))
            yield encode_event(
                "error",
                {
                    "type": "error",
                    "error": {"type": "api_error", "message": "the upstream stream broke"},
                },
            )
            finished = True
        finally:
            await upstream.aclose()
            if not finished:
                self.record.status = "canceled"  # the caller went away mid-stream
                self.record.error_type = "client_disconnected"
            await self._finish(state)

    async def _finish(self, state: StreamState) -> None:
        record, gateway = self.record, self._gateway
        usage = state.usage
        assert self._attempted is not None
        self._attempted.permit.settle(
            input_tokens=usage.input_tokens + usage.cache_creation_input_tokens,
            output_tokens=usage.output_tokens,
        )
        spent = gateway.account(record, self._prepared.model, usage, charged=True)
        if record.attempts:
            attempt = record.attempts[-1]
            attempt.input_tokens = usage.input_tokens
            attempt.output_tokens = usage.output_tokens
            attempt.cache_read_tokens = usage.cache_read_input_tokens
            attempt.cache_write_tokens = usage.cache_creation_input_tokens
            attempt.cost_picodollars = spent
            attempt.ttft_ms = record.ttft_ms
        record.stop_reason = state.stop_reason
        message = orjson.dumps(state.message())
        record.response_hash = hashlib.sha256(message).hexdigest()
        if state.error is not None:
            record.status = "error"
            record.error_type = state.error.type
        elif self._cache is not None and state.done:
            await self._cache.set(
                self._prepared.fingerprint, message, gateway.settings.response_cache_seconds
            )
        gateway.finish(record, self._started)


class ReplayedStream(GatewayStream):
    """A response-cache hit served as the exact SSE sequence of its message."""

    def __init__(self, gateway: Gateway, completion: Completion, started: float) -> None:
        super().__init__(gateway, None, completion.record, None, started, None)  # type: ignore[arg-type]
        self._completion = completion

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self._iterated = True
        events = message_to_events(self._completion.message())
        self.record.ttft_ms = (self._gateway._clock() - self._started) * 1000
        try:
            for event in events:
                yield event
        finally:
            self._gateway.finish(self.record, self._started)


def replay_stream(gateway: Gateway, completion: Completion, started: float) -> GatewayStream:
    return ReplayedStream(gateway, completion, started)
