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

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from core.errors import SettingsError
from core.gateway.redaction.policy import RedactionPolicy
from core.gateway.routing import DEFAULT_MAX_TOKENS, DEFAULT_TASK_TIERS, DEFAULT_TIER_MODELS

ENV_PREFIX = "SWITCHYARD_"
DEFAULT_DATABASE_URL = "sqlite:///./var/switchyard.db"


class GatewaySettings(BaseModel):
    """The Claude gateway (``SWITCHYARD_GATEWAY__*``); README lists each field."""

    model_config = ConfigDict(extra="forbid")

    catalog_file: Path | None = Field(
        None, description="Model/price data file; the bundled core/gateway/models.yaml if unset."
    )
    task_tiers: dict[str, str] = Field(
        default_factory=lambda: {str(k): v for k, v in DEFAULT_TASK_TIERS.items()},
        description="Task kind → tier (JSON object).",
    )
    tier_models: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_TIER_MODELS),
        description="Tier → model id (JSON object); tiers escalate in the order given.",
    )
    max_tokens: dict[str, int] = Field(
        default_factory=lambda: {str(k): v for k, v in DEFAULT_MAX_TOKENS.items()},
        description="Task kind → default max_tokens when a request names none (JSON object).",
    )
    escalate: bool = Field(True, description="Retry an answer that fails validation one tier up.")
    naive_model: str = Field(
        "claude-opus-5-5", description="Model the savings figure compares against."
    )
    auto_cache: bool = Field(True, description="Place prompt-cache breakpoints when none are set.")
    compress: bool = Field(False, description="Compress reference documents for every caller.")
    dedup: bool = Field(True, description="Share one upstream call among identical requests.")
    response_cache_seconds: float = Field(
        300, ge=0, description="TTL of cached answers (temperature 0 or opt-in); 0 turns it off."
    )
    response_cache_max_bytes: int = Field(
        64 * 2**20, gt=0, description="In-process response cache size."
    )
    admission: Literal["auto", "memory", "redis"] = Field(
        "auto", description="Token buckets in process, or on Redis (auto: Redis if configured)."
    )
    limits: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description='Per-model {"rpm","input_tpm","output_tpm"} overriding the catalogue.',
    )
    headroom: float = Field(
        0.05,
        ge=0,
        lt=0.5,
        description="Share of each rate limit kept unused: our buckets and Anthropic's are "
        "never perfectly in step, and a guess too high costs a 429.",
    )
    tenant_fairness: bool = Field(
        True,
        description="Within a priority, tenants waiting for a model share it by weight "
        "(fair queueing); off: first come, first served across tenants.",
    )
    tenant_weights: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict,
        description="Per tenant id, its admission weight (others 1): while both wait, a "
        "tenant of weight 2 is admitted twice as much as one of weight 1.",
    )
    interactive_deadline_seconds: float = Field(
        60, gt=0, description="Longest an interactive call may wait and retry."
    )
    background_deadline_seconds: float = Field(
        900, gt=0, description="Longest a background (flow) call may wait and retry."
    )
    max_retries: int = Field(5, ge=0, le=10, description="Upstream retries per call.")
    upstream_timeout_seconds: float = Field(600, gt=0, description="One upstream attempt.")
    max_body_bytes: int = Field(32 * 2**20, gt=0, description="/v1/messages body limit.")
    auth_cache_seconds: float = Field(
        30, ge=0, description="How long a verified API key is trusted without a lookup."
    )
    redaction: RedactionPolicy = Field(
        default_factory=RedactionPolicy,
        description="What leaves per data class: redact (placeholders, restored in the "
        'answer), block or allow; e.g. {"actions": {"email": "allow"}}. Credentials are '
        "blocked by default, personal data redacted.",
    )
    tenant_redaction: dict[str, RedactionPolicy] = Field(
        default_factory=dict,
        description="Per tenant id, overrides of `redaction` (a flow's data_policy goes on top).",
    )
    budgets: bool = Field(
        True, description="Enforce the budgets set with /v1/budgets (402 when exhausted)."
    )
    audit: bool = Field(
        True,
        description="Keep each call's prompt and answer (after redaction) encrypted with "
        "SWITCHYARD_ENCRYPTION_KEYS; read only via POST /v1/calls/{id}/audit.",
    )
    audit_retention_days: int = Field(
        30, ge=1, description="Days an encrypted call audit record is kept before purging."
    )
    batch_max_requests: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Message Batches: submit a batch once this many requests wait.",
    )
    batch_max_wait_seconds: float = Field(
        60, ge=0, description="Message Batches: or once the oldest waiting request waited this."
    )
    batch_poll_seconds: float = Field(
        30, gt=0, description="Message Batches: how often a submitted batch is polled."
    )
    batch_max_resubmits: int = Field(
        2,
        ge=0,
        le=10,
        description="Message Batches: resubmissions of an expired or transiently errored "
        "request before its job fails.",
    )
    batch_retention_days: int = Field(
        7,
        ge=1,
        description="Message Batches: days a resolved request (its sealed prompt and answer) "
        "is kept before housekeeping deletes it.",
    )
    prompt_flag_provider: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="'package.module:factory' returning an OpenFeature provider that answers "
        "prompt-version.<name> flags; default: Switchyard's own rollouts (/v1/prompts).",
    )


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
    review_four_eyes: bool = Field(
        True,
        description="Whoever triggered a change cannot approve its review item; false lets "
        "them (a team of one).",
    )
    review_expiry_hours: float = Field(
        72,
        gt=0,
        description="A review item nobody decided within this many hours expires; its job "
        "ends without writing.",
    )
    public_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description="The URL platforms reach Switchyard at (behind a proxy, its public "
        "address), e.g. https://switchyard.example.com: webhook signatures that cover the "
        "URL are checked against PUBLIC_URL/hooks/{connection_id}.",
    )
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
    housekeeping_seconds: float = Field(
        60.0, gt=0, description="How often workers release stale reservations and the like."
    )
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
    anthropic_base_url: str = Field(
        "https://api.anthropic.com",
        description="Upstream Messages API (any Anthropic-compatible endpoint).",
    )
    anthropic_api_key: SecretStr | None = Field(
        None, description="Switchyard's upstream key; never leaves the server."
    )
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
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
