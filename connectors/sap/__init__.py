"""The ``sap`` connector: SAP S/4HANA over OData V2, or SAP ECC/S/4 over RFC/BAPI.

``config.transport`` picks the transport (:mod:`.odata` over httpx, :mod:`.rfc` through
PyRFC); both speak the same object and field names (``A_SalesOrder``, ``SoldToParty``,
``to_Item.Material``), so flows do not care. Inbound: Event Mesh / Integration Suite
CloudEvents with a shared secret (:mod:`.webhooks`) or polling on change dates
(:mod:`.polling`, OData only). Writes: updates with ETags (a changed record is a
CONFLICT, never overwritten), creates made idempotent with a client reference derived
from the job's key, ``$batch`` for many updates. An ERP connector: core holds every write
for review. Registered under the ``switchyard.connectors`` entry point as ``sap``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel

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
from connectors.sap import webhooks
from connectors.sap.auth import Auth, BasicAuth, ClientCredentials
from connectors.sap.client import ODataClient
from connectors.sap.config import SapConfig, SapSecrets, check_pair
from connectors.sap.odata import ODataRecords
from connectors.sap.polling import Poller
from connectors.sap.rfc import Connect, RfcPool, RfcRecords, pyrfc_connection
from core.errors import ConnectorConfigInvalid, ConnectorError

__all__ = ["SapConnector", "SapConnectorFactory"]


class SapConnector:
    kind = ConnectorKind.ERP

    def __init__(
        self,
        config: SapConfig,
        secrets: SapSecrets,
        context: ConnectorContext,
        *,
        rfc_connect: Connect | None = None,
    ) -> None:
        self._config = config
        self._context = context
        self._webhook_secret = secrets.webhook_secret.get_secret_value()
        self._own_user = config.write_user or secrets.user
        self._http: httpx.AsyncClient | None = None
        self.odata: ODataRecords | None = None
        self.rfc: RfcRecords | None = None
        self.auth: Auth | None = None
        if config.transport == "odata":
            assert config.base_url is not None
            self._http = httpx.AsyncClient(
                base_url=str(config.base_url).rstrip("/"),
                timeout=min(config.timeout_seconds, context.http_timeout_seconds),
            )
            if config.token_url is not None:
                assert secrets.client_id is not None
                assert secrets.client_secret is not None
                self.auth = ClientCredentials(
                    self._http,
                    str(config.token_url),
                    secrets.client_id,
                    secrets.client_secret.get_secret_value(),
                )
            else:
                assert secrets.user is not None
                assert secrets.password is not None
                self.auth = BasicAuth(secrets.user, secrets.password.get_secret_value())
            self.client = ODataClient(
                self._http, self.auth, service_path=config.service_path, client=config.client
            )
            self.odata = ODataRecords(self.client, config)
        else:
            assert config.rfc is not None
            assert secrets.password is not None
            params = config.rfc.model_dump(
                exclude={"pool_size", "timeout_seconds"}, exclude_none=True
            ) | {
                "client": config.client,
                "user": secrets.user,
                "passwd": secrets.password.get_secret_value(),
            }
            chosen = rfc_connect

            def connect() -> Any:
                return (chosen or pyrfc_connection())(**params)

            self.rfc = RfcRecords(
                RfcPool(connect, config.rfc.pool_size),
                reference_field=config.create_reference.get("A_SalesOrder"),
                timeout=config.rfc.timeout_seconds,
            )
        self._poller = Poller(
            self._query,
            self._keys,
            objects=config.poll_objects,
            page_size=config.poll_page_size,
            own_user=self._own_user,
        )

    @property
    def _records(self) -> ODataRecords | RfcRecords:
        found = self.odata or self.rfc
        assert found is not None
        return found

    # ---------------------------------------------------------------- inbound

    def verify(self, request: InboundRequest) -> None:
        webhooks.verify(request, self._webhook_secret)

    def parse(self, request: InboundRequest) -> list[ChangeEvent]:
        return webhooks.parse(
            request, event_objects=self._config.event_objects, own_user=self._own_user
        )

    def ack(self, result: IngestResult) -> Ack | None:
        return None  # Event Mesh takes any 2xx as delivered

    async def poll(self, cursor: Mapping[str, Any] | None) -> PollResult:
        if self.odata is None:
            raise NotImplementedError("polling needs transport odata (RFC has no change feed)")
        return await self._poller.poll(cursor)

    async def _query(
        self, name: str, params: Mapping[str, str], next_url: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        assert self.odata is not None
        return await self.odata.query(name, params, next_url)

    async def _keys(self, name: str) -> tuple[Sequence[str], Sequence[str]]:
        assert self.odata is not None
        _, _, entity_set = await self.odata.entity(name)
        return entity_set.type.keys, list(entity_set.type.properties)

    # ---------------------------------------------------------------- records

    async def describe(self, object_name: str) -> list[FieldMeta]:
        return await self._records.describe(object_name)

    async def fetch(self, ref: RecordRef, fields: Sequence[str] | None = None) -> Record:
        return await self._records.fetch(ref, fields)

    async def write(self, patch: Patch, idempotency_key: str) -> WriteResult:
        if patch.record_id is None:
            return await self._records.create(patch, idempotency_key)
        return await self._records.update(patch)

    async def write_many(self, patches: Sequence[Patch]) -> list[WriteResult | ConnectorError]:
        """Update many records in ``$batch`` requests: a result or an error per patch."""
        if self.odata is None:
            raise NotImplementedError("write_many needs transport odata")
        return await self.odata.write_many(patches)

    async def aclose(self) -> None:
        if self.rfc is not None:
            await self.rfc.aclose()
        if self._http is not None:
            await self._http.aclose()


class SapConnectorFactory:
    name: ClassVar[str] = "sap"
    kind: ClassVar[ConnectorKind] = ConnectorKind.ERP
    config_model: ClassVar[type[BaseModel]] = SapConfig
    secrets_model: ClassVar[type[BaseModel]] = SapSecrets
    supports_polling: ClassVar[bool] = True
    outbound_url_fields: ClassVar[tuple[str, ...]] = ("base_url", "token_url")

    def __init__(self, *, rfc_connect: Connect | None = None) -> None:
        self._rfc_connect = rfc_connect

    async def start_demo_sandbox(self) -> DemoSandbox:
        from connectors.sap.demo import SapDemo

        return await SapDemo().start()

    def create(
        self, config: Mapping[str, Any], secrets: Mapping[str, Any], context: ConnectorContext
    ) -> SapConnector:
        parsed = SapConfig.model_validate(dict(config))
        sealed = SapSecrets.model_validate(dict(secrets))
        try:
            check_pair(parsed, sealed)
        except ValueError as exc:
            raise ConnectorConfigInvalid(str(exc)) from None
        return SapConnector(parsed, sealed, context, rfc_connect=self._rfc_connect)
