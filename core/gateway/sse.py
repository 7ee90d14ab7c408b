"""Server-sent events for the streaming proxy: parse, follow, and synthesise Messages streams.

* :class:`SSEParser` turns arbitrary byte chunks into :class:`SSEEvent` values (events split
  across chunks, ``\\n`` or ``\\r\\n`` line endings, comments, multi-line ``data``). An
  event still incomplete when the stream ends is discarded, as the SSE standard says.
* :class:`StreamState` follows a Messages stream event by event: usage (from
  ``message_start`` and every ``message_delta``, merged field by field, latest wins), stop
  reason, model, message id, an ``error`` event (a 200 stream can still fail), whether any
  content was produced, and the final Message. Unknown event, block and delta types are
  ignored; malformed payloads are noted in :attr:`StreamState.problems`, never raised.
* :func:`encode_event` and :func:`message_to_events` write the wire format, e.g. to replay a
  cached answer as a stream.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from core.gateway.accounting import Usage, merge_usage_objects

_BOM = b"\xef\xbb\xbf"
_STOPS = ("stop_reason", "stop_sequence")


@dataclass(frozen=True)
class SSEEvent:
    event: str
    data: bytes

    def json(self) -> Any:
        return orjson.loads(self.data)


class SSEParser:
    """Incremental SSE parser: ``feed`` each chunk, get the events it completed."""

    __slots__ = ("_buffer", "_data", "_event", "_scanned", "_started")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer known to hold no line break
        self._event = ""
        self._data: list[bytes] = []
        self._started = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buffer += chunk
        if not self._started:
            if len(self._buffer) < len(_BOM) and _BOM.startswith(self._buffer):
                return []
            if self._buffer.startswith(_BOM):
                del self._buffer[: len(_BOM)]
            self._started = True
        events: list[SSEEvent] = []
        start = 0
        while (end := self._buffer.find(b"\n", max(start, self._scanned))) >= 0:
            line = bytes(self._buffer[start:end])
            start = end + 1
            event = self._line(line[:-1] if line.endswith(b"\r") else line)
            if event is not None:
                events.append(event)
        del self._buffer[:start]
        self._scanned = len(self._buffer)
        return events

    def _line(self, line: bytes) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(b":"):
            return None  # comment
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        return None  # `id`, `retry` and unknown fields are not used by the gateway

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SSEEvent(self._event or "message", b"\n".join(self._data))
        self._event = ""
        self._data = []
        return event


@dataclass(frozen=True)
class StreamError:
    type: str
    message: str


# delta type -> (field of the delta, field of the block it extends)
_DELTAS = {
    "text_delta": ("text", "text"),
    "thinking_delta": ("thinking", "thinking"),
    "signature_delta": ("signature", "signature"),
    "input_json_delta": ("partial_json", "input"),
}


class _Block:
    __slots__ = ("base", "citations", "input", "parts")

    def __init__(self, base: dict[str, Any]) -> None:
        self.base = base
        self.parts: dict[str, list[str]] = {}  # block field -> fragments in arrival order
        self.citations: list[Any] = []
        self.input: Any = None  # tool input, parsed at content_block_stop

    def render(self) -> dict[str, Any]:
        block = dict(self.base)
        for key, parts in self.parts.items():
            if key != "input":
                block[key] = str(block.get(key) or "") + "".join(parts)
        if self.citations:
            block["citations"] = [*(block.get("citations") or []), *self.citations]
        if self.input is not None:
            block["input"] = self.input
        elif "input" in self.parts:
            with contextlib.suppress(orjson.JSONDecodeError):  # a cut stream: keep the start's
                block["input"] = orjson.loads("".join(self.parts["input"]))
        return block


class StreamState:
    """What a Messages stream has said so far; feed every event to :meth:`consume`."""

    def __init__(self) -> None:
        self.usage = Usage()
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.model: str | None = None
        self.message_id: str | None = None
        self.error: StreamError | None = None
        self.content_sent = False
        self.done = False  # message_stop seen
        self.problems: list[str] = []
        self._head: dict[str, Any] = {"type": "message", "role": "assistant"}
        self._raw_usage: dict[str, Any] = {}
        self._blocks: dict[int, _Block] = {}

    def consume(self, event: SSEEvent) -> bool:
        """Follow one event; True exactly once: on the first content delta (for timing)."""
        try:
            payload = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            self.problems.append(f"{event.event}: data is not JSON")
            return False
        if not isinstance(payload, dict):
            self.problems.append(f"{event.event}: data is not a JSON object")
            return False
        kind = event.event if event.event != "message" else str(payload.get("type", ""))
        if kind == "content_block_delta":
            first = not self.content_sent
            self.content_sent = True
            self._delta(payload)
            return first
        if kind == "message_start":
            self._start(payload.get("message"))
        elif kind == "content_block_start":
            index, block = payload.get("index"), payload.get("content_block")
            if isinstance(index, int) and isinstance(block, Mapping):
                self._blocks[index] = _Block(dict(block))
        elif kind == "content_block_stop":
            self._stop(payload.get("index"))
        elif kind == "message_delta":
            self._message_delta(payload)
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            error = payload.get("error")
            error = error if isinstance(error, Mapping) else {}
            self.error = StreamError(str(error.get("type", "error")), str(error.get("message", "")))
        return False  # ping and unknown events: nothing to follow

    def _merge_usage(self, usage: Any) -> None:
        if isinstance(usage, Mapping):
            self.usage = self.usage.merge(usage)
            self._raw_usage = merge_usage_objects(self._raw_usage, usage)

    def _start(self, message: Any) -> None:
        if not isinstance(message, Mapping):
            self.problems.append("message_start without a message")
            return
        self._head.update({k: v for k, v in message.items() if k not in ("content", "usage")})
        self.message_id = message.get("id") or self.message_id
        self.model = message.get("model") or self.model
        self.stop_reason = message.get("stop_reason") or self.stop_reason
        self._merge_usage(message.get("usage"))

    def _delta(self, payload: Mapping[str, Any]) -> None:
        index = payload.get("index")
        block = self._blocks.get(index) if isinstance(index, int) else None
        delta = payload.get("delta")
        if block is None or not isinstance(delta, Mapping):
            self.problems.append(f"content_block_delta for unknown block {payload.get('index')}")
            return
        kind = delta.get("type")
        if kind in _DELTAS:
            source, target = _DELTAS[kind]
            block.parts.setdefault(target, []).append(str(delta.get(source, "")))
        elif kind == "citations_delta":
            block.citations.append(delta.get("citation"))

    def _stop(self, index: Any) -> None:
        block = self._blocks.get(index) if isinstance(index, int) else None
        if block is None or "input" not in block.parts:
            return
        try:
            block.input = orjson.loads("".join(block.parts["input"]))
        except orjson.JSONDecodeError:
            self.problems.append(f"block {index}: tool input is not valid JSON")

    def _message_delta(self, payload: Mapping[str, Any]) -> None:
        delta = payload.get("delta")
        if isinstance(delta, Mapping):
            self._head.update({k: v for k, v in delta.items() if k not in _STOPS})
            self.stop_reason = delta.get("stop_reason") or self.stop_reason
            self.stop_sequence = delta.get("stop_sequence", self.stop_sequence)
        self._merge_usage(payload.get("usage"))

    def message(self) -> dict[str, Any]:
        """The Message assembled so far (complete once :attr:`done`)."""
        return {
            **self._head,
            "content": [self._blocks[i].render() for i in sorted(self._blocks)],
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": dict(self._raw_usage),
        }


def encode_event(name: str, data: Mapping[str, Any]) -> bytes:
    payload = orjson.dumps(data if isinstance(data, dict) else dict(data))
    return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"


def _split(text: str, pieces: int) -> list[str]:
    if not text:
        return []
    size = max(1, math.ceil(len(text) / max(1, pieces)))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _block_events(index: int, block: Mapping[str, Any], pieces: int) -> list[bytes]:
    kind = block.get("type")
    start: dict[str, Any] = dict(block)
    deltas: list[dict[str, Any]] = []
    if kind == "text":
        start["text"] = ""
        parts = _split(str(block.get("text", "")), pieces)
        deltas = [{"type": "text_delta", "text": part} for part in parts]
        if block.get("citations"):
            start["citations"] = []
            deltas += [{"type": "citations_delta", "citation": c} for c in block["citations"]]
    elif kind == "thinking":
        start["thinking"] = ""
        parts = _split(str(block.get("thinking", "")), pieces)
        deltas = [{"type": "thinking_delta", "thinking": part} for part in parts]
        if block.get("signature"):
            start["signature"] = ""
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif isinstance(block.get("input"), Mapping):  # tool_use, server_tool_use, ...
        start["input"] = {}
        raw = orjson.dumps(block["input"]).decode() if block["input"] else ""
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in _split(raw, pieces)]
    opening = {"type": "content_block_start", "index": index, "content_block": start}
    events = [encode_event("content_block_start", opening)]
    for delta in deltas:
        step = {"type": "content_block_delta", "index": index, "delta": delta}
        events.append(encode_event("content_block_delta", step))
    events.append(
        encode_event("content_block_stop", {"type": "content_block_stop", "index": index})
    )
    return events


def message_to_events(message: Mapping[str, Any], *, pieces: int = 3) -> list[bytes]:
    """A complete Message as the exact SSE sequence the API would have sent."""
    usage = message.get("usage") or {}
    head = {**message, "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}
    events = [encode_event("message_start", {"type": "message_start", "message": head})]
    for index, block in enumerate(message.get("content") or []):
        events.extend(_block_events(index, block, pieces))
    closing = {"type": "message_delta", "delta": {k: message.get(k) for k in _STOPS}}
    events.append(encode_event("message_delta", {**closing, "usage": usage}))
    events.append(encode_event("message_stop", {"type": "message_stop"}))
    return events
