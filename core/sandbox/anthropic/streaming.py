"""Server-sent events of a streamed answer, in the API's order, paced like the model.

``message_start`` (empty content, initial usage with ``output_tokens: 1``) → ``ping`` → (time
to first token) → per block ``content_block_start`` / ``content_block_delta``… /
``content_block_stop`` (``text_delta`` chunks of a few tokens; ``input_json_delta`` with the
JSON in several ``partial_json`` fragments, the first one empty as the API sends it) with
a ``ping`` every :data:`PING_EVERY` deltas → ``message_delta`` (stop reason, cumulative
usage) → ``message_stop``. Each event is yielded as soon as it is due, so the server sends
it at once.

Options: a mid-stream error (after some deltas, ``event: error`` with ``overloaded_error``
and the stream ends), an unknown event type after the first delta, and cache usage only in
``message_delta`` (``message_start`` then carries just input and output tokens).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from core.sandbox.anthropic.errors import error_body
from core.sandbox.anthropic.messages import Turn, message, usage
from core.sandbox.anthropic.responder import Answer

PING_EVERY = 20
TEXT_CHUNK_TOKENS = 4
JSON_FRAGMENTS = 4
UNKNOWN_EVENT = "sandbox_unknown_event"


def sse(event: str, data: bytes) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def _event(payload: dict[str, Any]) -> bytes:
    return sse(payload["type"], orjson.dumps(payload))


PING = _event({"type": "ping"})
MESSAGE_STOP = _event({"type": "message_stop"})


@dataclass(frozen=True)
class StreamPlan:
    """How one stream behaves: pacing (seconds) and injected oddities."""

    first_token_delay: float = 0.0
    output_seconds: float = 0.0
    mid_stream_error: bool = False
    unknown_event: bool = False
    cache_usage_in_delta_only: bool = False


def _deltas(block: dict[str, Any], chars_per_token: float) -> list[dict[str, Any]]:
    if block["type"] == "tool_use":
        text = orjson.dumps(block["input"]).decode()
        size = max(1, math.ceil(len(text) / JSON_FRAGMENTS))
        parts = [""] + [text[i : i + size] for i in range(0, len(text), size)]
        return [{"type": "input_json_delta", "partial_json": part} for part in parts]
    text = block["text"]
    size = max(1, math.ceil(TEXT_CHUNK_TOKENS * chars_per_token))
    return [{"type": "text_delta", "text": text[i : i + size]} for i in range(0, len(text), size)]


def _start_block(block: dict[str, Any]) -> dict[str, Any]:
    if block["type"] == "tool_use":
        return {**block, "input": {}}
    return {**block, "text": ""}


async def events(
    message_id: str,
    turn: Turn,
    answer: Answer,
    plan: StreamPlan,
    done: Callable[[int, bool], None],
) -> AsyncIterator[bytes]:
    """The stream's bytes, event by event; ``done(output_tokens_sent, errored)`` at the end
    (also when the client goes away)."""
    with_cache = not plan.cache_usage_in_delta_only
    start = message(message_id, turn, [], None, usage(turn, 1, with_cache=with_cache))
    per_block = [_deltas(block, turn.model.chars_per_token) for block in answer.content]
    total = sum(len(d) for d in per_block) or 1
    pause = plan.output_seconds / total
    error_after = max(1, total // 2) if plan.mid_stream_error else -1
    sent = 0
    errored = False
    try:
        yield _event({"type": "message_start", "message": start})
        yield PING
        if plan.first_token_delay > 0:
            await asyncio.sleep(plan.first_token_delay)
        for index, (block, deltas) in enumerate(zip(answer.content, per_block, strict=True)):
            yield _event(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": _start_block(block),
                }
            )
            for delta in deltas:
                if pause > 0:
                    await asyncio.sleep(pause)
                yield _event({"type": "content_block_delta", "index": index, "delta": delta})
                sent += 1
                if sent == error_after:
                    errored = True
                    yield sse("error", error_body("overloaded_error", "Overloaded"))
                    return
                if sent == 1 and plan.unknown_event:
                    yield _event({"type": UNKNOWN_EVENT, "note": "clients must ignore this"})
                if sent % PING_EVERY == 0:
                    yield PING
            yield _event({"type": "content_block_stop", "index": index})
        final_usage = usage(turn, answer.output_tokens)
        del final_usage["service_tier"]  # cumulative counts only, as the API sends them
        delta = {"stop_reason": answer.stop_reason, "stop_sequence": None}
        yield _event({"type": "message_delta", "delta": delta, "usage": final_usage})
        yield MESSAGE_STOP
    finally:
        # Output billed so far: all of it, or the share of deltas sent before an error.
        done(
            answer.output_tokens if sent >= total else answer.output_tokens * sent // total, errored
        )
