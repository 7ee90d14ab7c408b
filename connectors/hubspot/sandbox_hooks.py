"""SANDBOX — HubSpot's webhook sender: batches of change events, signed as HubSpot signs.

Each delivery is a JSON array (at most 100 events) POSTed with ``X-HubSpot-Signature-v3``
+ ``X-HubSpot-Request-Timestamp`` (ms) and, as HubSpot still does for compatibility,
``X-HubSpot-Signature`` with ``X-HubSpot-Signature-Version: v1``. A delivery answered
with anything but 2xx is sent again later with ``attemptNumber`` + 1 and the same event
ids. :func:`signed_headers` lets tests forge stale, tampered or wrongly keyed deliveries.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from connectors.hubspot.webhooks import sign_v1, sign_v2, sign_v3

BATCH = 100


def signed_headers(
    secret: str,
    url: str,
    body: bytes,
    *,
    versions: Sequence[str] = ("v3", "v1"),
    timestamp_ms: int | None = None,
    method: str = "POST",
) -> dict[str, str]:
    stamp = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
    headers = {"Content-Type": "application/json"}
    if "v3" in versions:
        headers["X-HubSpot-Signature-v3"] = sign_v3(secret, method, url, body, stamp)
        headers["X-HubSpot-Request-Timestamp"] = stamp
    legacy = next((v for v in versions if v in ("v1", "v2")), None)
    if legacy == "v1":
        headers["X-HubSpot-Signature"] = sign_v1(secret, body)
        headers["X-HubSpot-Signature-Version"] = "v1"
    elif legacy == "v2":
        headers["X-HubSpot-Signature"] = sign_v2(secret, method, url, body)
        headers["X-HubSpot-Signature-Version"] = "v2"
    return headers


@dataclass
class Subscription:
    url: str
    client_secret: str
    app_id: int
    portal_id: int
    subscription_id: int = 3_300_001
    versions: tuple[str, ...] = ("v3", "v1")


@dataclass
class Outbox:
    """Events waiting for delivery; filled from the sandbox's thread, sent from any loop."""

    pending: list[dict[str, Any]] = field(default_factory=list)
    delivered: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next_id: int = 4_100_000_001

    def add(self, subscription: Subscription, **event: Any) -> None:
        with self._lock:
            self.pending.append(
                {
                    "eventId": self._next_id,
                    "subscriptionId": subscription.subscription_id,
                    "portalId": subscription.portal_id,
                    "appId": subscription.app_id,
                    "attemptNumber": 0,
                    **event,
                }
            )
            self._next_id += 1

    async def deliver(
        self, subscription: Subscription, client: httpx.AsyncClient
    ) -> list[httpx.Response]:
        """Send what is pending; failed batches stay pending with attemptNumber + 1."""
        with self._lock:
            batch, self.pending = self.pending, []
        responses = []
        for start in range(0, len(batch), BATCH):
            chunk = batch[start : start + BATCH]
            body = json.dumps(chunk, separators=(",", ":")).encode()
            headers = signed_headers(
                subscription.client_secret,
                subscription.url,
                body,
                versions=subscription.versions,
            )
            try:
                response = await client.post(subscription.url, content=body, headers=headers)
            except httpx.HTTPError:
                response = None
            if response is not None and response.is_success:
                self.delivered.extend(chunk)
            else:
                again = [e | {"attemptNumber": e["attemptNumber"] + 1} for e in chunk]
                with self._lock:
                    self.pending.extend(again)
            if response is not None:
                responses.append(response)
        return responses
