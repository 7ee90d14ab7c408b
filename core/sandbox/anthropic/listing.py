"""Cursor pagination shared by the SANDBOX's list endpoints (models, batches).

``limit`` (1 to 1000, default 20), ``after_id`` (items after that one) or ``before_id`` (items
before it); the page is ``{"data", "has_more", "first_id", "last_id"}``, as the API sends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from core.sandbox.anthropic.errors import InvalidRequest

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def _position(items: Sequence[Mapping[str, Any]], item_id: str) -> int:
    for i, item in enumerate(items):
        if item["id"] == item_id:
            return i
    raise InvalidRequest(f"no item with id {item_id!r} to page from")


def page(items: Sequence[Mapping[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    """One page of ``items`` (already in list order) for the request's query."""
    try:
        limit = int(query.get("limit", DEFAULT_LIMIT))
    except ValueError:
        raise InvalidRequest("limit: Input should be a valid integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit: Input should be between 1 and {MAX_LIMIT}")
    after, before = query.get("after_id"), query.get("before_id")
    if after and before:
        raise InvalidRequest("after_id and before_id cannot both be given")
    if before:
        end = _position(items, before)
        start = max(0, end - limit)
        data, has_more = list(items[start:end]), start > 0
    else:
        start = _position(items, after) + 1 if after else 0
        data = list(items[start : start + limit])
        has_more = start + limit < len(items)
    return {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
