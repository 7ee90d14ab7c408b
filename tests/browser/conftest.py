"""Browser tests: Playwright driving Debian's Chromium against a real `switchyard serve`.

The browser is the system's /usr/bin/chromium (`.ci/run` installs it); Playwright never
downloads one. Without it these tests skip, unless SWITCHYARD_REQUIRE_BROWSER=1 (CI), where
a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_KEY

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass(frozen=True)
class RunningServer:
    base_url: str
    admin_key: str


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "core.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not Path(CHROMIUM).exists():
        if os.environ.get("SWITCHYARD_REQUIRE_BROWSER") == "1":
            pytest.fail(f"Chromium not found at {CHROMIUM}; install Debian's `chromium`")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """`switchyard serve` on a fresh embedded database, with one tenant and admin key."""
    folder = tmp_path_factory.mktemp("serve")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "SWITCHYARD_DATABASE_URL": f"sqlite:///{folder / 'switchyard.db'}",
        "SWITCHYARD_ENCRYPTION_KEYS": TEST_KEY,
        "SWITCHYARD_LOG_LEVEL": "warning",
    }
    _cli(env, "db", "upgrade")
    _cli(env, "tenants", "create", "acme")
    key = _cli(env, "keys", "create", "--tenant", "acme", "--role", "admin").strip()
    process = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "serve", "--port", str(port)], env=env
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("switchyard serve did not become ready")
            time.sleep(0.1)
        yield RunningServer(base_url, key)
    finally:
        process.terminate()
        process.wait(timeout=30)
