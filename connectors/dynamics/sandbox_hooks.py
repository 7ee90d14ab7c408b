"""SANDBOX — Dataverse's webhook sender: a registered service endpoint (contract 8, async
post-operation step) that POSTs a ``RemoteExecutionContext`` for each Create, Update or
Delete of its tables, authenticated as registered — HttpHeader, WebhookKey (``?code=``)
or HttpQueryString — with no signature over the body.

Delivery: a 2xx is success; 502/503/504 get one retry; any other answer (or no answer)
fails the operation and it is logged in :attr:`Outbox.failed` (as System Jobs log it).
:meth:`Outbox.redeliver` sends a logged delivery again with the same body, as a retried
system job would.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import httpx

ENTITY = "Entity:http://schemas.microsoft.com/xrm/2011/Contracts"
REFERENCE = "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts"
RETRIED = {502, 503, 504}
ORGANIZATION = {
    "organization_id": "9e8d7c6b-5a49-4837-a625-140312f0e1d2",
    "organization_name": "sandbox",
    "business_unit_id": "c4c4c4c4-5d5d-4e6e-8f7f-808080808080",
}


@dataclass(frozen=True)
class Registration:
    url: str
    kind: str  # header | webhookkey | querystring
    name: str
    key: str
    tables: frozenset[str]
    step_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def request(self, body: bytes, headers: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        url, sent = self.url, dict(headers)
        if self.kind == "header":
            sent[self.name] = self.key
        else:
            name = "code" if self.kind == "webhookkey" else self.name
            url += ("&" if "?" in url else "?") + urlencode({name: self.key})
        return url, sent


def _date(moment: datetime) -> str:
    return f"/Date({int(moment.timestamp() * 1000)})/"


def _pairs(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": v} for k, v in values.items()]


def context(
    *,
    registration: Registration,
    organization: Mapping[str, str],
    message: str,
    table: str,
    record_id: str,
    attributes: Mapping[str, Any],
    image: Mapping[str, Any] | None,
    user_id: str,
    application_id: str | None,
    version: int,
    now: datetime,
) -> dict[str, Any]:
    def entity(values: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "__type": ENTITY,
            "Attributes": _pairs(values),
            "EntityState": None,
            "FormattedValues": [],
            "Id": record_id,
            "KeyAttributes": [],
            "LogicalName": table,
            "RelatedEntities": [],
            "RowVersion": str(version),
        }

    target: Any = (
        {"__type": REFERENCE, "Id": record_id, "LogicalName": table, "Name": None}
        if message == "Delete"
        else entity(attributes)
    )
    body: dict[str, Any] = {
        "BusinessUnitId": organization["business_unit_id"],
        "CorrelationId": str(uuid.uuid4()),
        "Depth": 1,
        "InitiatingUserAzureActiveDirectoryObjectId": str(uuid.uuid5(uuid.NAMESPACE_URL, user_id)),
        "InitiatingUserId": user_id,
        "InputParameters": [{"key": "Target", "value": target}],
        "IsExecutingOffline": False,
        "IsInTransaction": False,
        "IsOfflinePlayback": False,
        "IsolationMode": 1,
        "MessageName": message,
        "Mode": 1,
        "OperationCreatedOn": _date(now),
        "OperationId": str(uuid.uuid4()),
        "OrganizationId": organization["organization_id"],
        "OrganizationName": organization["organization_name"],
        "OutputParameters": [],
        "OwningExtension": {
            "Id": registration.step_id,
            "KeyAttributes": [],
            "LogicalName": "sdkmessageprocessingstep",
            "Name": f"Switchyard: {message} of {table}",
            "RowVersion": None,
        },
        "ParentContext": None,
        "PostEntityImages": [] if image is None else [{"key": "PostImage", "value": entity(image)}],
        "PreEntityImages": [],
        "PrimaryEntityId": record_id,
        "PrimaryEntityName": table,
        "RequestId": str(uuid.uuid4()),
        "SecondaryEntityName": "none",
        "SharedVariables": [],
        "Stage": 40,
        "UserAzureActiveDirectoryObjectId": str(uuid.uuid5(uuid.NAMESPACE_URL, user_id)),
        "UserId": user_id,
    }
    if application_id is not None:
        body["InitiatingUserApplicationId"] = application_id
    return body


@dataclass
class Outbox:
    host: str
    pending: list[tuple[Registration, dict[str, Any]]] = field(default_factory=list)
    delivered: list[dict[str, Any]] = field(default_factory=list)
    failed: list[tuple[Registration, dict[str, Any], int | None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, registration: Registration, body: dict[str, Any]) -> None:
        with self._lock:
            self.pending.append((registration, body))

    async def deliver(self, client: httpx.AsyncClient) -> list[httpx.Response]:
        with self._lock:
            batch, self.pending = self.pending, []
        responses = []
        for registration, body in batch:
            response = await self._send(client, registration, body)
            if response is not None:
                responses.append(response)
        return responses

    async def redeliver(self, client: httpx.AsyncClient) -> list[httpx.Response]:
        """Send every failed or delivered operation again, unchanged (a retried job)."""
        again = [(r, b) for r, b, _ in self.failed]
        self.failed = []
        responses = []
        for registration, body in again:
            response = await self._send(client, registration, body)
            if response is not None:
                responses.append(response)
        return responses

    async def _send(
        self, client: httpx.AsyncClient, registration: Registration, body: dict[str, Any]
    ) -> httpx.Response | None:
        raw = json.dumps(body, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "x-ms-dynamics-organization": self.host,
            "x-ms-dynamics-entity-name": str(body["PrimaryEntityName"]),
            "x-ms-dynamics-request-name": str(body["MessageName"]),
            "x-ms-correlation-request-id": str(body["CorrelationId"]),
        }
        url, headers = registration.request(raw, headers)
        response: httpx.Response | None = None
        for _attempt in range(2):
            try:
                response = await client.post(url, content=raw, headers=headers)
            except httpx.HTTPError:
                response = None
                break
            if response.status_code not in RETRIED:
                break
        if response is not None and response.is_success:
            self.delivered.append(body)
        else:
            self.failed.append(
                (registration, body, None if response is None else response.status_code)
            )
        return response
