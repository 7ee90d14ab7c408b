"""SANDBOX — a local stand-in for the Anthropic Messages API, for tests, demos and benchmarks.

Nothing here talks to Anthropic. :class:`AnthropicSandbox` answers the official ``anthropic``
SDK unchanged: Messages (JSON and SSE), ``count_tokens``, Message Batches and Models, with
API-key auth, per-model token-bucket rate limits and their headers, a prompt-cache
simulation, a latency model, a deterministic "model" (valid tool inputs, text of a
hash-chosen length) and seeded fault injection (:class:`Faults`). The facts it follows are in
``/work/shared/reference/anthropic-api.md``.

Serve it with :class:`SandboxServer`::

    sandbox = AnthropicSandbox(latency_scale=0)
    with SandboxServer(sandbox.app) as server:
        client = AsyncAnthropic(base_url=server.url, api_key="sk-ant-sandbox", max_retries=0)

Modules: :mod:`.sandbox` (state and answer flows), :mod:`.app` (routes, auth, headers),
:mod:`.messages` (body checks, token costing, message JSON), :mod:`.promptcache`,
:mod:`.ratelimit`, :mod:`.responder` + :mod:`.schemagen` (the "model"), :mod:`.streaming`
(SSE), :mod:`.batches`, :mod:`.listing` (pagination), :mod:`.faults`, :mod:`.stats`,
:mod:`.errors`.
"""

from core.gateway.catalog import RateLimits
from core.sandbox.anthropic.faults import Faults
from core.sandbox.anthropic.sandbox import AnthropicSandbox
from core.sandbox.anthropic.stats import ModelUsage, SandboxStats
from core.sandbox.server import SandboxServer

__all__ = [
    "AnthropicSandbox",
    "Faults",
    "ModelUsage",
    "RateLimits",
    "SandboxServer",
    "SandboxStats",
]
