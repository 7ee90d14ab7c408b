"""A lean HTTP/1.1 load generator: pre-built requests over keep-alive sockets.

The requests (bodies, signatures) are built before the clock starts, and responses are
parsed only as far as status and Content-Length, so the generator's own CPU use stays small
next to the server's on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class LoadResult:
    requests: int
    seconds: float
    latencies: list[float]
    statuses: dict[int, int]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return ordered[index]


def build_request(method: str, path: str, host: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def run_load(
    host: str,
    port: int,
    requests: Sequence[bytes],
    concurrency: int,
    *,
    rate: float | None = None,
) -> LoadResult:
    """Send every request once over ``concurrency`` keep-alive connections.

    Closed loop (``rate`` None): each connection sends its next request as soon as the
    previous one is answered — this finds the maximum throughput. Open loop (``rate`` in
    requests/s): request ``i`` is due at ``start + i / rate`` and its latency is measured
    from that due time, so a server that falls behind is charged for the wait too (no
    coordinated omission). This is how latency *at* a given load is reported.
    """
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_index = 0
    started = time.perf_counter()

    async def sender() -> None:
        nonlocal next_index
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while next_index < len(requests):
                index = next_index
                next_index += 1
                due = time.perf_counter()
                if rate is not None:
                    due = started + index / rate
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                writer.write(requests[index])
                status = await _read_response(reader)
                latencies.append(time.perf_counter() - due)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return LoadResult(len(requests), time.perf_counter() - started, latencies, statuses)
