"""SANDBOX demo for ``switchyard serve --demo``: a Dataverse environment whose accounts and
cases change, delivered by a webhook service endpoint, so the account_health and
case_triage flows run and their writes wait for a reviewer within a minute."""

from __future__ import annotations

import asyncio
import itertools
import random
import secrets
from collections.abc import Mapping
from typing import Any

import httpx

from connectors.dynamics.sandbox import (
    APP_USER,
    CLIENT_ID,
    CLIENT_SECRET,
    TENANT_ID,
    DataverseSandbox,
)
from connectors.salesforce.sandbox_tls import TlsSandboxServer, local_certificate

_ACCOUNT_NOTES = [
    "Asked for a quote for a third site; the CFO joined the last call.",
    "Escalated two late deliveries this month and mentioned a competitor's offer.",
    "Paid all open invoices; credit review passed.",
]
_CASE_NOTES = [
    "The order portal shows error 500 when we upload the delivery note. Urgent, trucks wait.",
    "Please send a copy of last month's invoice in PDF.",
    "Our new colleague cannot sign in; the password reset mail never arrives.",
]


def demo_config(url: str, ca_file: str, hook_name: str = "code") -> dict[str, Any]:
    return {
        "environment_url": url,
        "authority_host": url,
        "tenant_id": TENANT_ID,
        "ca_file": ca_file,
        "application_user_id": APP_USER,
        "webhook_auth": {"kind": "webhookkey", "name": hook_name},
    }


class DynamicsDemo:
    label = "Dynamics 365 environment (SANDBOX, dynamics connector, webhooks)"

    def __init__(self, interval_seconds: float = 6.0) -> None:
        self.environment = DataverseSandbox()
        self._tls = local_certificate()
        self._server = TlsSandboxServer(self.environment.app, self._tls)
        self._interval = interval_seconds
        self._webhook_secret = secrets.token_urlsafe(24)
        self.config: Mapping[str, Any] = {}
        self.secrets: Mapping[str, Any] = {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "webhook_secret": self._webhook_secret,
        }

    async def start(self) -> DynamicsDemo:
        await self._server.__aenter__()
        self.environment.base_url = self._server.url
        self.config = demo_config(self._server.url, self._tls.ca_file)
        return self

    async def activity(self, hook_url: str) -> None:
        self.environment.register_webhook(hook_url, kind="webhookkey", key=self._webhook_secret)
        rng = random.Random()
        async with httpx.AsyncClient(timeout=10) as client:
            for n in itertools.count(1):
                await asyncio.sleep(self._interval)
                if n % 2:
                    account = rng.choice(self.environment.ids("account"))
                    self.environment.change(
                        "account", account, {"description": rng.choice(_ACCOUNT_NOTES)}
                    )
                else:
                    case = rng.choice(self.environment.ids("incident"))
                    self.environment.change(
                        "incident", case, {"description": rng.choice(_CASE_NOTES)}
                    )
                await self.environment.deliver(client)

    async def aclose(self) -> None:
        await self._server.__aexit__(None, None, None)
