"""The ``salesforce`` connector: Outbound Messages, CDC / platform events from a relay and
SOQL polling in; records fetched, written and described over the REST API through
simple-salesforce. Registered under the ``switchyard.connectors`` entry point as
``salesforce``.

One connection is one org. Inbound deliveries to ``/hooks/{connection_id}`` are told apart
by their media type: ``text/xml`` is an Outbound Message (checked by org id, answered with
the SOAP Ack once stored, :mod:`.outbound`); JSON is a relay delivery (HMAC-signed,
answered with Switchyard's 202, :mod:`.cdc`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar
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
from connectors.salesforce import outbound
from connectors.salesforce.auth import TokenSource
from connectors.salesforce.cdc import Parser as RelayParser
from connectors.salesforce.cdc import verify as verify_relay
from connectors.salesforce.client import ApiBudget, SalesforceClient, http_session
from connectors.salesforce.config import SalesforceConfig, SalesforceSecrets, missing_secrets
from connectors.salesforce.polling import Poller
from connectors.salesforce.records import Records
from core.errors import ConnectorConfigInvalid, ConnectorError

__all__ = ["SalesforceConnector", "SalesforceConnectorFactory"]

# Set by parse() for the request being handled, read by ack() in the same request task:
# the protocol's ack() sees only the ingest result, not which kind of delivery it was.
_soap_delivery: ContextVar[bool] = ContextVar("salesforce_soap_delivery", default=True)


class SalesforceConnector:
    kind = ConnectorKind.CRM

    def __init__(
        self, config: SalesforceConfig, secrets: SalesforceSecrets, context: ConnectorContext
    ) -> None:
        self._config = config
        self._context = context
        self._relay_secret = (
            secrets.relay_secret.get_secret_value() if secrets.relay_secret else None
        )
        self._relay = RelayParser(
            config.integration_user_id, config.writeback_fields, config.platform_events
        )
        timeout = min(config.timeout_seconds, context.http_timeout_seconds)
        self._http = http_session(config.ca_file, timeout)
        self.budget = ApiBudget(config.api_usage_soft_limit, config.api_usage_hard_limit)
        self._http.hooks["response"].append(self.budget.observe)
        self.tokens = TokenSource(config, secrets, context.state, self._http)
        self.client = SalesforceClient(
            self.tokens,
            self._http,
            self.budget,
            api_version=config.api_version,
            timeout=timeout,
        )
        self._records = Records(self.client, context.state, config.external_id_fields)
        self._poller = Poller(
            self.client,
            config.poll_objects,
            config.poll_lookback_seconds,
            config.integration_user_id,
        )

    # ------------------------------------------------------------------ inbound

    def verify(self, request: InboundRequest) -> None:
        if outbound.is_soap(request.header("content-type")):
            outbound.verify(request.body, self._config.organization_id)
        else:
            verify_relay(request, self._relay_secret, self._context.webhook_tolerance_seconds)

    def parse(self, request: InboundRequest) -> list[ChangeEvent]:
        soap = outbound.is_soap(request.header("content-type"))
        _soap_delivery.set(soap)
        if soap:
            return outbound.parse(request.body, self._config.integration_user_id)
        return self._relay.parse(request.body)

    def ack(self, result: IngestResult) -> Ack | None:
        return outbound.ack() if _soap_delivery.get() else None

    async def poll(self, cursor: Mapping[str, Any] | None) -> PollResult:
        return await self._poller.poll(cursor)

    # ----------------------------------------------------------------- records

    async def fetch(self, ref: RecordRef, fields: Sequence[str] | None = None) -> Record:
        return await self._records.fetch(ref, fields)

    async def write(self, patch: Patch, idempotency_key: str) -> WriteResult:
        return await self._records.write(patch, idempotency_key)

    async def write_many(
        self, patches: Sequence[Patch], idempotency_key: str
    ) -> list[WriteResult | ConnectorError]:
        return await self._records.write_many(patches, idempotency_key)

    async def describe(self, object_name: str) -> list[FieldMeta]:
        return await self._records.describe(object_name)

    async def aclose(self) -> None:
        self._http.close()


class SalesforceConnectorFactory:
    name: ClassVar[str] = "salesforce"
    kind: ClassVar[ConnectorKind] = ConnectorKind.CRM
    config_model: ClassVar[type[SalesforceConfig]] = SalesforceConfig
    secrets_model: ClassVar[type[SalesforceSecrets]] = SalesforceSecrets
    supports_polling: ClassVar[bool] = True
    outbound_url_fields: ClassVar[tuple[str, ...]] = ("login_url", "instance_url")

    async def start_demo_sandbox(self) -> DemoSandbox:
        from connectors.salesforce.demo import SalesforceDemo

        return await SalesforceDemo().start()

    def create(
        self, config: Mapping[str, Any], secrets: Mapping[str, Any], context: ConnectorContext
    ) -> SalesforceConnector:
        parsed = SalesforceConfig.model_validate(dict(config))
        parsed_secrets = SalesforceSecrets.model_validate(dict(secrets))
        missing = missing_secrets(parsed, parsed_secrets)
        if missing:
            raise ConnectorConfigInvalid(
                f"auth_flow {parsed.auth_flow.value} needs secrets: {', '.join(missing)}"
            )
        return SalesforceConnector(parsed, parsed_secrets, context)
