"""The package's public surface is exactly its ``__all__``."""

from __future__ import annotations

import core.gateway.redaction as redaction


def test_exported_members() -> None:
    public = {name for name in dir(redaction) if not name.startswith("_")}
    modules = {"detectors", "placeholders", "policy", "streaming"}
    assert public - modules == set(redaction.__all__)
