"""Restore placeholders in a streamed answer, delta by delta, holding back as little as possible.

The model may write ``<EMAIL_1>`` across deltas (``<EMA`` + ``IL_1>``). Per content block
index, :class:`StreamRestorer` keeps back only a tail that could still grow into a
placeholder (from the last ``<``, if what follows is a placeholder prefix), sends all the
rest at once, and flushes what it held at ``content_block_stop``. Latency stays that of the
upstream except for the few characters of a possible placeholder.

It works on parsed event dicts (``feed(event) -> events to send``) so the gateway keeps its
own SSE parser and encoder. In ``input_json_delta`` the text is raw JSON, and a placeholder
sits inside a JSON string, so the original is JSON-escaped before it goes in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from core.gateway.redaction.placeholders import Redactor

# A tail that may still become a placeholder: "<", "<EMA", "<EMAIL_", "<EMAIL_12"
_PREFIX = re.compile(r"<(?:[A-Z][A-Z_]*(?:_\d*)?)?\Z")
_MAX_HOLD = 48  # longer tails cannot be one of our placeholders; send them

# delta type -> the field holding its text
_FIELDS = {"text_delta": "text", "input_json_delta": "partial_json"}


def _json_escape(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)[1:-1]


class StreamRestorer:
    """Feed every parsed stream event; send what :meth:`feed` returns, in order."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._held: dict[int, tuple[str, str]] = {}  # index -> (delta type, held text)

    def _restore(self, kind: str, text: str) -> str:
        escape: Callable[[str], str] | None = _json_escape if kind == "input_json_delta" else None
        return self._redactor.restore(text, escape)

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        index = event.get("index")
        if kind == "content_block_delta" and isinstance(index, int):
            return self._delta(event, index)
        if kind == "content_block_stop" and isinstance(index, int):
            return [*self._flush(index), dict(event)]
        return [dict(event)]

    def _delta(self, event: Mapping[str, Any], index: int) -> list[dict[str, Any]]:
        delta = event.get("delta")
        kind = delta.get("type") if isinstance(delta, Mapping) else None
        field = _FIELDS.get(kind) if isinstance(kind, str) else None
        if field is None or not isinstance(delta, Mapping) or not isinstance(kind, str):
            return [dict(event)]  # thinking, signature, citations: no placeholders restored
        held_kind, held = self._held.pop(index, (kind, ""))
        out: list[dict[str, Any]] = []
        if held and held_kind != kind:  # a block never mixes delta types; be safe anyway
            out += self._emit(index, held_kind, held)
            held = ""
        text = held + str(delta.get(field, ""))
        cut = text.rfind("<")
        if cut >= 0 and len(text) - cut <= _MAX_HOLD and _PREFIX.match(text, cut):
            text, tail = text[:cut], text[cut:]
            self._held[index] = (kind, tail)
        if text:
            rewritten = {**delta, field: self._restore(kind, text)}
            out.append({**event, "delta": rewritten})
        return out

    def _emit(self, index: int, kind: str, text: str) -> list[dict[str, Any]]:
        delta = {"type": kind, _FIELDS[kind]: self._restore(kind, text)}
        return [{"type": "content_block_delta", "index": index, "delta": delta}]

    def _flush(self, index: int) -> list[dict[str, Any]]:
        if index not in self._held:
            return []
        kind, text = self._held.pop(index)
        return self._emit(index, kind, text) if text else []

    def flush(self) -> list[dict[str, Any]]:
        """Whatever is still held (a stream cut before its ``content_block_stop``)."""
        return [event for index in sorted(self._held) for event in self._flush(index)]
