"""SAP's OData V2 APIs over httpx: auth, the CSRF token, and errors.

Every request names its service (``API_SALES_ORDER_SRV``) and a path inside it. Reads
send ``Accept: application/json`` and the ``sap-client`` header. A modifying request
(POST, PATCH, MERGE, PUT, DELETE, ``$batch``) first needs a CSRF token: a GET on the
service root with ``X-CSRF-Token: Fetch`` answers it in the ``x-csrf-token`` header along
with session cookies, which the client's cookie jar keeps and sends with the token. When
the token expires, SAP answers 403 with ``x-csrf-token: Required``; the client fetches a
new one and repeats the request once. A 401 renews an OAuth token once. Everything else
that fails is raised as :mod:`connectors.sap.errors` decides (429/503 transient).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from connectors.sap.auth import Auth
from connectors.sap.errors import CsrfRequired, SapUnauthorized, from_response
from core.http_errors import translate_httpx

READS = {"GET", "HEAD"}


class ODataClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        auth: Auth,
        *,
        service_path: str,
        client: str,
    ) -> None:
        self._http = http
        self._auth = auth
        self._prefix = "/" + service_path.strip("/")
        self._client = client
        self._csrf: str | None = None
        self.csrf_fetches = 0

    def url(self, service: str, path: str = "") -> str:
        return f"{self._prefix}/{service}/{path.lstrip('/')}"

    async def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {
            "Accept": "application/json",
            "sap-client": self._client,
            "Authorization": await self._auth.header(),
        }
        return headers | dict(extra or {})

    async def _fetch_csrf(self, service: str) -> str:
        with translate_httpx(f"fetch a CSRF token for {service}"):
            response = await self._http.get(
                self.url(service), headers=await self._headers({"X-CSRF-Token": "Fetch"})
            )
        self.csrf_fetches += 1
        token = response.headers.get("x-csrf-token")
        if response.is_error or not token or token.lower() == "required":
            headers = {k.lower(): v for k, v in response.headers.items()}
            raise from_response(
                f"fetch a CSRF token for {service}", response.status_code, response.content, headers
            )
        self._csrf = str(token)
        return self._csrf

    async def send(
        self,
        method: str,
        service: str,
        path: str,
        *,
        what: str,
        json: Any = None,
        content: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        method = method.upper()
        modifying = method not in READS
        renewed_auth = retried_csrf = False
        while True:
            extra = dict(headers or {})
            if modifying:
                extra["X-CSRF-Token"] = self._csrf or await self._fetch_csrf(service)
            with translate_httpx(what):
                response = await self._http.request(
                    method,
                    path if path.startswith(("http://", "https://")) else self.url(service, path),
                    headers=await self._headers(extra),
                    json=json,
                    content=content,
                    params=params,
                )
            if not response.is_error:
                return response
            error = from_response(
                what,
                response.status_code,
                response.content,
                {k.lower(): v for k, v in response.headers.items()},
            )
            if isinstance(error, CsrfRequired) and modifying and not retried_csrf:
                self._csrf, retried_csrf = None, True  # expired: fetch anew, repeat once
                continue
            if isinstance(error, SapUnauthorized) and not renewed_auth:
                renewed_auth = True
                if await self._auth.renewed():
                    self._csrf = None  # tokens are bound to the session that fetched them
                    continue
            raise error

    async def metadata(self, service: str) -> bytes:
        response = await self.send(
            "GET",
            service,
            "$metadata",
            what=f"read {service}/$metadata",
            headers={"Accept": "application/xml"},
        )
        return response.content

    async def aclose(self) -> None:
        await self._http.aclose()
