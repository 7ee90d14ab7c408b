"""OAuth 2.0 for a Salesforce connection: JWT bearer, client credentials, password.

Salesforce's token answer has no ``expires_in`` (a session lasts as long as the org's
session timeout and may be revoked at any time), so a token is used until an API call
answers 401 ``INVALID_SESSION_ID``. Then :meth:`TokenSource.refresh` gets a new one, once
for every worker of the connection: under ``context.state.lock("oauth")`` it re-reads the
stored token, and if another worker already replaced the stale one it adopts that token
instead of calling the token endpoint again. The token and the ``instance_url`` from the
answer (the API host Salesforce wants used) are stored sealed with ``context.state.put``.

The token request is plain ``requests`` (simple-salesforce's own login builds the token
URL as ``https://{domain}.salesforce.com``, which rules out My Domain hosts on other
suffixes and the local sandbox); it runs in a thread like every other call.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any

import requests

from connectors.base import StateStore
from connectors.salesforce.config import AuthFlow, SalesforceConfig, SalesforceSecrets
from core.errors import ConnectorTerminalError, ConnectorTransientError

STATE_KEY = "oauth"
JWT_LIFETIME_SECONDS = 180  # Salesforce accepts assertions valid for at most 3 minutes


@dataclass(frozen=True)
class Token:
    access_token: str
    instance_url: str
    user_id: str | None = None
    organization_id: str | None = None
    issued_at: str | None = None


def _secret(value: Any) -> str:
    return "" if value is None else str(value.get_secret_value())


class TokenSource:
    """The connection's current access token, shared through the state store."""

    def __init__(
        self,
        config: SalesforceConfig,
        secrets: SalesforceSecrets,
        state: StateStore | None,
        http: requests.Session,
    ) -> None:
        self._config = config
        self._secrets = secrets
        self._state = state
        self._http = http
        self._token: Token | None = None
        self._local = asyncio.Lock()  # one refresh at a time in this process
        self.requests = 0  # token endpoint calls made by this process

    async def current(self) -> Token:
        if self._token is not None:
            return self._token
        stored = await self._stored()
        if stored is not None:
            self._token = stored
            return stored
        return await self.refresh(None)

    async def refresh(self, stale: Token | None) -> Token:
        """A token other than ``stale``: adopted from another worker, or a new one."""
        async with self._local:
            if self._token is not None and self._token != stale:
                return self._token  # refreshed by another task of this process meanwhile
            if self._state is None:
                return await self._renew()
            async with self._state.lock(STATE_KEY):
                stored = await self._stored()
                if stored is not None and stored != stale:
                    self._token = stored
                    return stored
                return await self._renew()

    async def _stored(self) -> Token | None:
        if self._state is None:
            return None
        value = await self._state.get(STATE_KEY)
        return Token(**value) if value else None

    async def _renew(self) -> Token:
        token = await asyncio.to_thread(self._request_token)
        if self._state is not None:
            await self._state.put(STATE_KEY, asdict(token))
        self._token = token
        return token

    # ------------------------------------------------------------ token endpoint

    def _grant(self) -> dict[str, str]:
        config, secrets = self._config, self._secrets
        client_id = _secret(secrets.client_id)
        if config.auth_flow is AuthFlow.JWT_BEARER:
            import jwt  # PyJWT (declared with its crypto extra for RS256)

            claims = {
                "iss": client_id,
                "sub": config.username,
                "aud": config.audience(),
                "exp": int(time.time()) + JWT_LIFETIME_SECONDS,
            }
            assertion = jwt.encode(claims, _secret(secrets.private_key), algorithm="RS256")
            return {
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": assertion,
            }
        if config.auth_flow is AuthFlow.CLIENT_CREDENTIALS:
            return {
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": _secret(secrets.client_secret),
            }
        return {
            "grant_type": "password",
            "client_id": client_id,
            "client_secret": _secret(secrets.client_secret),
            "username": config.username or "",
            "password": _secret(secrets.password) + _secret(secrets.security_token),
        }

    def _request_token(self) -> Token:
        url = self._config.token_url
        self.requests += 1
        try:
            response = self._http.post(
                url,
                data=self._grant(),
                headers={"Accept": "application/json"},
                timeout=self._config.timeout_seconds,
            )
        except requests.RequestException as exc:
            raise ConnectorTransientError(f"POST {url}: {type(exc).__name__}: {exc}") from exc
        try:
            body: Any = response.json()
        except ValueError:
            body = {}
        if response.status_code >= 500 or response.status_code == 429:
            raise ConnectorTransientError(f"POST {url}: HTTP {response.status_code}")
        if response.status_code != 200 or not isinstance(body, dict):
            error = body.get("error", "") if isinstance(body, dict) else ""
            description = body.get("error_description", "") if isinstance(body, dict) else ""
            raise ConnectorTerminalError(
                f"Salesforce refused the {self._config.auth_flow.value} login: "
                f"{error or f'HTTP {response.status_code}'} {description}".strip(),
                status_code=response.status_code,
            )
        return self._token_from(body)

    def _token_from(self, body: dict[str, Any]) -> Token:
        access, instance = body.get("access_token"), body.get("instance_url")
        if not isinstance(access, str) or not isinstance(instance, str):
            raise ConnectorTerminalError("the token answer lacks access_token or instance_url")
        # id: https://login.salesforce.com/id/<orgId>/<userId>
        parts = str(body.get("id", "")).rstrip("/").split("/")
        org, user = (parts[-2], parts[-1]) if len(parts) >= 2 and "id" in parts else (None, None)
        if org and org[:15] != self._config.organization_id[:15]:
            raise ConnectorTerminalError(
                f"the credentials log in to org {org}, not to config.organization_id "
                f"{self._config.organization_id}"
            )
        return Token(access, instance.rstrip("/"), user, org, str(body.get("issued_at", "")))
