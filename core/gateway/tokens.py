"""Token counts by a documented approximation, per model.

Neither the gateway nor the sandbox ships Anthropic's tokenizer, so both count the same way:

* text: ``ceil(characters / chars_per_token)``, with ``chars_per_token`` per model from the
  catalogue (3.0 for the newer tokenizer of 4.7+ and Haiku 5.5, 3.9 for older models);
* any other JSON value (tool schemas, tool inputs): its compact JSON text, counted as text;
* images: a flat :data:`IMAGE_TOKENS`; fixed overheads per message and per tool.

The gateway uses these counts only for admission estimates and cache-breakpoint placement;
costs always come from the usage the API reports.

The prompt is seen as the ordered list of *prefix blocks* the prompt cache works on: tools,
then system blocks, then each message's content blocks (:func:`prefix_blocks`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from core.gateway.catalog import ModelInfo

REQUEST_OVERHEAD = 3
MESSAGE_OVERHEAD = 4
TOOL_OVERHEAD = 8
IMAGE_TOKENS = 1_600


def text_tokens(text: str, model: ModelInfo) -> int:
    return math.ceil(len(text) / model.chars_per_token) if text else 0


def json_tokens(value: Any, model: ModelInfo) -> int:
    return text_tokens(orjson.dumps(value).decode(), model)


@dataclass(frozen=True)
class PrefixBlock:
    """One cacheable unit of the prompt, in cache-prefix order.

    ``path`` locates it in the request body: ``("tools", i)``, ``("system", i)`` or
    ``("messages", m, c)``; ``i``/``c`` is ``None`` where the body holds a plain string.
    """

    path: tuple[str | int | None, ...]
    tokens: int
    cache_control: Mapping[str, Any] | None


def _without_cache_control(block: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k != "cache_control"}


def content_block_tokens(block: Any, model: ModelInfo) -> int:
    if isinstance(block, str):
        return text_tokens(block, model)
    if not isinstance(block, Mapping):
        return json_tokens(block, model)
    kind = block.get("type")
    if kind == "text":
        return text_tokens(str(block.get("text", "")), model)
    if kind == "image":
        return IMAGE_TOKENS
    if kind == "document":
        source = block.get("source")
        if isinstance(source, Mapping) and source.get("type") == "text":
            return text_tokens(str(source.get("data", "")), model)
        if isinstance(source, Mapping) and source.get("type") == "content":
            return sum(content_block_tokens(part, model) for part in source.get("content", []))
        return IMAGE_TOKENS
    if kind == "tool_use":
        return text_tokens(str(block.get("name", "")), model) + json_tokens(
            block.get("input", {}), model
        )
    if kind == "tool_result":
        content = block.get("content", "")
        if isinstance(content, str):
            return text_tokens(content, model)
        return sum(content_block_tokens(part, model) for part in content)
    if kind in ("thinking", "redacted_thinking"):
        return text_tokens(str(block.get("thinking", block.get("data", ""))), model)
    return json_tokens(_without_cache_control(block), model)


def prefix_blocks(body: Mapping[str, Any], model: ModelInfo) -> list[PrefixBlock]:
    blocks: list[PrefixBlock] = []
    tools = body.get("tools") or []
    for i, tool in enumerate(tools):
        if isinstance(tool, Mapping):
            tokens = json_tokens(_without_cache_control(tool), model) + TOOL_OVERHEAD
            blocks.append(PrefixBlock(("tools", i), tokens, tool.get("cache_control")))
    system = body.get("system")
    if isinstance(system, str) and system:
        blocks.append(PrefixBlock(("system", None), text_tokens(system, model), None))
    elif isinstance(system, Sequence) and not isinstance(system, str):
        for i, part in enumerate(system):
            control = part.get("cache_control") if isinstance(part, Mapping) else None
            blocks.append(PrefixBlock(("system", i), content_block_tokens(part, model), control))
    for m, message in enumerate(body.get("messages") or []):
        if not isinstance(message, Mapping):
            continue
        content = message.get("content", "")
        if isinstance(content, str):
            tokens = text_tokens(content, model) + MESSAGE_OVERHEAD
            blocks.append(PrefixBlock(("messages", m, None), tokens, None))
            continue
        for c, part in enumerate(content):
            overhead = MESSAGE_OVERHEAD if c == 0 else 0
            control = part.get("cache_control") if isinstance(part, Mapping) else None
            tokens = content_block_tokens(part, model) + overhead
            blocks.append(PrefixBlock(("messages", m, c), tokens, control))
    return blocks


def input_tokens(body: Mapping[str, Any], model: ModelInfo) -> int:
    """Estimated total prompt tokens (cached or not) of a Messages request body."""
    return REQUEST_OVERHEAD + sum(block.tokens for block in prefix_blocks(body, model))
