"""How requests to SAP's OData APIs authenticate: Basic, or OAuth client credentials.

Basic sends the SAP user and password on every request. Client credentials (SAP BTP /
S/4HANA Cloud communication arrangements) posts ``grant_type=client_credentials`` to
``config.token_url`` with the client id and secret as Basic auth, keeps the access token
until shortly before ``expires_in`` runs out, and fetches a new one once after a 401.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Protocol

import httpx

from connectors.sap.errors import SapUnauthorized, from_response
from core.http_errors import translate_httpx

EARLY_SECONDS = 60


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Auth(Protocol):
    async def header(self) -> str: ...

    async def renewed(self) -> bool:
        """After a 401: True when a new credential was obtained (repeat the request)."""


class BasicAuth:
    def __init__(self, user: str, password: str) -> None:
        self._header = basic_header(user, password)

    async def header(self) -> str:
        return self._header

    async def renewed(self) -> bool:
        return False


class ClientCredentials:
    def __init__(
        self,
        http: httpx.AsyncClient,
        token_url: str,
        client_id: str,
        client_secret: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._url = token_url
        self._basic = basic_header(client_id, client_secret)
        self._clock = clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def header(self) -> str:
        async with self._lock:
            if self._token is None or self._clock() >= self._expires - EARLY_SECONDS:
                await self._fetch()
            assert self._token is not None
            return f"Bearer {self._token}"

    async def renewed(self) -> bool:
        async with self._lock:
            await self._fetch()
        return True

    async def _fetch(self) -> None:
        with translate_httpx("fetch an OAuth token"):
            response = await self._http.post(
                self._url,
                data={"grant_type": "client_credentials"},
                headers={"Authorization": self._basic, "Accept": "application/json"},
            )
        self.fetches += 1
        if response.status_code in (400, 401):
            raise SapUnauthorized(
                f"the token endpoint refused the client credentials ({response.status_code})"
            )
        if response.is_error:
            headers = {k.lower(): v for k, v in response.headers.items()}
            raise from_response("fetch an OAuth token", response.status_code, b"", headers)
        body = response.json()
        self._token = str(body["access_token"])
        self._expires = self._clock() + float(body.get("expires_in") or 3600)
