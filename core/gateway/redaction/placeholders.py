"""Swap detected values for stable placeholders before a request, and back after it.

A :class:`Redactor` lives for ONE gateway request. The model sees ``<EMAIL_1>`` instead of
an address; the same value gets the same placeholder everywhere in the request (system,
every message, tool results), so the model can still tell two customers apart and refer
back to them; and the answer can be restored for the caller from the reverse map. Only
counts per class leave the redactor (for records and metrics), never values.

:func:`walk_body` is the one place that knows which parts of a Messages request body the
model reads as text; redaction and the policy's block check both go through it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from core.gateway.redaction.detectors import ALL, detect

PLACEHOLDER = re.compile(r"<([A-Z][A-Z_]*)_(\d+)>")

# (text, where) -> new text; ``where`` is "system" or "message N" (N indexes `messages`)
TextFn = Callable[[str, str], str]


def label(data_class: str) -> str:
    return data_class.upper()


class Redactor:
    """Placeholders for one request: ``redact`` on the way in, ``restore`` on the way out."""

    def __init__(self, classes: Iterable[str] = ALL, *, region: str = "US") -> None:
        self.classes = tuple(classes)
        self.region = region
        self._forward: dict[tuple[str, str], str] = {}  # (class, value) -> placeholder
        self._reverse: dict[str, str] = {}  # placeholder -> value
        self._numbers: Counter[str] = Counter()  # class -> placeholders handed out
        self._counts: Counter[str] = Counter()  # class -> occurrences replaced

    def placeholder(self, data_class: str, value: str) -> str:
        key = (data_class, value)
        if key not in self._forward:
            self._numbers[data_class] += 1
            token = f"<{label(data_class)}_{self._numbers[data_class]}>"
            self._forward[key] = token
            self._reverse[token] = value
        return self._forward[key]

    def redact(self, text: str) -> str:
        if not self.classes or not text:
            return text
        parts: list[str] = []
        cursor = 0
        for span in detect(text, self.classes, region=self.region):
            parts += [text[cursor : span.start], self.placeholder(span.data_class, span.text)]
            self._counts[span.data_class] += 1
            cursor = span.end
        return "".join(parts) + text[cursor:] if parts else text

    def original(self, token: str) -> str | None:
        """The value behind a placeholder, or None if this request never issued it."""
        return self._reverse.get(token)

    def restore(self, text: str, escape: Callable[[str], str] | None = None) -> str:
        """Put originals back; ``escape`` encodes each one (e.g. for a JSON string)."""
        if "<" not in text or not self._reverse:
            return text

        def swap(m: re.Match[str]) -> str:
            value = self._reverse.get(m.group())
            if value is None:
                return m.group()
            return escape(value) if escape else value

        return PLACEHOLDER.sub(swap, text)

    def counts(self) -> dict[str, int]:
        """Occurrences replaced per data class so far (never the values)."""
        return dict(self._counts)

    def placeholders(self) -> dict[str, str]:
        """Placeholder → original value: secret, seal it before it is stored anywhere."""
        return dict(self._reverse)

    @classmethod
    def restoring(cls, placeholders: Mapping[str, str]) -> Redactor:
        """A redactor that only restores, from :meth:`placeholders`: for an answer that
        arrives after the request's process is gone (Message Batches)."""
        redactor = cls(())
        redactor._reverse = dict(placeholders)
        return redactor

    def redact_message_body(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return walk_body(body, lambda text, _where: self.redact(text))

    def restore_message(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """A non-streamed answer with the originals back in text and tool input."""
        content = message.get("content")
        if not isinstance(content, list):
            return dict(message)
        restored = [_restore_block(self, block) for block in content]
        return {**message, "content": restored}


def _restore_block(redactor: Redactor, block: Any) -> Any:
    if not isinstance(block, Mapping):
        return block
    if block.get("type") == "text" and isinstance(block.get("text"), str):
        return {**block, "text": redactor.restore(block["text"])}
    if "input" in block and block.get("type") in ("tool_use", "server_tool_use"):
        return {**block, "input": _strings(block["input"], redactor.restore)}
    return block


def _strings(value: Any, fn: Callable[[str], str]) -> Any:
    """Apply ``fn`` to every string value (not key) of a JSON value, recursively."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, Mapping):
        return {key: _strings(item, fn) for key, item in value.items()}
    if isinstance(value, list):
        return [_strings(item, fn) for item in value]
    return value


def _text_blocks(blocks: list[Any], fn: Callable[[str], str]) -> list[Any]:
    out: list[Any] = []
    for block in blocks:
        if isinstance(block, Mapping) and block.get("type") == "text":
            out.append({**block, "text": fn(str(block.get("text", "")))})
        else:
            out.append(block)  # images, documents, ...: not text the redactor reads
    return out


def _content_block(block: Any, fn: Callable[[str], str]) -> Any:
    if not isinstance(block, Mapping):
        return block
    kind = block.get("type")
    if kind == "text":
        return _text_blocks([block], fn)[0]
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, str):
            return {**block, "content": fn(content)}
        if isinstance(content, list):
            return {**block, "content": _text_blocks(content, fn)}
        return block
    if kind == "tool_use" and "input" in block:
        return {**block, "input": _strings(block["input"], fn)}
    return block  # thinking (signed), images, documents, ...


def walk_body(body: Mapping[str, Any], fn: TextFn) -> dict[str, Any]:
    """A copy of a Messages request body with ``fn`` applied to every text the model reads:
    ``system``, and in each message its string content, text blocks, tool_result content
    and tool_use input string values. Everything else (model, tools, cache_control, images)
    is left as it is. The input body is not modified."""
    out = dict(body)
    system = body.get("system")
    if isinstance(system, str):
        out["system"] = fn(system, "system")
    elif isinstance(system, list):
        out["system"] = _text_blocks(system, lambda text: fn(text, "system"))
    messages = body.get("messages")
    if isinstance(messages, list):
        out["messages"] = [_message(m, i, fn) for i, m in enumerate(messages)]
    return out


def _message(message: Any, index: int, fn: TextFn) -> Any:
    if not isinstance(message, Mapping):
        return message
    where = f"message {index}"

    def text_fn(text: str) -> str:
        return fn(text, where)

    content = message.get("content")
    if isinstance(content, str):
        return {**message, "content": text_fn(content)}
    if isinstance(content, list):
        return {**message, "content": [_content_block(b, text_fn) for b in content]}
    return message
