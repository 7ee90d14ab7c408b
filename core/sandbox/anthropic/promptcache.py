"""The SANDBOX's prompt cache: breakpoints, prefix keys, reads, writes and TTLs.

The prompt is the ordered list of prefix blocks (tools → system → messages,
:func:`core.gateway.tokens.prefix_blocks`). A breakpoint is a block carrying
``cache_control`` (``{"type":"ephemeral","ttl":"5m"|"1h"}``, ``5m`` by default); a top-level
``cache_control`` puts one on the last block (automatic caching). At most
:data:`MAX_BREAKPOINTS`, and ``1h`` ones must come before ``5m`` ones, or the request is
rejected with 400.

An entry's key is a hash of the API key, the model and the canonical prefix up to and
including a block (block contents without ``cache_control``; a message block also hashes
its role). A request reads the longest live entry found at a breakpoint or up to
:data:`LOOKBACK` blocks before one, then writes an entry at every later breakpoint whose
prefix reaches the model's ``min_cacheable_tokens`` (shorter prefixes are silently not
cached); the tokens between one cached boundary and the next are that breakpoint's write,
billed at its TTL. Entries live for their TTL from last use: a read refreshes them. Time is
the sandbox's injectable monotonic clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from core.gateway.catalog import ModelInfo
from core.gateway.tokens import PrefixBlock
from core.sandbox.anthropic.errors import InvalidRequest

MAX_BREAKPOINTS = 4
LOOKBACK = 20
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
MAX_ENTRIES = 200_000  # least recently used entries are dropped past this


@dataclass(frozen=True)
class Breakpoint:
    index: int  # position in the prefix blocks
    ttl: str  # "5m" | "1h"


@dataclass(frozen=True)
class CachePlan:
    """What one request reads and writes; applied by :meth:`PromptCache.commit`."""

    read_tokens: int = 0
    write_5m: int = 0
    write_1h: int = 0
    read_key: bytes | None = None
    writes: tuple[tuple[bytes, float], ...] = ()

    @property
    def write_tokens(self) -> int:
        return self.write_5m + self.write_1h


NO_CACHE = CachePlan()


def _ttl(control: Any) -> str:
    if not isinstance(control, Mapping) or control.get("type") != "ephemeral":
        raise InvalidRequest("cache_control.type: Input should be 'ephemeral'")
    ttl = control.get("ttl", "5m")
    if ttl not in TTL_SECONDS:
        raise InvalidRequest("cache_control.ttl: Input should be '5m' or '1h'")
    return str(ttl)


def breakpoints(body: Mapping[str, Any], blocks: Sequence[PrefixBlock]) -> list[Breakpoint]:
    """The request's breakpoints in prefix order, validated (400 on a broken rule)."""
    found = [
        Breakpoint(i, _ttl(block.cache_control))
        for i, block in enumerate(blocks)
        if block.cache_control is not None
    ]
    automatic = body.get("cache_control")
    if automatic is not None and blocks:
        ttl = _ttl(automatic)
        if not found or found[-1].index != len(blocks) - 1:
            found.append(Breakpoint(len(blocks) - 1, ttl))
    if len(found) > MAX_BREAKPOINTS:
        raise InvalidRequest(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided."
            f" Found {len(found)}."
        )
    seen_5m = False
    for point in found:
        if point.ttl == "5m":
            seen_5m = True
        elif seen_5m:
            raise InvalidRequest(
                "Prompt cache TTLs must not increase along the prompt: a cache_control with"
                " ttl='1h' cannot come after one with ttl='5m'."
            )
    return found


def _strip(value: Any) -> Any:
    if isinstance(value, Mapping) and "cache_control" in value:
        return {k: v for k, v in value.items() if k != "cache_control"}
    return value


def _block_bytes(body: Mapping[str, Any], path: tuple[str | int | None, ...]) -> bytes:
    """Canonical bytes of one prefix block, without its cache_control."""
    kind = path[0]
    if kind == "tools":
        return b"T" + orjson.dumps(_strip(body["tools"][path[1]]), option=orjson.OPT_SORT_KEYS)
    if kind == "system":
        system = body["system"] if path[1] is None else body["system"][path[1]]
        return b"S" + orjson.dumps(_strip(system), option=orjson.OPT_SORT_KEYS)
    message = body["messages"][path[1]]
    content = message.get("content", "")
    part = content if path[2] is None else content[path[2]]
    head = f"M{message.get('role')}:{path[2] in (None, 0)}:".encode()
    return head + orjson.dumps(_strip(part), option=orjson.OPT_SORT_KEYS)


class PromptCache:
    """Entries keyed by prefix hash: key → [expires_at, ttl_seconds], in last-use order."""

    def __init__(self, clock: Callable[[], float], max_entries: int = MAX_ENTRIES) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._entries: dict[bytes, list[float]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def reset(self) -> None:
        self._entries.clear()

    def plan(
        self,
        api_key: str,
        model: ModelInfo,
        body: Mapping[str, Any],
        blocks: Sequence[PrefixBlock],
        points: Sequence[Breakpoint],
    ) -> CachePlan:
        """Find the longest cached prefix and the writes after it (changes nothing)."""
        if not points:
            return NO_CACHE
        wanted: set[int] = set()
        for point in points:
            wanted.update(range(max(0, point.index - LOOKBACK), point.index + 1))
        hasher = hashlib.blake2b(f"{api_key}\x00{model.id}\x00".encode(), digest_size=16)
        digests: dict[int, bytes] = {}
        cumulative: list[int] = []
        total = 0
        for i in range(points[-1].index + 1):
            hasher.update(_block_bytes(body, blocks[i].path))
            hasher.update(b"\x1e")
            total += blocks[i].tokens
            cumulative.append(total)
            if i in wanted:
                digests[i] = hasher.copy().digest()
        now = self._clock()
        read_at, read_key = -1, None
        for point in reversed(points):
            for j in range(point.index, max(0, point.index - LOOKBACK) - 1, -1):
                entry = self._entries.get(digests[j])
                if entry is not None and entry[0] > now:
                    read_at, read_key = j, digests[j]
                    break
            if read_key is not None:
                break
        boundary = read_at
        write = {"5m": 0, "1h": 0}
        writes: list[tuple[bytes, float]] = []
        for point in points:
            prefix = cumulative[point.index]
            if point.index <= boundary or prefix < model.min_cacheable_tokens:
                continue
            write[point.ttl] += prefix - (cumulative[boundary] if boundary >= 0 else 0)
            writes.append((digests[point.index], TTL_SECONDS[point.ttl]))
            boundary = point.index
        return CachePlan(
            read_tokens=cumulative[read_at] if read_at >= 0 else 0,
            write_5m=write["5m"],
            write_1h=write["1h"],
            read_key=read_key,
            writes=tuple(writes),
        )

    def commit(self, plan: CachePlan) -> None:
        """Apply a plan: refresh what it read, store what it wrote."""
        if plan is NO_CACHE:
            return
        now = self._clock()
        entries = self._entries
        if plan.read_key is not None:
            entry = entries.pop(plan.read_key, None)
            if entry is not None:
                entries[plan.read_key] = [now + entry[1], entry[1]]
        for key, ttl in plan.writes:
            entries.pop(key, None)
            entries[key] = [now + ttl, ttl]
        while len(entries) > self._max_entries:
            del entries[next(iter(entries))]
