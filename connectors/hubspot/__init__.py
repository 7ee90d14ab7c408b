"""The ``hubspot`` connector: HubSpot CRM through the official ``hubspot-api-client``.

Inbound: signed webhook batches (:mod:`.webhooks`) or polling through the CRM search API
(:mod:`.polling`). Outbound: fetch (with the first associated record of configured types,
e.g. a deal's company), update (idempotent: a property already at its target value is not
written again, so a retried job never applies a patch twice), batch update, upsert-based
creates, and property metadata. Registered under the ``switchyard.connectors`` entry point
as ``hubspot``.
"""

from __future__ import annotations

import time
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
    WriteStatus,
)
from connectors.hubspot import webhooks
from connectors.hubspot.auth import OAuthTokens, StaticToken, TokenSource
from connectors.hubspot.client import HubSpotApi
from connectors.hubspot.config import HubSpotConfig, HubSpotSecrets
from connectors.hubspot.limits import RateGovernor
from connectors.hubspot.metadata import field_meta, validate_patch
from connectors.hubspot.polling import Poller, to_ms
from core.errors import ConnectorTerminalError

__all__ = ["HubSpotConnector", "HubSpotConnectorFactory"]

OWN_WRITES_KEY = "own_writes"
OWN_WRITES_KEPT = 500
SINGULAR = {v: k for k, v in webhooks.OBJECTS.items()}


