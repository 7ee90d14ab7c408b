"""One Messages request in the SANDBOX: checking the body, costing the prompt, the JSON out.

The body is checked only as far as the sandbox needs (``model``, ``max_tokens``,
``messages``, cache breakpoints); unknown fields are ignored so a gateway can forward
anything. Token counts come from the documented approximation
(:func:`core.gateway.tokens.prefix_blocks`); ``input_tokens`` in usage is the uncached
remainder: total = input + cache writes + cache reads, and total is what ``count_tokens``
reports for the same body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from core.gateway.catalog import Catalog, ModelInfo
from core.gateway.tokens import REQUEST_OVERHEAD, PrefixBlock, prefix_blocks
from core.sandbox.anthropic.errors import InvalidRequest, NotFound
from core.sandbox.anthropic.promptcache import NO_CACHE, CachePlan, PromptCache, breakpoints
from core.sandbox.anthropic.responder import Answer


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def resolve_model(body: Mapping[str, Any], catalog: Catalog) -> ModelInfo:
    model_id = body.get("model")
    if not isinstance(model_id, str) or not model_id:
        raise InvalidRequest("model: Field required")
    model = catalog.find(model_id)
    if model is None:
        raise NotFound(f"model: {model_id}")
    return model


def check_messages(body: Mapping[str, Any]) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequest("messages: Field required")
    if not messages:
        raise InvalidRequest("messages: at least one message is required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise InvalidRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if not isinstance(message.get("content"), str | list):
            raise InvalidRequest(f"messages.{i}.content: Field required")


def check_prompt_parts(body: Mapping[str, Any]) -> None:
    tools = body.get("tools")
    if tools is not None and (
        not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools)
    ):
        raise InvalidRequest("tools: Input should be a list of tool objects")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise InvalidRequest("system: Input should be a string or a list of content blocks")


def check_max_tokens(body: Mapping[str, Any]) -> int:
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise InvalidRequest("max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidRequest("max_tokens: Input should be an integer greater than 0")
    return max_tokens


@dataclass(slots=True)
class Turn:
    """A checked Messages request with its prompt costed and its cache plan."""

    api_key: str
    body: dict[str, Any]
    model: ModelInfo
    max_tokens: int
    total_input: int
    plan: CachePlan

    @property
    def uncached_input(self) -> int:
        return self.total_input - self.plan.read_tokens - self.plan.write_tokens

    @property
    def limited_input(self) -> int:
        """What the input-tokens bucket is charged: uncached input and cache writes."""
        return self.total_input - self.plan.read_tokens


def count_tokens(body: Mapping[str, Any], model: ModelInfo) -> tuple[int, list[PrefixBlock]]:
    blocks = prefix_blocks(body, model)
    return REQUEST_OVERHEAD + sum(block.tokens for block in blocks), blocks


def prepare(api_key: str, body: dict[str, Any], catalog: Catalog, cache: PromptCache) -> Turn:
    """Check a Messages body and plan its cache use (raises 400/404 :class:`ApiError`)."""
    model = resolve_model(body, catalog)
    max_tokens = check_max_tokens(body)
    check_messages(body)
    check_prompt_parts(body)
    total, blocks = count_tokens(body, model)
    points = breakpoints(body, blocks)
    plan = cache.plan(api_key, model, body, blocks, points) if points else NO_CACHE
    return Turn(api_key, body, model, max_tokens, total, plan)


def usage(turn: Turn, output_tokens: int, *, with_cache: bool = True) -> dict[str, Any]:
    """The usage object; ``with_cache=False`` leaves out every cache field."""
    if not with_cache:
        return {"input_tokens": turn.uncached_input, "output_tokens": output_tokens}
    plan = turn.plan
    return {
        "input_tokens": turn.uncached_input,
        "cache_creation_input_tokens": plan.write_tokens,
        "cache_read_input_tokens": plan.read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": plan.write_5m,
            "ephemeral_1h_input_tokens": plan.write_1h,
        },
        "output_tokens": output_tokens,
        "server_tool_use": None,
        "service_tier": "standard",
    }


def message(
    message_id: str,
    turn: Turn,
    content: list[dict[str, Any]],
    stop_reason: str | None,
    usage_: dict[str, Any],
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": turn.model.id,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage_,
    }


def final_message(message_id: str, turn: Turn, answer: Answer) -> dict[str, Any]:
    return message(
        message_id, turn, answer.content, answer.stop_reason, usage(turn, answer.output_tokens)
    )
