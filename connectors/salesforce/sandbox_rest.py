"""SANDBOX: the REST resources of the Salesforce sandbox (``/services/data/vXX.X/…``).

Each handler answers ``(status, body)`` or raises :class:`SfError`; the app in
:mod:`.sandbox` adds authentication, fault injection, ``Sforce-Limit-Info`` and the error
array. Writes are made as the integration user the tokens belong to.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from connectors.salesforce.sandbox_seed import DESCRIBE
from connectors.salesforce.sandbox_store import SfError

if TYPE_CHECKING:
    from connectors.salesforce.sandbox import SalesforceSandbox

COLLECTION_LIMIT = 200


def _view(version: str, record: Mapping[str, Any], wanted: list[str] | None) -> dict[str, Any]:
    object_name = DESCRIBE_BY_PREFIX.get(str(record["Id"])[:3], "")
    url = f"/services/data/{version}/sobjects/{object_name}/{record['Id']}"
    values = {k: v for k, v in record.items() if not wanted or k in wanted or k == "Id"}
    return {"attributes": {"type": object_name, "url": url}, **values}


DESCRIBE_BY_PREFIX = {meta["keyPrefix"]: name for name, meta in DESCRIBE.items()}


def handle(
    sandbox: SalesforceSandbox,
    method: str,
    version: str,
    rest: str,
    query: Mapping[str, str],
    body: bytes,
    headers: Mapping[str, str],
) -> tuple[int, Any]:
    from connectors.salesforce.sandbox import http_date, json_body

    parts = [unquote(p) for p in rest.strip("/").split("/")]
    store = sandbox.store
    match parts:
        case ["limits"] if method == "GET":
            used = sandbox.api_used
            limit = sandbox.api_limit
            return 200, {"DailyApiRequests": {"Max": limit, "Remaining": max(0, limit - used)}}
        case ["query"] if method == "GET":
            parsed, rows = store.query(query.get("q", ""))
            return 200, sandbox.page(version, parsed.object, rows, 0)
        case ["query", locator_offset] if method == "GET":
            locator, _, offset = locator_offset.rpartition("-")
            return 200, sandbox.page(
                version,
                _object_of(sandbox.cursor(locator)),
                sandbox.cursor(locator),
                int(offset),
                locator,
            )
        case ["composite", "sobjects"] if method == "PATCH":
            return 200, _collection_update(sandbox, json_body(body))
        case ["sobjects", object_name, "describe"] if method == "GET":
            if object_name not in DESCRIBE:
                raise SfError(404, "NOT_FOUND", "The requested resource does not exist")
            return 200, DESCRIBE[object_name]
        case ["ui-api", "object-info", object_name, "picklist-values", record_type_id] if (
            method == "GET"
        ):
            return _picklist_values(sandbox, version, object_name, record_type_id)
        case ["sobjects", object_name] if method == "POST":
            values = json_body(body)
            record_id = store.insert(object_name, values, sandbox.user_id)
            sandbox.wrote(object_name, record_id, values)
            return 201, {"id": record_id, "success": True, "errors": []}
        case ["sobjects", object_name, record_id] if method == "GET":
            wanted = [f for f in query.get("fields", "").split(",") if f] or None
            return 200, _view(version, store.get(object_name, record_id), wanted)
        case ["sobjects", object_name, record_id] if method == "PATCH":
            since = headers.get("if-unmodified-since")
            sandbox.take_lock(record_id)
            values = json_body(body)
            store.update(
                object_name,
                record_id,
                values,
                sandbox.user_id,
                http_date(since) if since else None,
            )
            sandbox.wrote(object_name, record_id, values)
            return 204, None
        case ["sobjects", object_name, field, value] if method in ("PATCH", "GET"):
            return _by_external_id(sandbox, method, version, object_name, field, value, body)
    raise SfError(404, "NOT_FOUND", "The requested resource does not exist")


def _etag(value: Any) -> str:
    return hashlib.md5(json.dumps(value, sort_keys=True).encode()).hexdigest()  # noqa: S324


def _picklist_values(
    sandbox: SalesforceSandbox, version: str, object_name: str, record_type_id: str
) -> tuple[int, Any]:
    """The UI API's Picklist Values Collection for records of the record type."""
    fields = sandbox.store.picklist_values(object_name, record_type_id)
    if fields is None:
        message = f"Record type {record_type_id} doesn't exist or isn't accessible on {object_name}"
        return 404, [{"errorCode": "NOT_FOUND", "message": message}]
    base = f"/services/data/{version}/ui-api/object-info/{object_name}/picklist-values"
    collection: dict[str, Any] = {
        name: {
            "controllerValues": {},
            "defaultValue": None,
            "eTag": _etag(values),
            "url": f"{base}/{record_type_id}/{name}",
            "values": [
                {"attributes": None, "label": v["label"], "validFor": [], "value": v["value"]}
                for v in values
            ],
        }
        for name, values in fields.items()
    }
    return 200, {"eTag": _etag(collection), "picklistFieldValues": collection}


