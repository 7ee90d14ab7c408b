"""The package's public surface is exactly its ``__all__``."""

from __future__ import annotations

import core.sandbox.anthropic as package


def test_exported_members() -> None:
    assert package.__all__ == [
        "AnthropicSandbox",
        "Faults",
        "ModelUsage",
        "RateLimits",
        "SandboxServer",
        "SandboxStats",
    ]
    public = {name for name in vars(package) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(package, name)).__name__ == "module"}
    assert public - modules == set(package.__all__)
