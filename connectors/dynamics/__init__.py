"""The ``dynamics`` connector: Microsoft Dynamics 365 / Dataverse through the Web API.

Inbound: webhooks from a registered service endpoint (:mod:`.webhooks`) or polling with
change tracking (:mod:`.polling`). Outbound: fetch, conditional update (ETag / If-Match),
idempotent creates, ``$batch`` updates (:mod:`.records`) and table metadata
(:mod:`.metadata`), over httpx (:mod:`.client`) with MSAL client-credential tokens
(:mod:`.auth`). An ERP connector: core holds every write for a reviewer unless the
connection allows otherwise. Registered under the ``switchyard.connectors`` entry point as
``dynamics``.
"""

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
    MemoryStateStore,
    Patch,
    PollResult,
    Record,
    RecordRef,
    StateStore,
    WriteResult,
)
from connectors.dynamics import webhooks
from connectors.dynamics.auth import MsalTokens
from connectors.dynamics.client import WebApi
from connectors.dynamics.config import DynamicsConfig, DynamicsSecrets
from connectors.dynamics.limits import Governor
from connectors.dynamics.metadata import (
    ATTRIBUTE_SELECT,
    ENTITY_SELECT,
    PICKLIST_CAST,
    Table,
    table_from,
)
from connectors.dynamics.polling import Poller
from connectors.dynamics.records import Rows

__all__ = ["DynamicsConnector", "DynamicsConnectorFactory"]

IDENTITY_KEY = "identity"


class DynamicsConnector:
    kind = ConnectorKind.ERP

    def __init__(
        self, config: DynamicsConfig, secrets: DynamicsSecrets, context: ConnectorContext
    ) -> None:
        self._config = config
        self._secrets = secrets
        self._context = context
        self._state: StateStore = context.state if context.state is not None else MemoryStateStore()
        self.tokens = MsalTokens(config, secrets, self._state)
        governor = Governor(
            max_concurrency=config.max_concurrency, max_wait=config.max_retry_wait_seconds
        )
        self.api = WebApi(config, self.tokens, governor)
        self._rows = Rows(self.api, context.connection_id, config.batch_size)
        self._tables: dict[str, Table] = {}
        self._own_user = config.application_user_id
        self._poller = Poller(
            lambda url, track: self.api.pages(
                url, what="change tracking", page_size=config.poll_page_size, track_changes=track
            ),
            self.table,
            objects=config.poll_objects,
        )

    # ---------------------------------------------------------------- inbound

    def verify(self, request: InboundRequest) -> None:
        webhooks.verify(
            request, self._config.webhook_auth, self._secrets.webhook_secret.get_secret_value()
        )

    def parse(self, request: InboundRequest) -> list[ChangeEvent]:
        return webhooks.parse(
            request,
            own_user_id=self._config.application_user_id,
            own_application_id=self._secrets.client_id,
            user_emails=self._config.user_emails,
        )

    def ack(self, result: IngestResult) -> Ack | None:
        return None  # any 2xx acknowledges a delivery; the body is ignored

    async def poll(self, cursor: Mapping[str, Any] | None) -> PollResult:
        return await self._poller.poll(cursor, await self.own_user())

    async def own_user(self) -> str:
        """The Application User's systemuserid: configured, remembered, or WhoAmI."""
        if self._own_user is None:
            stored = await self._state.get(IDENTITY_KEY)
            if stored and stored.get("user_id"):
                self._own_user = str(stored["user_id"])
            else:
                self._own_user = await self.api.who_am_i()
                await self._state.put(IDENTITY_KEY, {"user_id": self._own_user})
        return self._own_user

    # ---------------------------------------------------------------- records

    async def table(self, logical_name: str) -> Table:
        if logical_name not in self._tables:
            path = f"EntityDefinitions(LogicalName='{logical_name}')"
            what = f"metadata of {logical_name}"
            definition = await self.api.get_json(
                path,
                what=what,
                **{"$select": ENTITY_SELECT, "$expand": f"Attributes($select={ATTRIBUTE_SELECT})"},
            )
            picklists = await self.api.get_json(
                f"{path}/Attributes/{PICKLIST_CAST}",
                what=what,
                **{"$select": "LogicalName", "$expand": "OptionSet($select=Options)"},
            )
            self._tables[logical_name] = table_from(definition, picklists.get("value") or [])
        return self._tables[logical_name]

    async def describe(self, object_name: str) -> list[FieldMeta]:
        return list((await self.table(object_name)).fields)

    async def fetch(self, ref: RecordRef, fields: Sequence[str] | None = None) -> Record:
        return await self._rows.fetch(await self.table(ref.object), ref.record_id, fields)

    async def write(self, patch: Patch, idempotency_key: str) -> WriteResult:
        table = await self.table(patch.object)
        if patch.record_id is None:
            return await self._rows.create(table, patch, idempotency_key)
        return await self._rows.update(table, patch)

    async def write_many(
        self, object_name: str, patches: Sequence[Patch]
    ) -> tuple[list[WriteResult], dict[str, str]]:
        """Update many rows through ``$batch``: per row a result, or an error message."""
        return await self._rows.update_many(await self.table(object_name), patches)

    async def aclose(self) -> None:
        await self.api.aclose()
        self.tokens.close()


class DynamicsConnectorFactory:
    name: ClassVar[str] = "dynamics"
    kind: ClassVar[ConnectorKind] = ConnectorKind.ERP
    config_model: ClassVar[type[DynamicsConfig]] = DynamicsConfig
    secrets_model: ClassVar[type[DynamicsSecrets]] = DynamicsSecrets
    supports_polling: ClassVar[bool] = True
    outbound_url_fields: ClassVar[tuple[str, ...]] = ("environment_url", "authority_host")

    async def start_demo_sandbox(self) -> DemoSandbox:
        from connectors.dynamics.demo import DynamicsDemo

        return await DynamicsDemo().start()

    def create(
        self, config: Mapping[str, Any], secrets: Mapping[str, Any], context: ConnectorContext
    ) -> DynamicsConnector:
        return DynamicsConnector(
            DynamicsConfig.model_validate(dict(config)),
            DynamicsSecrets.model_validate(dict(secrets)),
            context,
        )
