"""Settings: env vars, YAML file, mounted secrets; bad values name the variable to fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.crypto import KeyRing, generate_key
from core.errors import SettingsError
from core.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SWITCHYARD_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_embedded_setup() -> None:
    settings = load_settings()
    assert settings.database_url == "sqlite:///./var/switchyard.db"
    assert settings.is_embedded
    assert settings.worker_concurrency == 8


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SWITCHYARD_WORKER_CONCURRENCY", "eight"),
        ("SWITCHYARD_WORKER_CONCURRENCY", "0"),
        ("SWITCHYARD_LEASE_SECONDS", "0.1"),
        ("SWITCHYARD_DATABASE_URL", "mysql://db/switchyard"),
        ("SWITCHYARD_CALLBACK_ALLOW_NETWORKS", "10.0.0.0/8,not-a-network"),
        ("SWITCHYARD_LOG_LEVEL", "verbose"),
    ],
)
def test_an_invalid_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_every_bad_variable_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHYARD_PORT", "70000")
    monkeypatch.setenv("SWITCHYARD_HOOK_MAX_BODY_BYTES", "-1")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "SWITCHYARD_PORT" in str(caught.value)
    assert "SWITCHYARD_HOOK_MAX_BODY_BYTES" in str(caught.value)


def test_yaml_file_then_env_then_arguments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "switchyard.yaml"
    config.write_text("worker_concurrency: 3\nlease_seconds: 12\nlog_format: console\n")
    monkeypatch.setenv("SWITCHYARD_CONFIG_FILE", str(config))
    settings = load_settings()
    assert (settings.worker_concurrency, settings.lease_seconds) == (3, 12.0)
    assert settings.log_format == "console"

    monkeypatch.setenv("SWITCHYARD_WORKER_CONCURRENCY", "5")
    assert load_settings().worker_concurrency == 5  # env beats the file
    assert load_settings(worker_concurrency=7).worker_concurrency == 7  # arguments beat env


def test_a_bad_yaml_file_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SWITCHYARD_CONFIG_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(SettingsError, match="SWITCHYARD_CONFIG_FILE"):
        load_settings()

    config = tmp_path / "typo.yaml"
    config.write_text("worker_concurency: 3\n")
    monkeypatch.setenv("SWITCHYARD_CONFIG_FILE", str(config))
    with pytest.raises(SettingsError, match="WORKER_CONCURENCY"):
        load_settings()


def test_comma_separated_encryption_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    new, old = generate_key(), generate_key()
    monkeypatch.setenv("SWITCHYARD_ENCRYPTION_KEYS", f"new:{new}, old:{old}")
    settings = load_settings()
    entries = [key.get_secret_value() for key in settings.encryption_keys]
    assert entries == [f"new:{new}", f"old:{old}"]
    assert new not in repr(settings)  # secrets never show in reprs or logs
    assert KeyRing.parse(entries).active_key_id == "new"


def test_secrets_from_a_mounted_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = generate_key()
    (tmp_path / "SWITCHYARD_ENCRYPTION_KEYS").write_text(f"mounted:{key}\n")
    monkeypatch.setenv("SWITCHYARD_SECRETS_DIR", str(tmp_path))
    settings = load_settings()
    assert [k.get_secret_value() for k in settings.encryption_keys] == [f"mounted:{key}"]