class HubSpotConnector:
    kind = ConnectorKind.CRM

    def __init__(
        self, config: HubSpotConfig, secrets: HubSpotSecrets, context: ConnectorContext
    ) -> None:
        self._config = config
        self._context = context
        self._client_secret = secrets.client_secret.get_secret_value()
        self._state: StateStore = context.state if context.state is not None else MemoryStateStore()
        self.tokens: TokenSource
        if secrets.access_token is not None:
            self.tokens = StaticToken(secrets.access_token.get_secret_value())
        else:
            assert secrets.refresh_token is not None
            assert secrets.client_id is not None
            client_id = secrets.client_id

            async def exchange(refresh_token: str) -> tuple[str, str, int]:
                return await self._api.exchange(refresh_token, client_id, self._client_secret)

            self.tokens = OAuthTokens(
                self._state, secrets.refresh_token.get_secret_value(), exchange
            )
        governor = RateGovernor(
            search_interval=config.search_interval_seconds,
            max_wait=config.max_rate_wait_seconds,
        )
        self._api = HubSpotApi(config, self.tokens, governor)
        self._described: dict[str, list[FieldMeta]] = {}
        self._poller = Poller(
            self._api.search,
            objects=config.poll_objects,
            page_size=config.poll_page_size,
            lookback_ms=config.poll_lookback_seconds * 1000,
            cap=config.search_max_results,
            watched=config.poll_watch,
            now_ms=lambda: int(time.time() * 1000),
        )

    # ---------------------------------------------------------------- inbound

    def verify(self, request: InboundRequest) -> None:
        webhooks.verify(
            request,
            self._client_secret,
            self._config.signature_versions,
            self._context.webhook_tolerance_seconds,
            self._context.public_hook_url,
        )

    def parse(self, request: InboundRequest) -> list[ChangeEvent]:
        return webhooks.parse(
            request,
            app_id=self._config.app_id,
            portal_id=self._config.portal_id,
            ignored_sources=self._config.ignored_change_sources,
        )

    def ack(self, result: IngestResult) -> Ack | None:
        return None  # any 2xx acknowledges a HubSpot delivery

    async def poll(self, cursor: Mapping[str, Any] | None) -> PollResult:
        own = await self._state.get(OWN_WRITES_KEY) or {}
        return await self._poller.poll(cursor, {k: int(v) for k, v in own.items()})

    # ---------------------------------------------------------------- records

    async def describe(self, object_name: str) -> list[FieldMeta]:
        if object_name not in self._described:
            self._described[object_name] = [
                field_meta(p) for p in await self._api.properties(object_name)
            ]
        return self._described[object_name]

    async def fetch(self, ref: RecordRef, fields: Sequence[str] | None = None) -> Record:
        names = list(fields) if fields else [m.name for m in await self.describe(ref.object)]
        row = await self._api.read(ref.object, ref.record_id, names)
        if row is None:
            raise ConnectorTerminalError(
                f"HubSpot has no {ref.object} {ref.record_id}", status_code=404
            )
        values: dict[str, Any] = dict(row.get("properties") or {})
        for to_type in self._config.associations.get(ref.object, []):
            ids = await self._api.associated_ids(ref.object, ref.record_id, to_type)
            related = (
                await self._api.read(to_type, ids[0], self._config.association_properties)
                if ids
                else None
            )
            values[SINGULAR.get(to_type, to_type)] = (
                dict(related.get("properties") or {}) if related else None
            )
        return Record(ref.object, ref.record_id, values, _version(row))

    async def write(self, patch: Patch, idempotency_key: str) -> WriteResult:
        validate_patch(patch, await self.describe(patch.object))
        if patch.record_id is None:
            return await self._create(patch, idempotency_key)
        fields = {k: _wire(v) for k, v in patch.fields.items()}
        current = await self._api.read(patch.object, patch.record_id, list(fields))
        if current is None:
            raise ConnectorTerminalError(
                f"HubSpot has no {patch.object} {patch.record_id}", status_code=404
            )
        now = current.get("properties") or {}
        if all(now.get(name) == value for name, value in fields.items()):
            # Already applied (a retried job whose first write went through): not again.
            return WriteResult(
                WriteStatus.WRITTEN, patch.record_id, _version(current), detail="already applied"
            )
        if patch.expected_version is not None and to_ms(patch.expected_version) != to_ms(
            _version(current)
        ):
            return WriteResult(
                WriteStatus.CONFLICT, patch.record_id, detail="the record changed since it was read"
            )
        updated = await self._api.update(patch.object, patch.record_id, fields)
        await self._remember(patch.object, [updated])
        return WriteResult(WriteStatus.WRITTEN, patch.record_id, _version(updated))

    async def write_batch(
        self, object_name: str, changes: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> tuple[list[str], list[str]]:
        """Update many records (100 per call); the ids written and the error messages."""
        described = await self.describe(object_name)
        for record_id, fields in changes:
            validate_patch(Patch(object_name, record_id, fields), described)
        wire = [(rid, {k: _wire(v) for k, v in f.items()}) for rid, f in changes]
        results, errors = await self._api.batch_update(object_name, wire)
        await self._remember(object_name, results)
        return [str(r["id"]) for r in results], [str(e.get("message")) for e in errors]

    async def _create(self, patch: Patch, key: str) -> WriteResult:
        prop = self._config.idempotency_property
        if prop is None:
            raise ConnectorTerminalError(
                f"creating {patch.object} records needs config.idempotency_property (a "
                "unique-value property) so a retried job cannot create a second record"
            )
        fields = {k: _wire(v) for k, v in patch.fields.items()} | {prop: key}
        created = await self._api.upsert(patch.object, prop, key, fields)
        await self._remember(patch.object, [created])
        return WriteResult(WriteStatus.WRITTEN, str(created["id"]), _version(created))

    async def _remember(self, object_name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Note the modified date our writes produced, so polling skips those changes.

        Unlocked read-modify-write: a lost entry costs one extra flow run whose patch is
        then empty (the values are already there), never a loop.
        """
        own = await self._state.get(OWN_WRITES_KEY) or {}
        for row in rows:
            stamp = to_ms(_version(row))
            if stamp is not None:
                own.pop(f"{object_name}/{row['id']}", None)
                own[f"{object_name}/{row['id']}"] = stamp
        await self._state.put(OWN_WRITES_KEY, dict(list(own.items())[-OWN_WRITES_KEPT:]))

    async def aclose(self) -> None:
        await self._api.aclose()


def _version(row: Mapping[str, Any]) -> str | None:
    stamp = row.get("updated_at")
    if stamp is None:
        return None
    return stamp.isoformat() if hasattr(stamp, "isoformat") else str(stamp)


def _wire(value: Any) -> Any:
    """HubSpot property values are strings on the wire (and in answers)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class HubSpotConnectorFactory:
    name: ClassVar[str] = "hubspot"
    kind: ClassVar[ConnectorKind] = ConnectorKind.CRM
    config_model: ClassVar[type[HubSpotConfig]] = HubSpotConfig
    secrets_model: ClassVar[type[HubSpotSecrets]] = HubSpotSecrets
    supports_polling: ClassVar[bool] = True
    outbound_url_fields: ClassVar[tuple[str, ...]] = ("base_url",)

    async def start_demo_sandbox(self) -> DemoSandbox:
        from connectors.hubspot.demo import HubSpotDemo

        return await HubSpotDemo().start()

    def create(
        self, config: Mapping[str, Any], secrets: Mapping[str, Any], context: ConnectorContext
    ) -> HubSpotConnector:
        return HubSpotConnector(
            HubSpotConfig.model_validate(dict(config)),
            HubSpotSecrets.model_validate(dict(secrets)),
            context,
        )
