"""Prompt-cache breakpoints placed by the gateway when the caller placed none.

The cache works on the prompt prefix in the order tools → system → messages; a breakpoint
(``cache_control`` on a block) caches the prefix up to and including that block. Rules:

* a caller that set any ``cache_control`` (on a block, or the top-level automatic one) keeps
  every choice, ttl and scope included: nothing is changed;
* otherwise 5-minute ephemeral breakpoints go on the last tool, the last system block (a
  string system prompt becomes one text block to carry it) and long reference documents in
  the first user turn (``document`` blocks, or text blocks of at least
  ``document_min_tokens``);
* a breakpoint whose cumulative prefix is below the model's ``min_cacheable_tokens`` is
  dropped: the API silently caches nothing there;
* at most ``max_breakpoints`` (the API allows 4); with more candidates the later ones are
  kept, since a later breakpoint covers more prefix (so the longest prefix is always kept).

The body is copied on write: only the containers on the way to a changed block are new; the
caller's dict is never mutated and is returned as is when nothing changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.gateway.catalog import ModelInfo
from core.gateway.tokens import content_block_tokens, prefix_blocks

EPHEMERAL: Mapping[str, str] = {"type": "ephemeral"}  # default ttl: 5 minutes
MAX_BREAKPOINTS = 4

Path = tuple[str | int | None, ...]


@dataclass(frozen=True)
class Placement:
    body: Mapping[str, Any]
    placed: tuple[Path, ...]
    reason: str


def _blocks(value: Any) -> Sequence[Any]:
    return value if isinstance(value, Sequence) and not isinstance(value, str | bytes) else ()


def _block_breakpoints(block: Any) -> int:
    if not isinstance(block, Mapping):
        return 0
    count = 1 if block.get("cache_control") is not None else 0
    if block.get("type") == "tool_result":
        count += sum(_block_breakpoints(part) for part in _blocks(block.get("content")))
    return count


def count_breakpoints(body: Mapping[str, Any]) -> int:
    """``cache_control`` marks in a request; the top-level automatic one counts as one."""
    count = 1 if body.get("cache_control") is not None else 0
    count += sum(_block_breakpoints(tool) for tool in _blocks(body.get("tools")))
    count += sum(_block_breakpoints(part) for part in _blocks(body.get("system")))
    for message in _blocks(body.get("messages")):
        if isinstance(message, Mapping):
            count += sum(_block_breakpoints(part) for part in _blocks(message.get("content")))
    return count


def _candidates(body: Mapping[str, Any], model: ModelInfo, document_min_tokens: int) -> set[Path]:
    wanted: set[Path] = set()
    tools = _blocks(body.get("tools"))
    if tools and isinstance(tools[-1], Mapping):
        wanted.add(("tools", len(tools) - 1))
    system = body.get("system")
    if isinstance(system, str) and system:
        wanted.add(("system", None))
    elif (parts := _blocks(system)) and isinstance(parts[-1], Mapping):
        wanted.add(("system", len(parts) - 1))
    messages = _blocks(body.get("messages"))
    first = messages[0] if messages else None
    if isinstance(first, Mapping) and first.get("role") == "user":
        content = first.get("content")
        if isinstance(content, str):
            if content_block_tokens(content, model) >= document_min_tokens:
                wanted.add(("messages", 0, None))
        else:
            for c, block in enumerate(_blocks(content)):
                if not isinstance(block, Mapping):
                    continue
                if block.get("type") == "document" or (
                    block.get("type") == "text"
                    and content_block_tokens(block, model) >= document_min_tokens
                ):
                    wanted.add(("messages", 0, c))
    return wanted


def _marked(block: Any) -> dict[str, Any]:
    if isinstance(block, str):
        return {"type": "text", "text": block, "cache_control": dict(EPHEMERAL)}
    return {**block, "cache_control": dict(EPHEMERAL)}


def _index(step: str | int | None) -> int:
    if not isinstance(step, int):
        raise TypeError(f"expected a list index, got {step!r}")
    return step


def _apply(body: Mapping[str, Any], paths: Sequence[Path]) -> tuple[dict[str, Any], list[Path]]:
    """Copy-on-write: new containers only on the way to a marked block."""
    new = dict(body)
    placed: list[Path] = []
    for section in ("tools", "system"):
        indexes = [path[1] for path in paths if path[0] == section]
        if indexes == [None]:  # a string system prompt becomes one text block
            new[section] = [_marked(body[section])]
            placed.append((section, 0))
        elif indexes:
            items = list(body[section])
            for index in indexes:
                items[_index(index)] = _marked(items[_index(index)])
                placed.append((section, index))
            new[section] = items
    positions = [path[2] for path in paths if path[0] == "messages"]
    if positions:
        messages = list(body["messages"])
        first = dict(messages[0])
        if positions == [None]:  # a string turn becomes one text block
            first["content"] = [_marked(first["content"])]
            placed.append(("messages", 0, 0))
        else:
            content = list(first["content"])
            for position in positions:
                content[_index(position)] = _marked(content[_index(position)])
                placed.append(("messages", 0, position))
            first["content"] = content
        messages[0] = first
        new["messages"] = messages
    return new, placed


def place_breakpoints(
    body: Mapping[str, Any],
    model: ModelInfo,
    *,
    max_breakpoints: int = MAX_BREAKPOINTS,
    document_min_tokens: int = 1024,
) -> Placement:
    """Breakpoints for a request that has none; see the module docstring for the rules.

    ``placed`` holds the marked blocks' paths into the *returned* body, in prefix order.
    """
    if count_breakpoints(body):
        return Placement(body, (), "caller-set")
    if max_breakpoints < 1:
        return Placement(body, (), "disabled")
    wanted = _candidates(body, model, document_min_tokens)
    if not wanted:
        return Placement(body, (), "no-candidates")
    # Candidates end at the first turn: count only that far, not the whole conversation.
    view = {key: body[key] for key in ("tools", "system") if key in body}
    view["messages"] = list(_blocks(body.get("messages"))[:1])
    eligible: list[Path] = []
    prefix = 0
    for block in prefix_blocks(view, model):
        prefix += block.tokens
        if block.path in wanted and prefix >= model.min_cacheable_tokens:
            eligible.append(block.path)
    if not eligible:
        return Placement(body, (), "below-minimum")
    new, placed = _apply(body, eligible[-max_breakpoints:])
    reason = "placed"
    if len(eligible) > max_breakpoints:
        reason = f"placed; kept the last {max_breakpoints} of {len(eligible)} candidates"
    return Placement(new, tuple(placed), reason)
