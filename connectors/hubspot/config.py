"""Typed config and secrets of a ``hubspot`` connection.

Config is readable by every role; secrets are sealed at rest. A connection authenticates
either with a private app's access token (``secrets.access_token``) or as an OAuth app
(``secrets.refresh_token`` + ``secrets.client_id``; the rotated tokens then live in the
connection's sealed state, not here). ``secrets.client_secret`` verifies webhooks and, for
OAuth, refreshes tokens.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, model_validator

SignatureVersion = Literal["v1", "v2", "v3"]


def _v3_only() -> list[SignatureVersion]:
    return ["v3"]


class HubSpotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    app_id: int = Field(
        gt=0,
        description=(
            "Id of the HubSpot app (private or OAuth) whose token Switchyard writes with: "
            "webhook events with changeSource INTEGRATION and this sourceId are our own "
            "write-backs and start no flow."
        ),
    )
    portal_id: int = Field(gt=0, description="The HubSpot account (hub) id.")
    base_url: AnyHttpUrl = Field(
        AnyHttpUrl("https://api.hubapi.com"), description="HubSpot API root."
    )
    signature_versions: list[SignatureVersion] = Field(
        default_factory=_v3_only,
        min_length=1,
        description="Webhook signature versions accepted; v1/v2 carry no timestamp.",
    )
    ignored_change_sources: list[str] = Field(
        default_factory=list,
        description="Webhook changeSource values that start no flow (e.g. IMPORT).",
    )
    poll_objects: list[str] = Field(
        default_factory=lambda: ["contacts", "deals"],
        description="Object types polled through the CRM search API.",
    )
    poll_watch: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "contacts": ["message", "jobtitle", "company"],
            "deals": ["dealstage", "amount", "closedate", "description"],
        },
        description=(
            "Search cannot tell which property changed: a polled update reports these "
            "properties of its object type as changed."
        ),
    )
    poll_page_size: int = Field(100, ge=1, le=200)
    poll_lookback_seconds: int = Field(
        120, ge=0, le=3600, description="Re-read window for late-indexed search results."
    )
    search_max_results: int = Field(
        10_000, ge=100, le=10_000, description="HubSpot's cap on one search's results."
    )
    search_interval_seconds: float = Field(
        0.25, ge=0, le=10, description="Spacing of search calls (search has its own limit)."
    )
    associations: dict[str, list[str]] = Field(
        default_factory=lambda: {"deals": ["companies"]},
        description="Fetched records carry their first associated record of these types.",
    )
    association_properties: list[str] = Field(
        default_factory=lambda: ["name", "domain", "industry", "numberofemployees"]
    )
    idempotency_property: str | None = Field(
        None,
        description=(
            "A unique-value property that creates upsert on with the job's idempotency "
            "key; without it the connector refuses creates."
        ),
    )
    timeout_seconds: float = Field(15.0, gt=0, le=120)
    max_rate_wait_seconds: float = Field(
        5.0, ge=0, le=60, description="Longest in-call wait for the 10-second window."
    )

    @model_validator(mode="after")
    def _no_credentials_in_url(self) -> HubSpotConfig:
        if self.base_url.username or self.base_url.password:
            raise ValueError("base_url must not contain user:password@")
        return self


class HubSpotSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_secret: SecretStr = Field(min_length=1, description="App client secret.")
    access_token: SecretStr | None = Field(None, description="Private app access token.")
    refresh_token: SecretStr | None = Field(None, description="OAuth refresh token.")
    client_id: str | None = Field(None, description="OAuth app client id.")

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> HubSpotSecrets:
        oauth = self.refresh_token is not None or self.client_id is not None
        if self.access_token is not None and oauth:
            raise ValueError("give access_token (private app) or refresh_token + client_id")
        if self.access_token is None and (self.refresh_token is None or not self.client_id):
            raise ValueError("needs access_token, or refresh_token and client_id (OAuth)")
        return self

    @property
    def oauth(self) -> bool:
        return self.access_token is None
