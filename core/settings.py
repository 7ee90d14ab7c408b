"""One Settings object for the whole process.

Sources, strongest first: explicit arguments, ``SWITCHYARD_*`` environment variables
(``__`` between nested sections), files in ``SWITCHYARD_SECRETS_DIR`` (one file per
setting, for mounted Kubernetes secrets), the YAML file named by ``SWITCHYARD_CONFIG_FILE``,
then the defaults below. :func:`load_settings` turns validation failures into a
:class:`~core.errors.SettingsError` that names the variable to fix.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from core.errors import SettingsError

ENV_PREFIX = "SWITCHYARD_"
DEFAULT_DATABASE_URL = "sqlite:///./var/switchyard.db"


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every knob Switchyard reads at start; README's configuration table lists each one
    (tests/test_readme.py checks that none is missing)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL; sqlite:/// (embedded) or postgresql:// (scale-out).",
    )
    redis_url: str | None = Field(
        None, description="Redis for limits and caches shared across instances (gateway)."
    )
    encryption_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated KEY_ID:BASE64_32_BYTES; the first encrypts, all decrypt.",
    )
    encryption_key_file: Path = Field(
        Path("var/encryption.key"),
        description="Embedded mode only: where a generated key is kept when none is set.",
    )
    hook_max_body_bytes: int = Field(1_048_576, gt=0, description="Webhook body limit.")
    api_max_body_bytes: int = Field(1_048_576, gt=0, description="API request body limit.")
    webhook_tolerance_seconds: int = Field(300, gt=0, description="Max age of a signed hook.")
    worker_concurrency: int = Field(8, gt=0, le=1024, description="Jobs run at once.")
    worker_metrics_port: int | None = Field(
        None,
        gt=0,
        lt=65536,
        description="`switchyard worker` serves Prometheus /metrics on this port (off if unset).",
    )
    lease_seconds: float = Field(30.0, ge=1, description="Claim lease; renewed at 1/3.")
    worker_poll_seconds: float = Field(0.5, gt=0, description="Idle wait between claims.")
    shutdown_grace_seconds: float = Field(20.0, ge=0, description="SIGTERM grace period.")
    scheduler_tick_seconds: float = Field(5.0, gt=0, description="Polling scheduler tick.")
    callback_timeout_seconds: float = Field(10.0, gt=0, description="Callback HTTP timeout.")
    callback_allow_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CIDRs callbacks may reach despite being private (e.g. 127.0.0.0/8).",
    )
    mappings_dir: Path = Field(Path("mappings"), description="Flow files (mappings/<platform>/).")
    connector_allow_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CIDRs connection URLs (e.g. base_url) may point into although private.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level."
    )
    log_format: Literal["json", "console"] = Field(
        "json", description="json (one object per line) or console."
    )
    host: str = Field("127.0.0.1", description="`switchyard serve` bind address.")
    port: int = Field(8000, gt=0, lt=65536, description="`switchyard serve` port.")

    @field_validator(
        "encryption_keys", "callback_allow_networks", "connector_allow_networks", mode="before"
    )
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("callback_allow_networks", "connector_allow_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0].split("+", 1)[0]
        if scheme not in {"sqlite", "postgresql", "postgres"}:
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value

    @property
    def is_embedded(self) -> bool:
        """SQLite: one process runs the API and the worker."""
        return self.database_url.startswith("sqlite")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        secrets_dir = os.environ.get(f"{ENV_PREFIX}SECRETS_DIR")
        if secrets_dir:
            from pydantic_settings import SecretsSettingsSource

            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir))
        config_file = os.environ.get(f"{ENV_PREFIX}CONFIG_FILE")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


def _variable_name(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part) for part in loc).upper()


def load_settings(**overrides: Any) -> Settings:
    """Build Settings, or raise SettingsError naming every bad variable and why."""
    config_file = os.environ.get(f"{ENV_PREFIX}CONFIG_FILE")
    if config_file and not Path(config_file).is_file():
        raise SettingsError(f"{ENV_PREFIX}CONFIG_FILE: no such file {config_file!r}")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [f"{_variable_name(err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
