"""SANDBOX demo for ``switchyard serve --demo``: an SAP S/4HANA system (SANDBOX) whose
customers email orders and whose sales orders change, announced by Event Mesh style
webhooks, so the sap/sales_order_draft flow proposes sales orders that wait for approval."""

from __future__ import annotations

import asyncio
import itertools
import random
import secrets
from collections.abc import Mapping
from typing import Any

import httpx

from connectors.sap.sandbox import SandboxServer, SapSandbox
from connectors.sap.sandbox_seed import PARTNERS

USER = "SWITCHYARD"
_EMAILS = [
    "Please send 12 pcs of TG11 and 4 pcs of TG12, our PO 88-{n}. Delivery next Monday.",
    "Bestellung {n}: 1.000 Stück HT-1000, Liefertermin KW 14. Bestellnr. B-{n}.",
    "Could you ship 3 boxes of MZ-FG-R100 asap? Ref PO-{n}.",
]


def demo_config(url: str) -> dict[str, Any]:
    """Connection config for a (SANDBOX) OData system at ``url``."""
    return {
        "transport": "odata",
        "client": "100",
        "base_url": url,
        "write_user": USER,
        "objects": {
            "A_SalesOrder": "API_SALES_ORDER_SRV",
            "A_SalesOrderItem": "API_SALES_ORDER_SRV",
            "A_BusinessPartner": "API_BUSINESS_PARTNER",
            "A_Product": "API_PRODUCT_SRV",
            "A_SupplierInvoice": "API_SUPPLIERINVOICE_PROCESS_SRV",
            "CustomerEmail": "YY1_CUSTOMEREMAIL_CDS/YY1_CustomerEmail",
        },
        # The sample flow writes the customer's PO number to PurchaseOrderByCustomer, so
        # the create reference lives in a custom header field instead.
        "create_reference": {"A_SalesOrder": "YY1_SwitchyardRef_SDH"},
        "event_objects": {
            "sap.s4.beh.salesorder.v1.SalesOrder": "A_SalesOrder:SalesOrder",
            "sap.s4.beh.supplierinvoice.v1.SupplierInvoice": (
                "A_SupplierInvoice:SupplierInvoice+FiscalYear"
            ),
            "z.switchyard.customeremail.v1.CustomerEmail": "CustomerEmail:EmailID",
        },
    }


def _invoice(n: int, system: SapSandbox) -> dict[str, Any]:
    today = system.clock()
    texts = ["Monthly service fee", "COPY - second reminder", "Please note our new bank account"]
    return {
        "FiscalYear": str(today.year),
        "CompanyCode": "1010",
        "InvoicingParty": "0017300001",
        "DocumentDate": today,
        "PostingDate": today,
        "SupplierInvoiceIDByInvcgParty": f"INV-{90000 + n}",
        "DocumentCurrency": "EUR",
        "InvoiceGrossAmount": f"{1190 * (n % 7 + 1)}.00",
        "DocumentHeaderText": "SANDBOX invoice",
        "SupplierPostingLineItemText": texts[n % len(texts)],
        "PaymentTerms": "0001",
    }


class SapDemo:
    label = "SAP S/4HANA (SANDBOX, sap connector)"

    def __init__(self, interval_seconds: float = 7.0) -> None:
        password = secrets.token_urlsafe(18)
        self.webhook_secret = secrets.token_urlsafe(24)
        self.system = SapSandbox(users={USER: password})
        self._server = SandboxServer(self.system.app)
        self._interval = interval_seconds
        self.config: Mapping[str, Any] = {}
        self.secrets: Mapping[str, Any] = {
            "user": USER,
            "password": password,
            "webhook_secret": self.webhook_secret,
        }

    async def start(self) -> SapDemo:
        await self._server.__aenter__()
        self.config = demo_config(self._server.url)
        return self

    async def activity(self, hook_url: str) -> None:
        self.system.subscribe(hook_url, self.webhook_secret)
        rng = random.Random()
        async with httpx.AsyncClient(timeout=10) as client:
            for n in itertools.count(1):
                await asyncio.sleep(self._interval)
                if n % 3 == 0:
                    self.system.create("A_SupplierInvoice", _invoice(n, self.system))
                    await self.system.deliver(client)
                    continue
                self.system.create(
                    "YY1_CustomerEmail",
                    {
                        "subject": f"Order {n} (SANDBOX)",
                        "body": rng.choice(_EMAILS).format(n=4700 + n),
                        "received_at": self.system.clock(),
                        "sold_to_party": rng.choice(PARTNERS)[0],
                        "sender": "buyer@customer.example",
                    },
                )
                await self.system.deliver(client)

    async def aclose(self) -> None:
        await self._server.__aexit__(None, None, None)
