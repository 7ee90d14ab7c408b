"""Records over OData V2: read, update with ETags, idempotent creates, ``$batch``.

* **fetch** — ``GET <Set>(<key>)``; dates come back as ISO text, the version is the
  entity's ETag (``__metadata.etag`` or the ``ETag`` header).
* **update** — the current record is read first: when every field already holds its
  target value (a retried job whose first write went through) nothing is sent; when its
  ETag differs from the version the proposal saw, the answer is CONFLICT; otherwise
  ``PATCH`` with ``If-Match: <etag>``. A 412 is a CONFLICT too: a changed record is never
  overwritten.
* **create** — SAP has no idempotency key, so a client reference derived from the job's
  key goes into the object's ``create_reference`` field; a create first looks for a record
  holding it (``$filter=<field> eq '<ref>'``) and answers that one if found. Fields
  ``<nav>.<Property>`` of list values become a deep insert (``"to_Item": {"results":
  [...]}``), one child per position.
* **write_many** — updates in one ``$batch``, one changeset each, so each record succeeds
  or fails on its own; records without a version are read first (one batch of GETs), and
  one whose ETag cannot be read is not written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from connectors.base import FieldMeta, Patch, Record, RecordRef, WriteResult, WriteStatus
from connectors.sap import batch, wire
from connectors.sap.client import ODataClient
from connectors.sap.config import SapConfig
from connectors.sap.errors import PreconditionFailed
from connectors.sap.metadata import EntitySet, ServiceMetadata, field_meta, parse
from connectors.sap.reference import client_reference
from core.errors import ConnectorError, ConnectorTerminalError


class ODataRecords:
    def __init__(self, client: ODataClient, config: SapConfig) -> None:
        self._client = client
        self._config = config
        self._metadata: dict[str, ServiceMetadata] = {}

    # ------------------------------------------------------------- plumbing

    def _where(self, object_name: str) -> tuple[str, str]:
        target = self._config.objects.get(object_name)
        if target is None:
            known = ", ".join(sorted(self._config.objects))
            raise ConnectorTerminalError(
                f"no SAP service is configured for {object_name} (config.objects: {known})"
            )
        service, _, entity_set = target.partition("/")
        return service, entity_set or object_name

    async def entity(self, object_name: str) -> tuple[str, ServiceMetadata, EntitySet]:
        service, set_name = self._where(object_name)
        if service not in self._metadata:
            self._metadata[service] = parse(await self._client.metadata(service))
        found = self._metadata[service]
        return service, found, found.entity_set(set_name)

    def _plain(self, entity_set: EntitySet, row: Mapping[str, Any]) -> dict[str, Any]:
        props = entity_set.type.properties
        return {
            name: wire.from_wire(value, props[name].type if name in props else "")
            for name, value in row.items()
            if not name.startswith("__") and not isinstance(value, Mapping)
        }

    async def describe(self, object_name: str) -> list[FieldMeta]:
        _, found, entity_set = await self.entity(object_name)
        return field_meta(found, entity_set, self._config.deep_insert.get(object_name, ()))

    # ------------------------------------------------------------- reads

    async def read(
        self, object_name: str, record_id: str, fields: Sequence[str] | None = None
    ) -> tuple[dict[str, Any], str | None] | None:
        service, _, entity_set = await self.entity(object_name)
        path = entity_set.name + wire.key_predicate(entity_set.type.keys, record_id)
        params = {"$select": ",".join(fields)} if fields else None
        try:
            response = await self._client.send(
                "GET", service, path, what=f"read {object_name} {record_id}", params=params
            )
        except ConnectorTerminalError as exc:
            if exc.extensions.get("status_code") == 404:
                return None
            raise
        row = wire.envelope(response.json())
        headers = {k.lower(): v for k, v in response.headers.items()}
        return self._plain(entity_set, row), wire.etag_of(row, headers)

    async def fetch(self, ref: RecordRef, fields: Sequence[str] | None = None) -> Record:
        found = await self.read(ref.object, ref.record_id, fields)
        if found is None:
            raise ConnectorTerminalError(
                f"SAP has no {ref.object} {ref.record_id}", status_code=404
            )
        values, etag = found
        return Record(ref.object, ref.record_id, values, etag)

    async def query(
        self, object_name: str, params: Mapping[str, str], next_url: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a collection: plain rows and the ``__next`` link (or None)."""
        service, _, entity_set = await self.entity(object_name)
        response = await self._client.send(
            "GET",
            service,
            next_url or entity_set.name,
            what=f"query {object_name}",
            params=None if next_url else params,
        )
        body = wire.envelope(response.json())
        rows = [self._plain(entity_set, r) for r in body.get("results") or []]
        return rows, body.get("__next")

    # ------------------------------------------------------------- writes

    def body(
        self, entity_set: EntitySet, fields: Mapping[str, Any], create: bool
    ) -> dict[str, Any]:
        props = entity_set.type.properties
        problems, body = [], {}
        for name, value in fields.items():
            prop = props.get(name)
            if prop is None:
                problems.append(f"{name}: no such property")
            elif not (prop.creatable if create else prop.updatable):
                problems.append(f"{name}: not {'creatable' if create else 'updatable'}")
            else:
                try:
                    body[name] = wire.to_wire(value, prop.type)
                except ValueError as exc:
                    problems.append(f"{name}: {exc}")
        if problems:
            raise ConnectorTerminalError(
                f"the {'create' if create else 'update'} of {entity_set.name} does not fit "
                f"SAP's $metadata: {'; '.join(problems)}"
            )
        return body

    async def update(self, patch: Patch) -> WriteResult:
        assert patch.record_id is not None
        service, _, entity_set = await self.entity(patch.object)
        if not entity_set.updatable:
            raise ConnectorTerminalError(f"SAP does not allow updates of {patch.object}")
        body = self.body(entity_set, patch.fields, create=False)
        current = await self.read(patch.object, patch.record_id)
        if current is None:
            raise ConnectorTerminalError(
                f"SAP has no {patch.object} {patch.record_id}", status_code=404
            )
        values, etag = current
        wanted = self._plain(entity_set, body)
        props = entity_set.type.properties
        if all(wire.same_value(values.get(k), v, props[k].type) for k, v in wanted.items()):
            return WriteResult(WriteStatus.WRITTEN, patch.record_id, etag, "already applied")
        if patch.expected_version is not None and patch.expected_version != etag:
            return WriteResult(
                WriteStatus.CONFLICT, patch.record_id, etag, "the record changed since it was read"
            )
        path = entity_set.name + wire.key_predicate(entity_set.type.keys, patch.record_id)
        try:
            response = await self._client.send(
                "PATCH",
                service,
                path,
                what=f"update {patch.object} {patch.record_id}",
                json=body,
                headers={"If-Match": etag or "*"},
            )
        except PreconditionFailed as exc:
            return WriteResult(WriteStatus.CONFLICT, patch.record_id, None, exc.detail)
        detail = wire.sap_messages(response.headers.get("sap-message"))
        return WriteResult(
            WriteStatus.WRITTEN, patch.record_id, response.headers.get("etag"), detail
        )

    def _deep(
        self, found: ServiceMetadata, entity_set: EntitySet, fields: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Split header fields from ``<nav>.<Property>`` lists; build the children."""
        header: dict[str, Any] = {}
        lists: dict[str, dict[str, list[Any]]] = {}
        allowed = self._config.deep_insert.get(entity_set.name, [])
        for name, value in fields.items():
            nav, dot, prop = name.partition(".")
            if not dot:
                header[name] = value
                continue
            if nav not in allowed or nav not in entity_set.type.navigations:
                raise ConnectorTerminalError(f"{name}: {nav} is not a deep-insert navigation")
            if value is not None and not isinstance(value, list):
                raise ConnectorTerminalError(f"{name}: a list is expected (one per child)")
            lists.setdefault(nav, {})[prop] = list(value or [])
        children: dict[str, Any] = {}
        for nav, columns in lists.items():
            child_type = found.types[entity_set.type.navigations[nav]]
            child_set = EntitySet(nav, child_type)
            lengths = {len(v) for v in columns.values()}
            if len(lengths) > 1:
                raise ConnectorTerminalError(
                    f"the {nav}.* lists differ in length: {sorted(lengths)}"
                )
            rows = []
            for index in range(lengths.pop() if lengths else 0):
                row = {
                    prop: values[index]
                    for prop, values in columns.items()
                    if values[index] not in (None, "")
                }
                rows.append(self.body(child_set, row, create=True))
            children[nav] = {"results": rows}
        return header, children

    async def create(self, patch: Patch, idempotency_key: str) -> WriteResult:
        service, found, entity_set = await self.entity(patch.object)
        if not entity_set.creatable:
            raise ConnectorTerminalError(f"SAP does not allow creating {patch.object}")
        ref_field = self._config.create_reference.get(patch.object)
        if ref_field is None:
            raise ConnectorTerminalError(
                f"creating {patch.object} needs config.create_reference.{patch.object} (a "
                "searchable field for the client reference) so a retry cannot create twice"
            )
        if patch.fields.get(ref_field) not in (None, ""):
            raise ConnectorTerminalError(
                f"{ref_field} holds Switchyard's create reference on this connection, and the "
                f"patch sets it too; point config.create_reference.{patch.object} at another "
                "searchable field (e.g. a YY1_ custom field)"
            )
        reference = client_reference(idempotency_key)
        existing = await self._find(patch.object, ref_field, reference)
        if existing is not None:
            return WriteResult(WriteStatus.WRITTEN, existing[0], existing[1], "already created")
        header, children = self._deep(found, entity_set, patch.fields)
        header[ref_field] = reference
        body = self.body(entity_set, header, create=True) | children
        response = await self._client.send(
            "POST", service, entity_set.name, what=f"create {patch.object}", json=body
        )
        row = wire.envelope(response.json())
        new_id = wire.record_id(row, entity_set.type.keys)
        detail = wire.sap_messages(response.headers.get("sap-message"))
        return WriteResult(WriteStatus.WRITTEN, new_id, wire.etag_of(row), detail)

    async def _find(
        self, object_name: str, field: str, value: str
    ) -> tuple[str, str | None] | None:
        _, _, entity_set = await self.entity(object_name)
        keys = entity_set.type.keys
        rows, _ = await self.query(
            object_name,
            {"$filter": f"{field} eq {wire.string_literal(value)}", "$top": "1"},
        )
        if not rows:
            return None
        found = await self.read(object_name, wire.record_id(rows[0], keys))
        return wire.record_id(rows[0], keys), found[1] if found else None

    # ------------------------------------------------------------- $batch

    async def write_many(self, patches: Sequence[Patch]) -> list[WriteResult | ConnectorError]:
        """Update many records of one service; a result or an error per patch, in order."""
        return await batch.write_many(self, self._client, self._config.batch_size, patches)
