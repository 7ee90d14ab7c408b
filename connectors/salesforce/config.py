"""Typed config and secrets of a ``salesforce`` connection.

Config is readable by every role of the tenant; anything that grants access lives in
secrets (client secret, private key, password, security token, relay secret).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

SALESFORCE_ID = r"^[a-zA-Z0-9]{15}([a-zA-Z0-9]{3})?$"
API_NAME = r"^[A-Za-z][A-Za-z0-9_]*$"
MIN_API_VERSION = 41.0


class AuthFlow(StrEnum):
    JWT_BEARER = "jwt_bearer"  # connected app + certificate; production integrations
    CLIENT_CREDENTIALS = "client_credentials"  # connected app with a "run as" user
    PASSWORD = "password"  # noqa: S105 - a grant name, not a secret; username + password + security token; developer orgs only


class SalesforceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    login_url: AnyHttpUrl = Field(
        AnyHttpUrl("https://login.salesforce.com"),
        description=(
            "Token host: https://login.salesforce.com, https://test.salesforce.com (sandbox "
            "orgs) or the org's My Domain URL (required for client credentials)."
        ),
    )
    instance_url: AnyHttpUrl | None = Field(
        None,
        description=(
            "The org's API host, e.g. https://acme.my.salesforce.com. Optional: the token "
            "response's instance_url wins, as Salesforce requires."
        ),
    )
    organization_id: str = Field(
        pattern=SALESFORCE_ID,
        description="The org's id (00D…); outbound messages from any other org are refused.",
    )
    api_version: str = Field("59.0", pattern=r"^[0-9]{2,3}\.0$")
    auth_flow: AuthFlow = AuthFlow.JWT_BEARER
    username: str | None = Field(
        None, description="The integration user (JWT bearer and password flows)."
    )
    jwt_audience: str | None = Field(
        None,
        description=(
            "The JWT 'aud' claim; default https://login.salesforce.com, or "
            "https://test.salesforce.com when login_url is a sandbox host."
        ),
    )
    integration_user_id: str | None = Field(
        None,
        pattern=SALESFORCE_ID,
        description=(
            "The user Switchyard writes as (005…). Changes it made are not fed back into "
            "flows; outbound messages and polls need LastModifiedById to tell."
        ),
    )
    poll_objects: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Objects to poll by SystemModstamp, each with the fields events carry.",
    )
    poll_lookback_seconds: int = Field(
        5, ge=0, le=600, description="Re-read this far back each poll for late commits."
    )
    external_id_fields: dict[str, str] = Field(
        default_factory=dict,
        description="Per object, the External ID field creates upsert on (idempotent creates).",
    )
    writeback_fields: dict[str, list[str]] = Field(
        default_factory=dict,
        description=(
            "Per object, the fields flows write. A CDC change by the integration user that "
            "touches only these fields is our own write-back and is dropped."
        ),
    )
    platform_events: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Platform event API name → 'Object.RecordIdField', e.g. "
            "{'Lead_Scored__e': 'Lead.Lead_Id__c'}: which record an event is about."
        ),
    )
    api_usage_soft_limit: float = Field(
        0.9, gt=0, lt=1, description="Above this share of the daily API allocation, slow down."
    )
    api_usage_hard_limit: float = Field(
        0.98, gt=0, le=1, description="Above this share, stop calling and retry later."
    )
    timeout_seconds: float = Field(30.0, gt=0, le=600)
    ca_file: str | None = Field(
        None,
        description=(
            "PEM file of extra CA certificates to trust (a TLS-inspecting proxy, or the "
            "local SANDBOX); the system store otherwise."
        ),
    )

    @field_validator("login_url", "instance_url")
    @classmethod
    def _https_without_credentials(cls, value: AnyHttpUrl | None) -> AnyHttpUrl | None:
        if value is None:
            return None
        if value.username or value.password:
            raise ValueError("must not contain user:password@; credentials go in secrets")
        if value.scheme != "https":
            raise ValueError("Salesforce is only reachable over https://")
        return value

    @field_validator("poll_objects", "external_id_fields", "writeback_fields", "platform_events")
    @classmethod
    def _api_names(cls, value: dict[str, object]) -> dict[str, object]:
        import re

        for key, item in value.items():
            names = [key, *(item if isinstance(item, list) else str(item).split("."))]
            for name in names:
                if not re.fullmatch(API_NAME, str(name)):
                    raise ValueError(f"{name!r} is not a Salesforce API name")
        return value

    @model_validator(mode="after")
    def _flow_needs(self) -> SalesforceConfig:
        if self.auth_flow in (AuthFlow.JWT_BEARER, AuthFlow.PASSWORD) and not self.username:
            raise ValueError(f"auth_flow {self.auth_flow.value} needs config.username")
        if float(self.api_version) < MIN_API_VERSION:
            raise ValueError(
                f"api_version must be {MIN_API_VERSION} or later (record-type picklists are "
                "checked through the User Interface API)"
            )
        if self.api_usage_hard_limit <= self.api_usage_soft_limit:
            raise ValueError("api_usage_hard_limit must be above api_usage_soft_limit")
        return self

    @property
    def token_url(self) -> str:
        return f"{str(self.login_url).rstrip('/')}/services/oauth2/token"

    def audience(self) -> str:
        if self.jwt_audience:
            return self.jwt_audience
        host = self.login_url.host or ""
        sandbox = host == "test.salesforce.com" or host.endswith(".sandbox.my.salesforce.com")
        return "https://test.salesforce.com" if sandbox else "https://login.salesforce.com"


class SalesforceSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_id: SecretStr | None = Field(None, description="The connected app's consumer key.")
    client_secret: SecretStr | None = Field(
        None, description="Consumer secret (client credentials and password flows)."
    )
    private_key: SecretStr | None = Field(
        None, description="PEM RSA key whose certificate is on the connected app (JWT bearer)."
    )
    password: SecretStr | None = Field(None, description="Integration user's password.")
    security_token: SecretStr | None = Field(
        None, description="Appended to the password (password flow)."
    )
    relay_secret: SecretStr | None = Field(
        None,
        min_length=16,
        description="Signs CDC / platform-event deliveries from the relay (HMAC).",
    )


def missing_secrets(config: SalesforceConfig, secrets: SalesforceSecrets) -> list[str]:
    """Secrets the chosen flow needs but the connection lacks."""
    needed = {
        AuthFlow.JWT_BEARER: ["client_id", "private_key"],
        AuthFlow.CLIENT_CREDENTIALS: ["client_id", "client_secret"],
        AuthFlow.PASSWORD: ["client_id", "client_secret", "password"],
    }[config.auth_flow]
    return [name for name in needed if getattr(secrets, name) is None]
