"""Typed config and secrets of a ``webhook`` connection."""

from __future__ import annotations

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, field_validator


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: AnyHttpUrl | None = Field(
        None,
        description="JSON REST API serving records at {base_url}/{object}/{id} (GET, PATCH).",
    )
    timeout_seconds: float = Field(15.0, gt=0, le=120)

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, value: AnyHttpUrl | None) -> AnyHttpUrl | None:
        # Config is readable by every role; credentials belong in secrets.api_token.
        if value is not None and (value.username or value.password):
            raise ValueError("must not contain user:password@; put a token in secrets.api_token")
        return value


class WebhookSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signing_secret: SecretStr = Field(min_length=16, description="Signs inbound events.")
    previous_signing_secret: SecretStr | None = Field(
        None, description="Still accepted during a rotation."
    )
    api_token: SecretStr | None = Field(None, description="Bearer token for base_url.")
