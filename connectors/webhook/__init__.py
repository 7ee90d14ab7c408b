"""The ``webhook`` connector: internal tools that POST signed JSON events and serve their
records over a small JSON REST API. Registered under the ``switchyard.connectors`` entry
point as ``webhook``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from connectors.base import (
    Ack,
    ChangeEvent,
    ConnectorContext,
    ConnectorKind,
    DemoSandbox,
    FieldMeta,
    InboundRequest,
    IngestResult,
    Patch,
    PollResult,
    Record,
    RecordRef,
    WriteResult,
)
from connectors.webhook import webhooks
from connectors.webhook.client import RecordsClient
from connectors.webhook.config import WebhookConfig, WebhookSecrets
from core.errors import ConnectorTerminalError

__all__ = ["WebhookConnector", "WebhookConnectorFactory"]


class WebhookConnector:
    kind = ConnectorKind.CRM

    def __init__(
        self, config: WebhookConfig, secrets: WebhookSecrets, context: ConnectorContext
    ) -> None:
        self._config = config
        self._context = context
        self._signing_secrets = [secrets.signing_secret.get_secret_value()]
        if secrets.previous_signing_secret is not None:
            self._signing_secrets.append(secrets.previous_signing_secret.get_secret_value())
        token = secrets.api_token.get_secret_value() if secrets.api_token else None
        self._client = (
            RecordsClient(str(config.base_url), token=token, timeout=config.timeout_seconds)
            if config.base_url is not None
            else None
        )

    def verify(self, request: InboundRequest) -> None:
        webhooks.verify(request, self._signing_secrets, self._context.webhook_tolerance_seconds)

    def parse(self, request: InboundRequest) -> list[ChangeEvent]:
        return webhooks.parse(request)

    def ack(self, result: IngestResult) -> Ack | None:
        return None

    async def poll(self, cursor: Mapping[str, Any] | None) -> PollResult:
        raise NotImplementedError("the webhook connector receives pushes only")

    def _records(self) -> RecordsClient:
        if self._client is None:
            raise ConnectorTerminalError(
                "this webhook connection has no config.base_url, so records cannot be "
                "fetched or written; set base_url on the connection"
            )
        return self._client

    async def fetch(self, ref: RecordRef, fields: Sequence[str] | None = None) -> Record:
        return await self._records().fetch(ref, fields)

    async def write(self, patch: Patch, idempotency_key: str) -> WriteResult:
        return await self._records().write(patch, idempotency_key)

    async def describe(self, object_name: str) -> list[FieldMeta]:
        # A generic REST API publishes no field metadata; flows on it skip metadata checks.
        return []

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class WebhookConnectorFactory:
    name: ClassVar[str] = "webhook"
    kind: ClassVar[ConnectorKind] = ConnectorKind.CRM
    config_model: ClassVar[type[WebhookConfig]] = WebhookConfig
    secrets_model: ClassVar[type[WebhookSecrets]] = WebhookSecrets
    supports_polling: ClassVar[bool] = False
    outbound_url_fields: ClassVar[tuple[str, ...]] = ("base_url",)

    async def start_demo_sandbox(self) -> DemoSandbox:
        from connectors.webhook.demo import WebhookDemo

        return await WebhookDemo().start()

    def create(
        self, config: Mapping[str, Any], secrets: Mapping[str, Any], context: ConnectorContext
    ) -> WebhookConnector:
        return WebhookConnector(
            WebhookConfig.model_validate(dict(config)),
            WebhookSecrets.model_validate(dict(secrets)),
            context,
        )
