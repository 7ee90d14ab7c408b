"""SANDBOX — the Salesforce org's OAuth token endpoint, ``POST /services/oauth2/token``.

Grants: ``jwt-bearer`` (an RS256 assertion checked against the connected app's
certificate: iss, sub, aud, exp), ``client_credentials`` and ``password``. Answers
``access_token``, ``instance_url``, ``id``, ``token_type``, ``issued_at``, ``signature``
and ``scope``, with no ``expires_in`` (Salesforce sends none: a session ends when the org
says 401 ``INVALID_SESSION_ID``); errors as ``{"error", "error_description"}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


class TokenEndpoint:
    """Issues sessions for one connected app and integration user, and knows which live."""

    def __init__(
        self,
        *,
        organization_id: str,
        client_id: str,
        client_secret: str,
        jwt_certificate: str | None,  # PEM public key or certificate of the connected app
        username: str,
        password: str,  # with the security token appended, as the password grant sends it
        user_id: str,
    ) -> None:
        self._org = organization_id
        self._client_id, self._client_secret = client_id, client_secret
        self._certificate = jwt_certificate
        self._username, self._password, self._user_id = username, password, user_id
        self._lock = threading.Lock()
        self._sessions: set[str] = set()
        self.requests = 0  # token requests, granted or not

    def valid(self, token: str) -> bool:
        with self._lock:
            return token in self._sessions

    def expire_all(self) -> None:
        with self._lock:
            self._sessions.clear()

    async def token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        self.requests += 1
        grant = form.get("grant_type", "")
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return self._jwt(request, form.get("assertion", ""))
        if form.get("client_id") != self._client_id:
            return _error("invalid_client_id", "client identifier invalid")
        if form.get("client_secret") != self._client_secret:
            return _error("invalid_client", "invalid client credentials")
        if grant == "client_credentials":
            return self._issue(request)
        if grant == "password":
            if form.get("username") != self._username or form.get("password") != self._password:
                return _error("invalid_grant", "authentication failure")
            return self._issue(request)
        return _error("unsupported_grant_type", "grant type not supported")

    def _jwt(self, request: Request, assertion: str) -> Response:
        import jwt

        if self._certificate is None:
            return _error("invalid_grant", "no certificate on the connected app")
        try:
            claims = jwt.decode(
                assertion,
                self._certificate,
                algorithms=["RS256"],
                audience=str(request.base_url).rstrip("/"),
                issuer=self._client_id,
                options={"require": ["exp", "iss", "sub", "aud"]},
            )
        except jwt.PyJWTError as exc:
            return _error("invalid_grant", f"invalid assertion: {exc}")
        if claims["sub"] != self._username:
            return _error("invalid_grant", "user hasn't approved this consumer")
        return self._issue(request)

    def _issue(self, request: Request) -> JSONResponse:
        token = f"{self._org[:15]}!AQ{secrets.token_urlsafe(48)}"
        with self._lock:
            self._sessions.add(token)
        instance = str(request.base_url).rstrip("/")
        issued = str(int(time.time() * 1000))
        signature = hmac.new(
            self._client_secret.encode(), f"{instance}/id{issued}".encode(), hashlib.sha256
        ).digest()
        return JSONResponse(
            {
                "access_token": token,
                "signature": base64.b64encode(signature).decode(),
                "scope": "api",
                "instance_url": instance,
                "id": f"{instance}/id/{self._org}/{self._user_id}",
                "token_type": "Bearer",
                "issued_at": issued,
            }
        )


def _error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status)
