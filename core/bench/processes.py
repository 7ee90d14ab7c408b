"""The benchmarks' subprocesses — the sandbox and ``switchyard serve`` — and shared helpers.

Each server runs in its own process, started with this interpreter and stopped with
SIGTERM: the load generator (the benchmark's own process) never shares a GIL with what it
measures. Switchyard gets a fresh SQLite database in a temporary folder, migrated and seeded
with one tenant and a service key before it starts, and an environment holding only the
``SWITCHYARD_*`` variables given here (nothing inherited from the caller's shell).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "var" / "bench"
SANDBOX_KEY = "sk-ant-sandbox"
TENANT = "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


@dataclass
class Server:
    """A server subprocess on 127.0.0.1:``port``; its output goes to ``log``."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    cleanup: list[Path] = field(default_factory=list)

    def wait_ready(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"bench: {self.name} exited with {self.process.returncode} during start-up; "
                    f"its output ends:\n{self.log_tail()}"
                )
            try:
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"bench: {self.name} was not ready within {timeout:.0f} s ({self.log})")

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def logged_errors(self) -> int:
        """Lines of its (JSON) log at level error or worse."""
        text = self.log.read_text(errors="replace")
        return sum(
            '"level": "error"' in line or '"level": "critical"' in line
            for line in text.splitlines()
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mb(self) -> float:
        """Resident memory now (``VmRSS`` from /proc), in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return math.nan

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for path in self.cleanup:
            shutil.rmtree(path, ignore_errors=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_sandbox(
    *,
    latency_scale: float,
    dilate: bool = False,
    limits: Mapping[str, Mapping[str, int]] | None = None,
    faults: Mapping[str, float] | None = None,
    seed: int = 0,
    tag: str = "bench",
) -> Server:
    """``python -m core.bench.sandbox_server`` on a free port, ready to answer; its output
    goes to ``var/bench/logs/<tag>-sandbox.log``."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "core.bench.sandbox_server",
        "--port",
        str(port),
        "--latency-scale",
        repr(latency_scale),
        "--limits",
        json.dumps(dict(limits or {})),
        "--faults",
        json.dumps(dict(faults or {})),
        "--seed",
        str(seed),
    ]
    if dilate:
        command.append("--dilate")
    server = _spawn("sandbox", command, _clean_env(), port, tag)
    server.wait_ready("/_bench/stats", timeout=30)
    return server


def set_faults(sandbox: Server, faults: Mapping[str, float]) -> None:
    """Replace the running sandbox's injected faults (``{}``: none)."""
    httpx.post(f"{sandbox.url}/_bench/faults", json=dict(faults), timeout=10).raise_for_status()


def sandbox_stats(sandbox: Server) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{sandbox.url}/_bench/stats", timeout=10).json()
    return stats


def _spawn(name: str, command: list[str], env: dict[str, str], port: int, tag: str) -> Server:
    log = OUT / "logs" / f"{tag}-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as sink:
        # Always this interpreter running one of our modules, with arguments we built.
        process = subprocess.Popen(  # noqa: S603
            command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    return Server(name, process, port, log)


def _clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    if env.pop("PYTHONDONTWRITEBYTECODE", None):
        # Without bytecode every start compiles the SDK again (seconds); keep the cache
        # out of the source tree instead of not keeping it.
        env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "switchyard-bench-pyc")
    env.update(extra or {})
    return env


async def _seed(database_url: str) -> str:
    """One tenant with a service key; returns the key."""
    from core.auth import create_api_key, create_tenant
    from core.db.engine import make_engine, make_sessionmaker
    from core.db.models import Role

    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine).begin() as session:
            tenant = await create_tenant(session, TENANT)
            _, plaintext = await create_api_key(session, tenant.id, Role.SERVICE, "bench")
            return plaintext
    finally:
        await engine.dispose()


@dataclass
class Switchyard:
    server: Server
    api_key: str
    database_url: str


def start_switchyard(
    upstream: Server,
    *,
    limits: Mapping[str, Mapping[str, int]],
    gateway: Mapping[str, Any] | None = None,
    tag: str = "bench",
) -> Switchyard:
    """``switchyard serve --no-worker`` on a fresh SQLite database, upstream = ``upstream``.

    ``limits`` become ``SWITCHYARD_GATEWAY__LIMITS``; ``gateway`` holds other
    ``SWITCHYARD_GATEWAY__*`` settings by field name. Its output goes to
    ``var/bench/logs/<tag>-switchyard.log``.
    """
    from core.crypto import generate_key
    from core.db.migrate import upgrade

    folder = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
    database_url = f"sqlite:///{folder / 'switchyard.db'}"
    try:
        upgrade(database_url)
        api_key = asyncio.run(_seed(database_url))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    env = {
        "SWITCHYARD_DATABASE_URL": database_url,
        "SWITCHYARD_ENCRYPTION_KEYS": f"bench:{generate_key()}",
        "SWITCHYARD_LOG_LEVEL": "warning",
        "SWITCHYARD_MAPPINGS_DIR": str(ROOT / "mappings"),
        "SWITCHYARD_ANTHROPIC_BASE_URL": upstream.url,
        "SWITCHYARD_ANTHROPIC_API_KEY": SANDBOX_KEY,
        "SWITCHYARD_GATEWAY__LIMITS": json.dumps(dict(limits)),
    }
    for name, value in (gateway or {}).items():
        env[f"SWITCHYARD_GATEWAY__{name.upper()}"] = (
            value if isinstance(value, str) else json.dumps(value)
        )
    port = free_port()
    command = [sys.executable, "-m", "core.cli", "serve", "--no-worker", "--port", str(port)]
    server = _spawn("switchyard", command, _clean_env(env), port, tag)
    server.cleanup.append(folder)
    try:
        server.wait_ready("/readyz", timeout=60)
    except BaseException:
        server.stop()
        raise
    return Switchyard(server, api_key, database_url)


def write_result(name: str, payload: Mapping[str, Any]) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def columns(rows: list[list[str]]) -> list[str]:
    """Rows as aligned text columns (the first left-aligned), a rule under the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines
