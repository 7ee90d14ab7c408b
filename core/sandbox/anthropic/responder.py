"""The SANDBOX's deterministic "model": what a request is answered with.

Everything is derived from a hash of the request (model, system, messages, tools,
tool_choice and the sandbox seed; not ``max_tokens`` or ``stream``), so the same request
always gets the same answer, streamed or not.

* Tool use: with tools and ``tool_choice`` ``tool`` or ``any``, or ``auto`` unless the last
  message carries a ``tool_result``, one ``tool_use`` block (id ``toolu_…``) whose ``input``
  is valid against the tool's ``input_schema`` (:mod:`.schemagen`); ``stop_reason:
  tool_use``. A schema-break fault makes the input invalid. If the input would not fit in
  ``max_tokens``, the answer falls back to truncated text.
* Otherwise one text block whose length in tokens (by the documented approximation,
  :func:`core.gateway.tokens.text_tokens`) is drawn from ``text_tokens_range``; cut at
  ``max_tokens`` with ``stop_reason: max_tokens``, else ``end_turn``.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from core.gateway.catalog import ModelInfo
from core.gateway.tokens import json_tokens, text_tokens
from core.sandbox.anthropic.errors import InvalidRequest
from core.sandbox.anthropic.schemagen import WORDS, break_input, generate

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Answer:
    """The content of one answer, ready for JSON or for streaming."""

    content: list[dict[str, Any]]
    output_tokens: int
    stop_reason: str


def request_digest(body: Mapping[str, Any], seed: int) -> bytes:
    """Hash of what decides the answer: not ``max_tokens``, ``stream`` or metadata."""
    key = [
        seed,
        body.get("model"),
        body.get("system"),
        body.get("messages"),
        body.get("tools"),
        body.get("tool_choice"),
    ]
    return hashlib.blake2b(orjson.dumps(key, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()


def tool_use_id(digest: bytes) -> str:
    number = int.from_bytes(hashlib.blake2b(digest, digest_size=20).digest(), "big")
    chars = []
    for _ in range(24):
        number, rest = divmod(number, 62)
        chars.append(_ALPHABET[rest])
    return "toolu_01" + "".join(chars)


def _ends_with_tool_result(body: Mapping[str, Any]) -> bool:
    messages = body.get("messages") or []
    content = messages[-1].get("content") if messages and isinstance(messages[-1], dict) else ""
    return isinstance(content, list) and any(
        isinstance(part, dict) and part.get("type") == "tool_result" for part in content
    )


class Responder:
    """Makes answers; holds the text corpus answers are cut from."""

    def __init__(self, text_tokens_range: tuple[int, int], seed: int = 0) -> None:
        low, high = text_tokens_range
        if not 1 <= low <= high:
            raise ValueError("text_tokens_range must be (low, high) with 1 <= low <= high")
        self._low, self._high = low, high
        rng = random.Random(seed)
        sentences = []
        for _ in range(200):
            words = [rng.choice(WORDS) for _ in range(rng.randint(6, 14))]
            sentences.append(" ".join(words).capitalize() + ".")
        self._base = " ".join(sentences) + " "
        self._starts = [0, *(i + 1 for i, ch in enumerate(self._base[:-1]) if ch == " ")]
        self._corpus = self._base

    def _text(self, digest: bytes, chars: int) -> str:
        start = self._starts[int.from_bytes(digest[8:12], "big") % len(self._starts)]
        while len(self._corpus) < start + chars:
            self._corpus += self._base
        return self._corpus[start : start + chars]

    def _text_answer(self, digest: bytes, model: ModelInfo, max_tokens: int) -> Answer:
        wanted = self._low + int.from_bytes(digest[:4], "big") % (self._high - self._low + 1)
        tokens = min(wanted, max_tokens)
        text = self._text(digest, math.floor(tokens * model.chars_per_token))
        reason = "max_tokens" if wanted > max_tokens else "end_turn"
        return Answer([{"type": "text", "text": text}], text_tokens(text, model), reason)

    def answer(
        self,
        body: Mapping[str, Any],
        model: ModelInfo,
        digest: bytes,
        *,
        schema_break: bool = False,
    ) -> Answer:
        max_tokens = int(body["max_tokens"])
        tool = self._pick_tool(body, digest)
        if tool is None:
            return self._text_answer(digest, model, max_tokens)
        schema = tool.get("input_schema")
        schema = schema if isinstance(schema, Mapping) else {"type": "object"}
        rng = random.Random(digest)
        value = generate(schema, rng)
        value = value if isinstance(value, dict) else {}
        if schema_break:
            value = break_input(schema, value)
        name = str(tool.get("name", ""))
        tokens = text_tokens(name, model) + json_tokens(value, model)
        if tokens > max_tokens:
            return self._text_answer(digest, model, max_tokens)
        block = {"type": "tool_use", "id": tool_use_id(digest), "name": name, "input": value}
        return Answer([block], tokens, "tool_use")

    @staticmethod
    def _pick_tool(body: Mapping[str, Any], digest: bytes) -> Mapping[str, Any] | None:
        tools = [t for t in body.get("tools") or () if isinstance(t, Mapping) and "name" in t]
        if not tools:
            return None
        choice = body.get("tool_choice")
        choice = choice if isinstance(choice, Mapping) else {}
        kind = choice.get("type", "auto")
        if kind == "tool":
            for tool in tools:
                if tool["name"] == choice.get("name"):
                    return tool
            raise InvalidRequest(f"tool_choice: no tool named {choice.get('name')!r} in tools")
        if kind == "none" or (kind == "auto" and _ends_with_tool_result(body)):
            return None
        custom = [t for t in tools if "input_schema" in t] or tools
        return custom[int.from_bytes(digest[4:8], "big") % len(custom)]
