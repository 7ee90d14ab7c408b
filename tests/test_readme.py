"""README's configuration reference names every setting the code reads."""

from __future__ import annotations

from pathlib import Path

from core.settings import ENV_PREFIX, GatewaySettings, Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_is_documented() -> None:
    text = README.read_text()
    missing = [
        f"{ENV_PREFIX}{name.upper()}"
        for name in Settings.model_fields
        if f"`{ENV_PREFIX}{name.upper()}`" not in text and name != "gateway"
    ]
    missing += [
        f"{ENV_PREFIX}GATEWAY__{name.upper()}"
        for name in GatewaySettings.model_fields
        if f"`{ENV_PREFIX}GATEWAY__{name.upper()}`" not in text
    ]
    assert missing == []
