"""The Salesforce REST API through simple-salesforce, with the connection's token.

simple-salesforce is synchronous (requests), so each call runs in a worker thread with
``asyncio.to_thread``: the event loop never blocks, and the library is used unchanged (an
async rewrite would lose its request shapes, error classes and limit parsing). Calls are
short, and the default thread pool bounds how many run at once.

Every call goes through :meth:`SalesforceClient.call`, which

1. waits on the :class:`ApiBudget` (``Sforce-Limit-Info: api-usage=N/M`` from the last
   answers): above the soft share of the daily allocation calls are spaced out, above the
   hard share they stop with a transient error, so the org keeps headroom for its users;
2. runs the call with the current token, translating errors (:mod:`.errors`);
3. on 401 ``INVALID_SESSION_ID`` refreshes the token once (shared by every worker, see
   :mod:`.auth`) and replays the same call.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import requests

from connectors.salesforce.auth import Token, TokenSource
from connectors.salesforce.errors import SessionExpired, translate
from core.errors import ConnectorTransientError

if TYPE_CHECKING:
    from simple_salesforce.api import Salesforce

T = TypeVar("T")
_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")
MAX_SPACING_SECONDS = 2.0
BUDGET_RETRY_SECONDS = 900.0


class _Session(requests.Session):
    """A requests session whose CA file wins over ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``
    (requests lets those replace ``session.verify`` for every request otherwise), and whose
    every request has a timeout: simple-salesforce's update, upsert and describe take none,
    and a hung org must not hold a worker thread forever."""

    def __init__(self, ca_file: str | None, timeout: float) -> None:
        super().__init__()
        self._ca_file = ca_file
        self._timeout = timeout

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().request(method, url, *args, **kwargs)

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:  # requests' private TypedDict, unchanged in shape
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if self._ca_file is not None and verify in (None, True):
            settings["verify"] = self._ca_file
        return settings


def http_session(ca_file: str | None, timeout: float) -> requests.Session:
    """The session every call of one connection uses (pooled connections, one CA, a
    timeout on every request)."""
    return _Session(ca_file, timeout)


class ApiBudget:
    """The org's daily API usage as last reported, and how long to hold the next call."""

    def __init__(self, soft: float, hard: float) -> None:
        self._soft, self._hard = soft, hard
        self._lock = threading.Lock()
        self.used = 0
        self.total = 0

    def observe(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """A requests response hook: read ``Sforce-Limit-Info``."""
        match = _USAGE.search(response.headers.get("Sforce-Limit-Info", ""))
        if match:
            with self._lock:
                self.used, self.total = int(match[1]), int(match[2])

    @property
    def share(self) -> float:
        with self._lock:
            return self.used / self.total if self.total else 0.0

    def delay(self) -> float:
        """Seconds to wait before the next call; raises once the hard share is reached."""
        share = self.share
        if share >= self._hard:
            raise ConnectorTransientError(
                f"{share:.1%} of the org's daily API allocation is used "
                f"({self.used}/{self.total}); holding calls back to leave the rest to its users",
                retry_after=BUDGET_RETRY_SECONDS,
            )
        if share <= self._soft:
            return 0.0
        return MAX_SPACING_SECONDS * (share - self._soft) / (self._hard - self._soft)


class SalesforceClient:
    def __init__(
        self,
        tokens: TokenSource,
        http: requests.Session,
        budget: ApiBudget,
        *,
        api_version: str,
        timeout: float,
    ) -> None:
        self.tokens = tokens
        self.budget = budget
        self._http = http
        self._version = api_version
        self._timeout = timeout
        self._clients: dict[Token, Salesforce] = {}

    def _client(self, token: Token) -> Salesforce:
        from simple_salesforce.api import Salesforce

        client = self._clients.get(token)
        if client is None:
            self._clients = {
                token: Salesforce(
                    session_id=token.access_token,
                    instance_url=token.instance_url,
                    version=self._version,
                    session=self._http,
                )
            }
            client = self._clients[token]
        return client

    async def call(self, what: str, operation: Callable[[Salesforce], T]) -> T:
        delay = self.budget.delay()
        if delay:
            await asyncio.sleep(delay)
        token = await self.tokens.current()
        try:
            return await asyncio.to_thread(self._run, token, what, operation)
        except SessionExpired:
            token = await self.tokens.refresh(token)
            return await asyncio.to_thread(self._run, token, what, operation)

    def _run(self, token: Token, what: str, operation: Callable[[Salesforce], T]) -> T:
        client = self._client(token)
        with translate(what):
            return operation(client)

    # ---------------------------------------------------------------- operations

    async def get(self, object_name: str, record_id: str, fields: list[str] | None) -> Any:
        params = {"fields": ",".join(fields)} if fields else None
        return await self.call(
            f"GET {object_name}/{record_id}",
            lambda sf: getattr(sf, object_name).get(
                record_id, params=params, timeout=self._timeout
            ),
        )

    async def update(
        self, object_name: str, record_id: str, fields: dict[str, Any], headers: dict[str, str]
    ) -> int:
        """PATCH the record; the HTTP status (204 on success)."""
        response = await self.call(
            f"PATCH {object_name}/{record_id}",
            lambda sf: getattr(sf, object_name).update(
                record_id, fields, raw_response=True, headers=headers
            ),
        )
        return int(response.status_code)

    async def upsert(
        self, object_name: str, field: str, value: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """PATCH by external id: {"id", "created"} (201 created, 200/204 updated)."""
        from urllib.parse import quote

        def run(sf: Salesforce) -> dict[str, Any]:
            response = getattr(sf, object_name).upsert(
                f"{field}/{quote(value, safe='')}", fields, raw_response=True
            )
            body = response.json() if response.status_code != 204 else {}
            return {"id": body.get("id"), "created": response.status_code == 201}

        return await self.call(f"PATCH {object_name}/{field}/{value}", run)

    async def update_collection(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """PATCH composite/sobjects (≤ 200 records, allOrNone false): per-item results."""
        body = {"allOrNone": False, "records": records}
        result = await self.call(
            "PATCH composite/sobjects",
            lambda sf: sf.restful(
                "composite/sobjects", method="PATCH", json=body, timeout=self._timeout
            ),
        )
        return list(result or [])

    async def query(self, soql: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "query", lambda sf: sf.query(soql, timeout=self._timeout)
        )
        return result

    async def query_more(self, next_records_url: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "query more",
            lambda sf: sf.query_more(
                next_records_url, identifier_is_url=True, timeout=self._timeout
            ),
        )
        return result

    async def picklist_values(self, object_name: str, record_type_id: str) -> dict[str, Any]:
        """User Interface API (API 41.0+): the values every picklist field of the object
        takes on records of the record type, ``{"eTag", "picklistFieldValues": {field:
        {"controllerValues", "defaultValue", "eTag", "url", "values": [{"value", …}]}}}``."""
        path = f"ui-api/object-info/{object_name}/picklist-values/{record_type_id}"
        result = await self.call(f"GET {path}", lambda sf: sf.restful(path, timeout=self._timeout))
        return dict(result or {})

    async def describe(self, object_name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            f"describe {object_name}", lambda sf: getattr(sf, object_name).describe()
        )
        return result
