"""SANDBOX demo for ``switchyard serve --demo``: a ticket tool that changes tickets and
sends signed events, so a newcomer sees events, jobs and results within a minute."""

from __future__ import annotations

import asyncio
import itertools
import random
import secrets
from collections.abc import Mapping
from typing import Any

import httpx

from connectors.webhook.sandbox import RecordsSandbox, SandboxServer, make_event, send_events

_SUBJECTS = [
    "Invoice 4471 charged twice",
    "Cannot log in after password reset",
    "Shipment to Rotterdam delayed",
    "Request: add SSO for the EU team",
    "Export to CSV drops accents",
]


class WebhookDemo:
    label = "Ticket tool (SANDBOX, webhook connector)"

    def __init__(self, interval_seconds: float = 4.0) -> None:
        seed = {
            "ticket": {
                f"T-{n}": {"subject": subject, "body": "", "status": "open"}
                for n, subject in enumerate(_SUBJECTS, start=1)
            }
        }
        self._token = secrets.token_urlsafe(16)
        self._signing_secret = secrets.token_urlsafe(24)
        self.tool = RecordsSandbox(seed, token=self._token)
        self._server = SandboxServer(self.tool.app)
        self._interval = interval_seconds
        self.config: Mapping[str, Any] = {}
        self.secrets: Mapping[str, Any] = {
            "signing_secret": self._signing_secret,
            "api_token": self._token,
        }

    async def start(self) -> WebhookDemo:
        await self._server.__aenter__()
        self.config = {"base_url": self._server.url}
        return self

    async def activity(self, hook_url: str) -> None:
        rng = random.Random()
        async with httpx.AsyncClient(timeout=10) as client:
            for n in itertools.count(len(_SUBJECTS) + 1):
                await asyncio.sleep(self._interval)
                if rng.random() < 0.3:
                    record_id = f"T-{n}"
                    fields = {"subject": rng.choice(_SUBJECTS), "body": "", "status": "open"}
                    self.tool.put("ticket", record_id, fields)
                    event = make_event("ticket", record_id, "created", data=fields)
                else:
                    record_id = f"T-{rng.randint(1, len(_SUBJECTS))}"
                    fields = self.tool.get("ticket", record_id) or {}
                    fields["body"] = f"Customer follow-up #{n}: still waiting for an answer."
                    self.tool.put("ticket", record_id, fields)
                    event = make_event("ticket", record_id, changed_fields=["body"])
                await send_events(client, hook_url, self._signing_secret, [event])

    async def aclose(self) -> None:
        await self._server.__aexit__(None, None, None)
