"""SANDBOX — SAP Event Mesh as the SAP sandbox uses it: CloudEvents to webhook subscribers.

Every change to a record whose entity set has a business event (below) queues one
structured-mode CloudEvent per subscription (``application/cloudevents+json``, ``id``,
``type`` ``<prefix>.Created.v1`` / ``.Changed.v1``, ``source``, ``time``, ``data`` with the
key). The acting SAP user is added as the ``sapuser`` extension attribute (as an
Integration Suite flow enriching the event would). :meth:`Outbox.deliver` POSTs them
with the shared secret in ``X-Switchyard-Secret``; a delivery answered with anything but
2xx stays pending and is sent again with the same event id.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from connectors.sap import wire
from connectors.sap.webhooks import SECRET_HEADER

EVENT_TYPES = {  # entity set → (type prefix, key fields)
    "A_SalesOrder": ("sap.s4.beh.salesorder.v1.SalesOrder", ("SalesOrder",)),
    "A_BusinessPartner": ("sap.s4.beh.businesspartner.v1.BusinessPartner", ("BusinessPartner",)),
    "A_Product": ("sap.s4.beh.product.v1.Product", ("Product",)),
    "A_SupplierInvoice": (
        "sap.s4.beh.supplierinvoice.v1.SupplierInvoice",
        ("SupplierInvoice", "FiscalYear"),
    ),
    "YY1_CustomerEmail": ("z.switchyard.customeremail.v1.CustomerEmail", ("EmailID",)),
}
SOURCE = "/default/sap.s4/SBXCLNT100"


@dataclass
class Subscription:
    url: str
    secret: str


@dataclass
class Outbox:
    pending: list[tuple[Subscription, dict[str, Any]]] = field(default_factory=list)
    delivered: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(
        self,
        subscriptions: list[Subscription],
        set_name: str,
        values: dict[str, Any],
        user: str,
        created: bool,
        at: datetime,
    ) -> None:
        known = EVENT_TYPES.get(set_name)
        if known is None:
            return
        prefix, keys = known
        event = {
            "specversion": "1.0",
            "type": f"{prefix}.{'Created' if created else 'Changed'}.v1",
            "source": SOURCE,
            "id": str(uuid.uuid4()),
            "time": wire.iso(at),
            "datacontenttype": "application/json",
            "sapuser": user,
            "data": {key: values.get(key) for key in keys},
        }
        with self._lock:
            self.pending += [(subscription, dict(event)) for subscription in subscriptions]

    async def deliver(self, client: httpx.AsyncClient) -> list[httpx.Response]:
        with self._lock:
            batch, self.pending = self.pending, []
        responses: list[httpx.Response] = []
        failed: list[tuple[Subscription, dict[str, Any]]] = []
        for subscription, event in batch:
            headers = {
                "Content-Type": "application/cloudevents+json",
                SECRET_HEADER: subscription.secret,
            }
            try:
                response = await client.post(
                    subscription.url, content=json.dumps(event).encode(), headers=headers
                )
            except httpx.HTTPError:
                failed.append((subscription, event))
                continue
            responses.append(response)
            if response.is_success:
                self.delivered.append(event)
            else:
                failed.append((subscription, event))
        with self._lock:
            self.pending = failed + self.pending
        return responses
