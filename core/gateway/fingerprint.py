"""Request fingerprints: the key of single-flight dedup and of the response cache.

A fingerprint is the hex SHA-256 of a canonical JSON form (orjson, keys sorted at every
level) of::

    {"tenant": <tenant id>, "headers": {<the headers that change the answer>},
     "body": <the request body minus the fields that do not>}

* the tenant is always part of it, so identical requests from two tenants never share a
  key — neither a cached answer nor an in-flight call;
* ``anthropic-version`` and ``anthropic-beta`` change what the API does, so they count
  (header names case-insensitive; the beta list as a set, since order means nothing);
* ``stream`` and ``metadata`` (the end-user id) do not change the answer, so they do not.

:func:`cacheable` decides which requests may be answered from the response cache; any two
identical requests in flight at once may share one call, whatever they ask.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

SEMANTIC_HEADERS = ("anthropic-version", "anthropic-beta")
IGNORED_FIELDS = frozenset({"stream", "metadata"})
# Tools the API runs itself: their answers depend on the world (search, fetch), not only
# on the request. User-defined tools have no type, or type "custom".
_CLIENT_TOOL_TYPES = frozenset({None, "custom"})


def _semantic_headers(headers: Mapping[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered == "anthropic-beta":
            betas = {*found.get(lowered, "").split(","), *value.split(",")}
            found[lowered] = ",".join(sorted(b.strip() for b in betas if b.strip()))
        elif lowered in SEMANTIC_HEADERS:
            found[lowered] = value.strip()
    return {name: value for name, value in found.items() if value}


def request_fingerprint(
    tenant_id: str, body: Mapping[str, Any], *, headers: Mapping[str, str] | None = None
) -> str:
    """Hex SHA-256 naming this tenant's request; ``headers`` may be all the request's."""
    canonical = {
        "tenant": tenant_id,
        "headers": _semantic_headers(headers or {}),
        "body": {name: value for name, value in body.items() if name not in IGNORED_FIELDS},
    }
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


def cacheable(body: Mapping[str, Any], *, opt_in: bool = False) -> bool:
    """May this request be answered from the response cache?

    Yes when the caller opted in (the gateway passes the flag), or when the request is as
    deterministic as the API gets: ``temperature`` explicitly 0 and no server-side tools.
    """
    if opt_in:
        return True
    temperature = body.get("temperature")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        return False
    if temperature != 0:
        return False
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        return False
    return all(
        isinstance(tool, Mapping) and tool.get("type") in _CLIENT_TOOL_TYPES for tool in tools
    )
