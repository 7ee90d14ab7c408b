"""Local stand-ins for the platforms Switchyard talks to (demo mode, tests, benchmarks)."""

from core.sandbox.server import SandboxServer

__all__ = ["SandboxServer"]
