"""Streaming answers: bytes pass through as they arrive, while a parser follows the events.

The parser (:mod:`core.gateway.sse`) only watches: usage (merged from ``message_start`` and
every ``message_delta``), the time of the first content delta, errors, and the assembled
message for the response cache. The caller's bytes are the upstream's bytes, unbuffered.
Once bytes have gone out nothing is replayed: a broken upstream becomes one SSE ``error``
event, and the record says so.

A :class:`StreamSource` is where the bytes come from: this request's own upstream stream,
or a subscription to an identical request's stream (single-flight for streams).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import orjson

from core.gateway.redaction import StreamRestorer
from core.gateway.sse import (
    SSEEvent,
    SSEParser,
    StreamError,
    StreamState,
    encode_event,
    message_to_events,
)
from core.gateway.upstream import UpstreamError, UpstreamStream

if TYPE_CHECKING:
    from core.gateway.admission import Permit
    from core.gateway.attempts import Attempted
    from core.gateway.budgets import Reservation
    from core.gateway.calls import Completion
    from core.gateway.gateway import Gateway
    from core.gateway.prepare import Prepared
    from core.gateway.records import CallRecord
    from core.gateway.redaction import Redactor
    from core.gateway.response_cache import ResponseCache
    from core.gateway.singleflight import Subscription

MEDIA_TYPE = "text/event-stream"


class StreamSource:
    """A stream's bytes, opened (first chunk read) before the response starts."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        close: Callable[[], Awaitable[None]],
        opened: list[Attempted[UpstreamStream]],
        follower: bool,
    ) -> None:
        self._chunks = chunks
        self._close = close
        self._opened = opened  # filled by whoever opened the upstream (never a follower)
        self.follower = follower
        self._first: bytes | None = None

    @classmethod
    def own(
        cls, chunks: AsyncIterator[bytes], opened: list[Attempted[UpstreamStream]]
    ) -> StreamSource:
        close = getattr(chunks, "aclose", None)

        async def noop() -> None:
            return None

        return cls(chunks, close or noop, opened, follower=False)

    @classmethod
    def shared(
        cls, subscription: Subscription, opened: list[Attempted[UpstreamStream]]
    ) -> StreamSource:
        return cls(subscription, subscription.aclose, opened, follower=subscription.shared)

    async def open(self) -> None:
        """Read the first chunk, so errors before any byte become the HTTP answer."""
        try:
            self._first = await anext(self._chunks)
        except StopAsyncIteration:
            self._first = b""
        except BaseException:
            await self._close()
            raise

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._first:
            yield self._first
        async for chunk in self._chunks:
            yield chunk

    @property
    def permit(self) -> Permit | None:
        """The admission permit to settle: the opener's only (a follower's costs nothing)."""
        return self._opened[0].permit if self._opened and not self.follower else None

    @property
    def request_id(self) -> str | None:
        return self._opened[0].answer.request_id if self._opened else None

    async def aclose(self) -> None:
        await self._close()


class GatewayStream:
    """An open stream; iterate it once for the SSE bytes."""

    def __init__(
        self,
        gateway: Gateway,
        prepared: Prepared | None,
        record: CallRecord,
        source: StreamSource | None,
        started: float,
        cache: ResponseCache | None,
        *,
        redactor: Redactor | None = None,
        reservation: Reservation | None = None,
    ) -> None:
        self._gateway = gateway
        self._prepared = prepared
        self.record = record
        self._source = source
        self._started = started
        self._cache = cache
        self._iterated = False
        # With redacted values in the request, events are re-encoded with the originals put
        # back (a placeholder split across deltas is held until it is whole); else the
        # upstream's bytes pass through untouched.
        self._restorer = StreamRestorer(redactor) if redactor is not None else None
        self._reservation = reservation

    @property
    def upstream_request_id(self) -> str | None:
        return self._source.request_id if self._source else None

    async def abandon(self) -> None:
        """Close a stream whose body was never read (the caller left before it started):
        the upstream connection goes back to the pool and the call is still recorded."""
        if self._iterated or self._source is None:
            return
        self._iterated = True
        await self._source.aclose()
        self.record.status = "canceled"
        self.record.error_type = "client_disconnected"
        await self._finish(StreamState())

    async def __aiter__(self) -> AsyncIterator[bytes]:
        assert self._source is not None
        self._iterated = True
        clock = self._gateway._clock
        parser = SSEParser()
        state = StreamState()
        finished = False
        restorer = self._restorer
        try:
            async for chunk in self._source:
                restored: list[bytes] = []
                for event in parser.feed(chunk):
                    if state.consume(event) and self.record.ttft_ms is None:
                        self.record.ttft_ms = (clock() - self._started) * 1000
                    if restorer is not None:
                        restored.extend(_restore_event(restorer, event))
                if restorer is None:
                    yield chunk
                elif restored:
                    yield b"".join(restored)
            if restorer is not None:
                held = [encode_event(e["type"], e) for e in restorer.flush()]
                if held:
                    yield b"".join(held)
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
            await self._source.aclose()
            if not finished:
                self.record.status = "canceled"  # the caller went away mid-stream
                self.record.error_type = "client_disconnected"
            await self._finish(state)

    async def _finish(self, state: StreamState) -> None:
        record, gateway, source = self.record, self._gateway, self._source
        assert self._prepared is not None
        assert source is not None
        usage = state.usage
        permit = source.permit
        if permit is not None:
            permit.settle(
                input_tokens=usage.input_tokens + usage.cache_creation_input_tokens,
                output_tokens=usage.output_tokens,
            )
        spent = gateway.account(record, self._prepared.model, usage, charged=not source.follower)
        if record.attempts and not source.follower:
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
        # The answer as assembled from the upstream's events (redacted, as it came back);
        # none if not even its start arrived.
        gateway.audit(
            record, self._prepared.body, message if state.message_id is not None else None
        )
        await gateway.governance.settle(self._reservation, record.cost_picodollars)


def _restore_event(restorer: StreamRestorer, event: SSEEvent) -> list[bytes]:
    """The event re-encoded with originals back in its deltas (possibly held, or several)."""
    try:
        payload = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return [b"event: " + event.event.encode() + b"\ndata: " + event.data + b"\n\n"]
    if not isinstance(payload, dict):
        return [encode_event(event.event, {"value": payload})]
    return [encode_event(str(out.get("type", event.event)), out) for out in restorer.feed(payload)]


class ReplayedStream(GatewayStream):
    """A response-cache hit served as the exact SSE sequence of its message."""

    def __init__(self, gateway: Gateway, completion: Completion, started: float) -> None:
        super().__init__(gateway, None, completion.record, None, started, None)
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
