"""SANDBOX demo for ``switchyard serve --demo``: a HubSpot portal whose contacts write in and
whose deals move, delivering signed v3 webhooks, so the contact_intent and deal_risk flows
run and write back within a minute."""

from __future__ import annotations

import asyncio
import itertools
import random
import secrets
from collections.abc import Mapping
from typing import Any

import httpx

from connectors.hubspot.sandbox import HubSpotSandbox, SandboxServer
from connectors.hubspot.sandbox_store import STAGES

_MESSAGES = [
    "Could you send pricing for 25 seats and a two-week trial?",
    "Our export to CSV drops accents since the last update — please help.",
    "I'm a student writing a thesis on CRM automation; can I interview someone?",
    "We are evaluating tools for Q3; what does your API rate limit look like?",
]


class HubSpotDemo:
    label = "HubSpot portal (SANDBOX, hubspot connector)"

    def __init__(self, interval_seconds: float = 5.0) -> None:
        token = f"pat-na1-{secrets.token_hex(12)}"
        client_secret = secrets.token_urlsafe(24)
        self.portal = HubSpotSandbox(private_tokens=(token,), client_secret=client_secret)
        self._server = SandboxServer(self.portal.app)
        self._interval = interval_seconds
        self.config: Mapping[str, Any] = {}
        self.secrets: Mapping[str, Any] = {"client_secret": client_secret, "access_token": token}

    async def start(self) -> HubSpotDemo:
        await self._server.__aenter__()
        self.config = {
            "app_id": self.portal.app_id,
            "portal_id": self.portal.portal_id,
            "base_url": self._server.url,
        }
        return self

    async def activity(self, hook_url: str) -> None:
        self.portal.subscribe(hook_url)
        rng = random.Random()
        contacts = sorted(self.portal.store.records.get("contacts", {}))
        deals = sorted(self.portal.store.records.get("deals", {}))
        async with httpx.AsyncClient(timeout=10) as client:
            for n in itertools.count(1):
                await asyncio.sleep(self._interval)
                if n % 2:
                    message = f"{rng.choice(_MESSAGES)} (follow-up #{n})"
                    self.portal.change("contacts", rng.choice(contacts), {"message": message})
                else:
                    self.portal.change(
                        "deals", rng.choice(deals), {"dealstage": rng.choice(STAGES)}
                    )
                await self.portal.deliver(client)

    async def aclose(self) -> None:
        await self._server.__aexit__(None, None, None)
