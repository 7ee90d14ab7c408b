"""The overhead benchmark's load generator: closed-loop HTTP/1.1 over keep-alive connections.

The requests are built before the clock starts and answers are read only as far as the
status, the length and the first body byte, so the generator's own CPU stays small: it
shares the machine's cores with both servers it measures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from core.bench import processes

MODEL = "claude-haiku-5-5"
ANTHROPIC_VERSION = "2023-06-01"


@dataclass
class Load:
    """One closed-loop run: per-request latency and time to the first body byte (seconds)."""

    requests: int
    seconds: float
    latencies: list[float]
    first_bytes: list[float]
    statuses: dict[int, int]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def ms(self, q: float, *, first_byte: bool = False) -> float:
        return processes.percentile(self.first_bytes if first_byte else self.latencies, q) * 1000

    def __add__(self, other: Load) -> Load:
        statuses = dict(self.statuses)
        for status, count in other.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
        return Load(
            self.requests + other.requests,
            self.seconds + other.seconds,
            self.latencies + other.latencies,
            self.first_bytes + other.first_bytes,
            statuses,
        )


def _request(host: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [
        "POST /v1/messages HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def build_requests(
    port: int, api_key: str, count: int, *, start: int, stream: bool = False
) -> list[bytes]:
    """``count`` small requests to 127.0.0.1:``port``, each unique (a serial number)."""
    host = f"127.0.0.1:{port}"
    headers = {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}
    out = []
    for n in range(start, start + count):
        body: dict[str, Any] = {
            "model": MODEL,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": f"Classify ticket T-{n}: printer on fire."}],
        }
        if stream:
            body["stream"] = True
        out.append(_request(host, headers, orjson.dumps(body)))
    return out


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, float]:
    """Status and the time the first body byte arrived (perf_counter)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length: int | None = None
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        if length:
            await reader.readexactly(length)
        return status, time.perf_counter()
    first = 0.0
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if not first:
            first = time.perf_counter()
        if size == 0:
            await reader.readuntil(b"\r\n")
            return status, first
        await reader.readexactly(size + 2)


async def _load(
    port: int, requests: Sequence[bytes], concurrency: int, stagger: float = 0.0
) -> Load:
    latencies: list[float] = []
    first_bytes: list[float] = []
    statuses: dict[int, int] = {}
    next_index = 0
    started = time.perf_counter()

    async def connection(number: int) -> None:
        nonlocal next_index
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(stagger * number / concurrency)
        try:
            while next_index < len(requests):
                index = next_index
                next_index += 1
                sent = time.perf_counter()
                writer.write(requests[index])
                status, first = await _read_answer(reader)
                done = time.perf_counter()
                latencies.append(done - sent)
                first_bytes.append(first - sent)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(connection(number) for number in range(concurrency)))
    return Load(len(requests), time.perf_counter() - started, latencies, first_bytes, statuses)


def run_load(port: int, requests: Sequence[bytes], concurrency: int, stagger: float = 0.0) -> Load:
    """Closed loop over ``concurrency`` connections; connection k starts ``k / concurrency``
    of ``stagger`` seconds late (with a fixed upstream latency, spread over it, so the
    connections do not send in lock-step waves)."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_load(port, requests, concurrency, stagger))
