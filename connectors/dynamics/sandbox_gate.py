"""SANDBOX — the Azure AD side of the Dataverse sandbox and the gate in front of its API.

* ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and
  ``POST /{tenant}/oauth2/v2.0/token`` (client credentials, scope
  ``<environment url>/.default``): what MSAL needs, so it runs unchanged. Errors in Azure
  AD's shape (``error``, ``error_description`` starting with an AADSTS code,
  ``error_codes``, ``trace_id``, ``correlation_id``).
* Bearer tokens that expire (401 with ``WWW-Authenticate``), :meth:`Gate.expire_tokens`.
* Injected faults for the next N API answers: a 429 storm (service protection codes and
  ``Retry-After``), 5xx outages, any error; ``delay_seconds`` for slow answers.

Called under the sandbox's lock.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response

TOKEN_SECONDS = 3599
LIMITS = {
    "0x80072322": "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
    "0x80072321": "Combined execution time of incoming requests exceeded limit of 1,200,000 "
    "milliseconds over time window of 300 seconds. Decrease number of concurrent requests "
    "or reduce the duration of requests and try again later.",
    "0x80072326": "Number of concurrent requests exceeded the limit of 52.",
}


def odata_error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def _aad_error(status: int, error: str, code: int, text: str) -> JSONResponse:
    body = {
        "error": error,
        "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {uuid.uuid4()}",
        "error_codes": [code],
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
        "trace_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
    }
    return JSONResponse(body, status)


@dataclass(frozen=True)
class App:
    client_id: str
    client_secret: str
    user_id: str  # the Application User's systemuserid


@dataclass(frozen=True)
class Fault:
    status: int
    code: str
    message: str
    retry_after: int | None


class Gate:
    def __init__(
        self,
        *,
        tenant_id: str,
        apps: Mapping[str, App],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tenant_id = tenant_id
        self.apps = dict(apps)
        self.clock = clock
        self.base_url = ""  # set once served: the environment URL and the authority host
        self.token_requests = 0
        self._tokens: dict[str, tuple[App, float]] = {}
        self._faults: deque[Fault] = deque()

    # ------------------------------------------------------------ Azure AD

    def openid_configuration(self, tenant: str) -> Response:
        if tenant != self.tenant_id:
            return _aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        root = f"{self.base_url}/{tenant}"
        return JSONResponse(
            {
                "token_endpoint": f"{root}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": ["client_secret_post"],
                "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
                "issuer": f"{root}/v2.0",
                "jwks_uri": f"{self.base_url}/{tenant}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "code id_token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "tenant_region_scope": "EU",
            }
        )

    def token(self, tenant: str, form: Mapping[str, str]) -> Response:
        self.token_requests += 1
        if tenant != self.tenant_id:
            return _aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        if form.get("grant_type") != "client_credentials":
            return _aad_error(
                400, "unsupported_grant_type", 70003, "The grant type is unsupported."
            )
        app = self.apps.get(form.get("client_id", ""))
        if app is None:
            return _aad_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{form.get('client_id')}' was not found in the "
                f"directory '{tenant}'.",
            )
        if not secrets.compare_digest(form.get("client_secret", ""), app.client_secret):
            return _aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        wanted = f"{self.base_url}/.default"
        scopes = form.get("scope", "").split()
        if wanted not in scopes and f"{self.base_url}//.default" not in scopes:
            return _aad_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scopes} is not valid.",
            )
        access = f"sbx-dv-{secrets.token_urlsafe(24)}"
        self._tokens[access] = (app, self.clock() + TOKEN_SECONDS)
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": TOKEN_SECONDS,
                "ext_expires_in": TOKEN_SECONDS,
                "access_token": access,
            }
        )

    def expire_tokens(self) -> None:
        self._tokens = {token: (app, 0.0) for token, (app, _) in self._tokens.items()}

    # ------------------------------------------------------------ the API gate

    def inject(
        self,
        status: int,
        times: int = 1,
        *,
        code: str | None = None,
        message: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        if status == 429:
            code = code or "0x80072322"
            message = message or LIMITS.get(code, "Too many requests")
            retry_after = 1 if retry_after is None else retry_after
        fault = Fault(status, code or "", message or "sandbox fault", retry_after)
        self._faults.extend([fault] * times)

    @property
    def faults_left(self) -> int:
        return len(self._faults)

    def caller(self, authorization: str) -> tuple[App | None, Response | None]:
        scheme, _, token = authorization.partition(" ")
        found = self._tokens.get(token) if scheme.lower() == "bearer" else None
        if found is None or found[1] <= self.clock():
            challenge = (
                f"Bearer authorization_uri={self.base_url}/{self.tenant_id}/oauth2/authorize, "
                f"resource_id={self.base_url}/"
            )
            return None, Response(b"", 401, headers={"WWW-Authenticate": challenge})
        if self._faults:
            fault = self._faults.popleft()
            headers: dict[str, Any] = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            return None, odata_error(fault.status, fault.code, fault.message, **headers)
        return found[0], None
