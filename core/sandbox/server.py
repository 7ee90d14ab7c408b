"""Serve a sandbox's ASGI app on 127.0.0.1 in a background thread (SANDBOX use only).

uvicorn on an ephemeral port, in its own thread and event loop, so it works the same from
sync code, from async tests and next to the main server.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

from starlette.types import ASGIApp


class SandboxServer:
    """Serve an ASGI app on 127.0.0.1 in a background thread (SANDBOX use only)."""

    def __init__(
        self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, **options: Any
    ) -> None:
        """``options`` go to ``uvicorn.Config`` (e.g. ``ssl_certfile``, ``ssl_keyfile``)."""
        import uvicorn  # heavy; only sandbox users pay for it

        self._config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            ws="none",
            log_level="warning",
            **options,
        )
        self._server = uvicorn.Server(self._config)
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        if self._thread is None:
            raise RuntimeError("the sandbox server is not running; call start() first")
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Bind, start serving and return once requests are accepted."""
        # Bind here, not in uvicorn, so the ephemeral port is known before the thread runs.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self._socket = sock
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="sandbox", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sandbox server did not start within {timeout}s")
            time.sleep(0.01)

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> SandboxServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> SandboxServer:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)
