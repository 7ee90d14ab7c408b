"""Serve an :class:`~core.sandbox.anthropic.AnthropicSandbox` in its own process (SANDBOX).

``python -m core.bench.sandbox_server --port P --latency-scale S [--dilate] [--limits JSON]
[--faults JSON] [--seed N]`` serves the sandbox with uvicorn (uvloop, httptools) on
127.0.0.1, so the benchmarks' load generator and the sandbox never share a process or a
GIL. Besides the Anthropic API it answers ``GET /_bench/stats`` (the sandbox's counters and
billed tokens per model, as JSON) and ``POST /_bench/faults`` (replace the
:class:`~core.sandbox.anthropic.Faults`, e.g. ``{"slow_rate": 1, "slow_seconds": 0.5}`` for a
fixed upstream latency); both without authentication, for the benchmark only.

Time dilation (``--dilate``, with ``0 < S < 1``): the benchmark plays real-world traffic S
times faster. The latency model is already scaled by S; with ``--dilate`` the sandbox's
clock (rate-limit refill, prompt-cache TTLs) also runs 1/S times faster than the wall
clock, so ``--limits`` stay real-world per-minute figures and a bucket holds what it would
in reality. Times the sandbox hands out are then turned back into wall-clock time on the
way out: ``retry-after`` (virtual seconds) is multiplied by S, and each
``anthropic-ratelimit-*-limit`` is divided by S (the per-wall-clock-minute rate a client's
own buckets should refill at). ``remaining`` counts are unchanged; ``*-reset`` instants stay
in virtual time (neither the SDK nor the gateway reads them).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.gateway.catalog import RateLimits
from core.sandbox.anthropic import AnthropicSandbox, Faults

STATS_PATH = "/_bench/stats"
FAULTS_PATH = "/_bench/faults"
_LIMIT_HEADERS = frozenset(
    f"anthropic-ratelimit-{name}-limit".encode()
    for name in ("requests", "tokens", "input-tokens", "output-tokens")
)


def stats_json(sandbox: AnthropicSandbox) -> bytes:
    stats = sandbox.stats
    return orjson.dumps(
        {
            "requests": stats.requests,
            "responses": {str(k): v for k, v in stats.responses.items()},
            "rate_limited": stats.rate_limited,
            "injected": {str(k): v for k, v in stats.injected.items()},
            "streams": stats.streams,
            "mid_stream_errors": stats.mid_stream_errors,
            "usage": {model: asdict(usage) for model, usage in stats.usage.items()},
        }
    )


def dilated_clock(scale: float) -> Callable[[], float]:
    """A monotonic clock running ``1 / scale`` times faster than the wall clock."""
    origin = time.monotonic()
    return lambda: origin + (time.monotonic() - origin) / scale


def rewrite_headers(headers: list[tuple[bytes, bytes]], scale: float) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"retry-after":
            value = f"{float(value) * scale:.3f}".encode()
        elif lowered in _LIMIT_HEADERS:
            value = str(max(1, round(int(value) / scale))).encode()
        out.append((name, value))
    return out


class BenchApp:
    """The sandbox's ASGI app plus ``GET /_bench/stats``; rewrites times when dilated."""

    def __init__(self, sandbox: AnthropicSandbox, dilation: float | None) -> None:
        self.sandbox = sandbox
        self.dilation = dilation
        self.inner: ASGIApp = sandbox.app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == STATS_PATH:
            await _answer(send, stats_json(self.sandbox))
            return
        if scope["type"] == "http" and scope["path"] == FAULTS_PATH:
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            self.sandbox.faults = Faults(**orjson.loads(body or b"{}"))
            await _answer(send, orjson.dumps(asdict(self.sandbox.faults)))
            return
        scale = self.dilation
        if scale is None or scope["type"] != "http":
            await self.inner(scope, receive, send)
            return

        async def send_dilated(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": rewrite_headers(list(message["headers"]), scale)}
            await send(message)

        await self.inner(scope, receive, send_dilated)


async def _answer(send: Send, body: bytes) -> None:
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def build(args: argparse.Namespace) -> BenchApp:
    limits = {
        model: RateLimits.model_validate(spec) for model, spec in json.loads(args.limits).items()
    }
    dilate = args.dilate and 0 < args.latency_scale < 1
    sandbox = AnthropicSandbox(
        limits=limits,
        latency_scale=args.latency_scale,
        faults=Faults(**json.loads(args.faults)),
        seed=args.seed,
        clock=dilated_clock(args.latency_scale) if dilate else time.monotonic,
    )
    return BenchApp(sandbox, args.latency_scale if dilate else None)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-scale", type=float, default=1.0)
    parser.add_argument("--dilate", action="store_true", help="run the sandbox clock 1/S fast")
    parser.add_argument("--limits", default="{}", help='{"model": {"rpm":..,..}} overrides')
    parser.add_argument("--faults", default="{}", help='Faults fields, e.g. {"rate_529": 0.01}')
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    args = parse_args(argv)
    app: Any = build(args)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        ws="none",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
