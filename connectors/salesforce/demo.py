"""SANDBOX demo for ``switchyard serve --demo``: a Salesforce org whose leads and cases
change, reported by Outbound Messages, so the lead and case flows run within a minute."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Mapping
from typing import Any

import httpx

from connectors.salesforce.sandbox import (
    CLIENT_ID,
    CLIENT_SECRET,
    INTEGRATION_USER,
    ORG_ID,
    SalesforceSandbox,
)
from connectors.salesforce.sandbox_tls import TlsSandboxServer, local_certificate

LEAD_FIELDS = [
    "Description",
    "Company",
    "Title",
    "Industry",
    "NumberOfEmployees",
    "LastModifiedById",
    "CreatedDate",
    "LastModifiedDate",
]
CASE_FIELDS = [
    "Subject",
    "Description",
    "Status",
    "LastModifiedById",
    "CreatedDate",
    "LastModifiedDate",
]
_LEAD_NOTES = [
    "Asked for pricing for 300 seats and a security review before the end of the quarter.",
    "Downloaded the whitepaper; no reply to two follow-up emails.",
    "Our CFO approved the budget; we want to start a pilot next month.",
]
_CASE_NOTES = [
    "The export still fails with error 500 after the fix you suggested. Third time now!",
    "Thanks, the refund arrived. You can close this.",
    "Login works again, but the dashboard loads very slowly since yesterday.",
]


def demo_config(url: str, ca_file: str) -> dict[str, Any]:
    return {
        "login_url": url,
        "instance_url": url,
        "organization_id": ORG_ID,
        "auth_flow": "client_credentials",
        "integration_user_id": INTEGRATION_USER,
        "ca_file": ca_file,
        "external_id_fields": {"Lead": "Switchyard_Key__c", "Case": "Switchyard_Key__c"},
        "writeback_fields": {
            "Lead": ["Rating", "Qualification_Reason__c"],
            "Case": ["AI_Summary__c", "AI_Next_Step__c", "AI_Sentiment__c"],
        },
    }


class SalesforceDemo:
    label = "Salesforce org (SANDBOX, salesforce connector, outbound messages)"

    def __init__(self, interval_seconds: float = 5.0) -> None:
        self.org = SalesforceSandbox()
        self._tls = local_certificate()
        self._server = TlsSandboxServer(self.org.app, self._tls)
        self._interval = interval_seconds
        self.config: Mapping[str, Any] = {}
        self.secrets: Mapping[str, Any] = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}

    async def start(self) -> SalesforceDemo:
        await self._server.__aenter__()
        self.config = demo_config(self._server.url, self._tls.ca_file)
        return self

    async def activity(self, hook_url: str) -> None:
        self.org.add_outbound_rule("Lead", hook_url, LEAD_FIELDS)
        self.org.add_outbound_rule("Case", hook_url, CASE_FIELDS)
        rng = random.Random()
        async with httpx.AsyncClient(timeout=10) as client:
            for n in itertools.count(1):
                await asyncio.sleep(self._interval)
                if n % 2:
                    lead = rng.choice(self.org.ids("Lead"))
                    self.org.change("Lead", lead, Description=rng.choice(_LEAD_NOTES))
                else:
                    case = rng.choice(self.org.ids("Case"))
                    self.org.change("Case", case, Description=rng.choice(_CASE_NOTES))
                # Own write-backs are reported too (and dropped by the connector).
                await self.org.deliver_outbound(client, self._server.url)

    async def aclose(self) -> None:
        await self._server.__aexit__(None, None, None)