def _object_of(rows: list[dict[str, Any]]) -> str:
    return DESCRIBE_BY_PREFIX.get(str(rows[0]["Id"])[:3], "") if rows else ""


def _by_external_id(
    sandbox: SalesforceSandbox,
    method: str,
    version: str,
    object_name: str,
    field: str,
    value: str,
    body: bytes,
) -> tuple[int, Any]:
    from connectors.salesforce.sandbox import json_body

    meta = {f["name"]: f for f in DESCRIBE.get(object_name, {}).get("fields", [])}
    if not meta.get(field, {}).get("externalId"):
        raise SfError(
            404,
            "NOT_FOUND",
            f"Provided external ID field does not exist or is not accessible: {field}",
        )
    store = sandbox.store
    matches = store.find(object_name, field, value)
    if len(matches) > 1:
        return 300, [f"/services/data/{version}/sobjects/{object_name}/{m}" for m in matches]
    if method == "GET":
        if not matches:
            raise SfError(404, "NOT_FOUND", "The requested resource does not exist")
        return 200, _view(version, store.get(object_name, matches[0]), None)
    values = json_body(body)
    if matches:
        sandbox.take_lock(matches[0])
        store.update(object_name, matches[0], values, sandbox.user_id)
        sandbox.wrote(object_name, matches[0], values)
        return 200, {"id": matches[0], "success": True, "errors": [], "created": False}
    record_id = store.insert(object_name, {**values, field: value}, sandbox.user_id)
    sandbox.wrote(object_name, record_id, {**values, field: value})
    return 201, {"id": record_id, "success": True, "errors": [], "created": True}


def _collection_update(sandbox: SalesforceSandbox, body: Any) -> list[dict[str, Any]]:
    records = body.get("records") if isinstance(body, dict) else None
    if not isinstance(records, list):
        raise SfError(400, "JSON_PARSER_ERROR", "records: expected a list")
    if len(records) > COLLECTION_LIMIT:
        raise SfError(
            400,
            "EXCEEDED_ID_LIMIT",
            f"record limit reached. cannot submit more than "
            f"{COLLECTION_LIMIT} records into this call",
        )
    all_or_none = bool(body.get("allOrNone"))
    results: list[dict[str, Any]] = []
    applied: list[tuple[str, str, dict[str, Any]]] = []
    store = sandbox.store
    with store.transaction() as rollback:
        for item in records:
            values = {k: v for k, v in item.items() if k not in ("attributes", "id")}
            record_id = str(item.get("id", ""))
            object_name = str((item.get("attributes") or {}).get("type", ""))
            try:
                sandbox.take_lock(record_id)
                store.update(object_name, record_id, values, sandbox.user_id)
                applied.append((object_name, record_id, values))
                results.append({"id": record_id, "success": True, "errors": []})
            except SfError as error:
                results.append(
                    {
                        "success": False,
                        "errors": [
                            {
                                "statusCode": error.code,
                                "message": error.message,
                                "fields": error.fields,
                            }
                        ],
                    }
                )
        if all_or_none and not all(r["success"] for r in results):
            rollback()
            applied = []
            rolled = {
                "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "message": "Record rolled back because not all records were valid and the "
                "request was using AllOrNone header",
                "fields": [],
            }
            results = [
                r if not r["success"] else {"id": r["id"], "success": False, "errors": [rolled]}
                for r in results
            ]
    for object_name, record_id, values in applied:
        sandbox.wrote(object_name, record_id, values)
    return results
