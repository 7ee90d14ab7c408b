"""Typed config and secrets of a ``dynamics`` connection (Dataverse / Dynamics 365).

Config is readable by every role of the tenant; the app registration's client secret and
the webhook key live in secrets. The connection authenticates as an Azure AD (Entra ID)
app registration that has an Application User in the environment (client credentials,
scope ``{environment_url}/.default``).
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, field_validator

PUBLIC_AUTHORITY = "https://login.microsoftonline.com"
LOGICAL_NAME = r"^[a-z][a-z0-9_]{0,99}$"
GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class WebhookAuthKind(StrEnum):
    HEADER = "header"  # HttpHeader: a request header carries the key
    WEBHOOKKEY = "webhookkey"  # WebhookKey: ?code=<key> (Azure Functions style)
    QUERYSTRING = "querystring"  # HttpQueryString: ?<name>=<key>


class WebhookAuth(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: WebhookAuthKind
    name: str = Field(
        "code",
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.\-]+$",
        description="Header or query parameter carrying the key (WebhookKey always uses code).",
    )

    @property
    def parameter(self) -> str:
        return "code" if self.kind is WebhookAuthKind.WEBHOOKKEY else self.name


def _default_poll() -> dict[str, list[str]]:
    return {
        "account": ["name", "description", "revenue", "numberofemployees", "creditonhold"],
        "incident": ["title", "description", "prioritycode", "casetypecode"],
    }


class DynamicsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    environment_url: AnyHttpUrl = Field(
        description="The environment's URL, e.g. https://contoso.crm4.dynamics.com."
    )
    tenant_id: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9.\-]+$",
        description="The Azure AD tenant (GUID or domain) the app registration lives in.",
    )
    webhook_auth: WebhookAuth = Field(
        default_factory=lambda: WebhookAuth(kind=WebhookAuthKind.WEBHOOKKEY),
        description="How the registered service endpoint authenticates its POSTs.",
    )
    authority_host: AnyHttpUrl = Field(
        AnyHttpUrl(PUBLIC_AUTHORITY),
        description="Azure AD authority host (national clouds differ; the SANDBOX serves its own).",
    )
    api_version: str = Field("9.2", pattern=r"^9\.[0-2]$")
    application_user_id: str | None = Field(
        None,
        pattern=GUID,
        description=(
            "systemuserid of the Application User Switchyard writes as: its changes are our "
            "write-backs and start no flow. Learned with WhoAmI when absent (polling only)."
        ),
    )
    user_emails: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "systemuserid → email of people who change records, so review four-eyes can "
            "recognise them (webhook bodies name users by id only)."
        ),
    )
    poll_objects: dict[str, list[str]] = Field(
        default_factory=_default_poll,
        description="Tables (logical names) polled with change tracking, each with its columns.",
    )
    poll_page_size: int = Field(500, ge=1, le=5000, description="Prefer: odata.maxpagesize.")
    batch_size: int = Field(100, ge=1, le=1000, description="Operations per $batch changeset.")
    max_concurrency: int = Field(
        8, ge=1, le=52, description="Requests in flight per connection (the platform allows 52)."
    )
    max_retry_wait_seconds: float = Field(
        5.0, ge=0, le=300, description="Longest Retry-After waited inside a call."
    )
    timeout_seconds: float = Field(30.0, gt=0, le=300)
    ca_file: str | None = Field(
        None, description="PEM file of extra CA certificates (a TLS proxy, or the SANDBOX)."
    )

    @field_validator("environment_url", "authority_host")
    @classmethod
    def _no_credentials(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        if value.username or value.password:
            raise ValueError("must not contain user:password@; credentials go in secrets")
        if value.scheme != "https":
            raise ValueError("Dataverse and Azure AD are only reachable over https://")
        if value.query or value.fragment:
            raise ValueError("must not carry a query or fragment")
        return value

    @field_validator("poll_objects")
    @classmethod
    def _logical_names(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for table, columns in value.items():
            for name in [table, *columns]:
                if not re.fullmatch(LOGICAL_NAME, name):
                    raise ValueError(f"{name!r} is not a Dataverse logical name")
        return value

    @field_validator("user_emails")
    @classmethod
    def _user_ids(cls, value: dict[str, str]) -> dict[str, str]:
        for user_id in value:
            if not re.fullmatch(GUID, user_id):
                raise ValueError(f"{user_id!r} is not a systemuserid (GUID)")
        return {k.lower(): v for k, v in value.items()}

    @property
    def root(self) -> str:
        return str(self.environment_url).rstrip("/")

    @property
    def api_root(self) -> str:
        return f"{self.root}/api/data/v{self.api_version}"

    @property
    def scope(self) -> str:
        return f"{self.root}/.default"

    @property
    def authority(self) -> str:
        return f"{str(self.authority_host).rstrip('/')}/{self.tenant_id}"

    @property
    def public_authority(self) -> bool:
        return str(self.authority_host).rstrip("/") == PUBLIC_AUTHORITY


class DynamicsSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(pattern=GUID, description="The app registration's application id.")
    client_secret: SecretStr = Field(min_length=1, description="The app registration's secret.")
    webhook_secret: SecretStr = Field(
        min_length=16, description="The key the service endpoint sends (header or query)."
    )
