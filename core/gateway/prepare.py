"""Turn a caller's request into what goes upstream: route, cap, compress, place breakpoints.

Pure: no I/O, and the caller's body is never mutated (each step copies what it changes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import InvalidRequest
from core.gateway import caching, compression, tokens
from core.gateway.catalog import Catalog, ModelInfo
from core.gateway.fingerprint import cacheable, request_fingerprint
from core.gateway.routing import Route, RoutingTable
from core.gateway.upstream import FORWARDED_HEADERS


@dataclass(frozen=True)
class Prepared:
    body: dict[str, Any]
    route: Route
    model: ModelInfo
    headers: dict[str, str]  # forwarded unchanged: anthropic-version, anthropic-beta
    input_estimate: int
    fingerprint: str
    cacheable: bool
    breakpoints_added: int
    tokens_saved: int

    @property
    def max_tokens(self) -> int:
        return int(self.body["max_tokens"])


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: headers[name] for name in FORWARDED_HEADERS if headers.get(name)}


def prepare(
    body: Mapping[str, Any],
    *,
    tenant_id: str,
    task: str | None,
    headers: Mapping[str, str],
    catalog: Catalog,
    routing: RoutingTable,
    auto_cache: bool,
    compress: bool,
    cache_opt_in: bool,
    model_override: Route | None = None,
) -> Prepared:
    if not isinstance(body.get("messages"), list):
        raise InvalidRequest("`messages` must be a list of message objects")
    requested = body.get("model")
    if requested is not None and not isinstance(requested, str):
        raise InvalidRequest('`model` must be a string (a model id, or "auto" with a task)')
    route = model_override or routing.route(requested, task, catalog=catalog)
    model = catalog.get(route.model)
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise InvalidRequest("`max_tokens` must be a positive integer")
    out: dict[str, Any] = {
        **body,
        "model": route.model,
        "max_tokens": routing.cap_max_tokens(max_tokens, route.task),
    }
    out.pop("stream", None)
    saved = 0
    if compress:
        compressed = compression.compress_request(out, model)
        out, saved = dict(compressed.body), compressed.tokens_saved
    added = 0
    if auto_cache:
        placement = caching.place_breakpoints(out, model)
        out, added = dict(placement.body), len(placement.placed)
    forwarded = forwarded_headers(headers)
    return Prepared(
        body=out,
        route=route,
        model=model,
        headers=forwarded,
        input_estimate=tokens.input_tokens(out, model),
        fingerprint=request_fingerprint(tenant_id, out, headers=forwarded),
        cacheable=cacheable(out, opt_in=cache_opt_in),
        breakpoints_added=added,
        tokens_saved=saved,
    )
