"""Access tokens for Dataverse: OAuth 2.0 client credentials through MSAL.

``msal.ConfidentialClientApplication(client_id, authority=<host>/<tenant>,
client_credential=<secret>).acquire_token_for_client([<environment_url>/.default])``. MSAL
answers from its token cache until the token is near expiry, then asks the token endpoint
again; the cache is serialised into the connection's sealed state (``context.state``, key
``msal``) so every worker and restart shares one token instead of each fetching its own.
A network fetch runs under ``state.lock("msal")``: a worker that waited re-reads the cache
another one filled. A 401 from the Web API drops the refused token (:meth:`refreshed`).

MSAL is synchronous (``requests``); each acquisition runs in a worker thread. The
application object is built lazily, because building it already fetches the authority's
OpenID configuration. For a host other than ``login.microsoftonline.com`` (the SANDBOX)
instance discovery is off; MSAL still requires https, hence ``config.ca_file``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from connectors.base import StateStore
from connectors.dynamics.config import DynamicsConfig, DynamicsSecrets
from core.errors import ConnectorTerminalError, ConnectorTransientError

STATE_KEY = "msal"
EARLY_SECONDS = 300  # MSAL itself treats a token this close to expiry as expired
_TRANSIENT_ERRORS = {"temporarily_unavailable", "server_error"}


class MsalTokens:
    def __init__(
        self,
        config: DynamicsConfig,
        secrets: DynamicsSecrets,
        state: StateStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        import msal  # type: ignore[import-untyped]

        self._config = config
        self._secrets = secrets
        self._state = state
        self._clock = clock
        self._cache: Any = msal.SerializableTokenCache()
        self._app: Any = None
        self._http: Any = None
        self._current: tuple[str, float] | None = None  # (token, expires at)
        self._local = asyncio.Lock()
        self.fetches = 0  # token endpoint calls made by this instance

    async def token(self) -> str:
        current = self._current
        if current is not None and self._clock() < current[1] - EARLY_SECONDS:
            return current[0]
        return await self._acquire(stale=None)

    async def refreshed(self, stale: str) -> str:
        """A token other than ``stale`` (which the Web API refused)."""
        return await self._acquire(stale=stale)

    async def _acquire(self, stale: str | None) -> str:
        async with self._local:
            current = self._current
            if (
                current is not None
                and current[0] != stale
                and self._clock() < current[1] - EARLY_SECONDS
            ):
                return current[0]  # another task of this process got one meanwhile
            async with self._state.lock(STATE_KEY):
                stored = await self._state.get(STATE_KEY)
                serialized = str(stored["cache"]) if stored and stored.get("cache") else None
                token, expires_in, changed = await asyncio.to_thread(
                    self._acquire_sync, serialized, stale
                )
                if changed is not None:
                    await self._state.put(STATE_KEY, {"cache": changed})
            self._current = (token, self._clock() + expires_in)
            return token

    def close(self) -> None:
        """Close MSAL's connection pool."""
        if self._http is not None:
            self._http.close()

    # ------------------------------------------------------------ in a thread

    def _application(self) -> Any:
        if self._app is None:
            import msal
            import requests

            public = self._config.public_authority
            try:
                http = self._http = _session(self._config.ca_file, self._config.timeout_seconds)
                self._app = msal.ConfidentialClientApplication(
                    self._secrets.client_id,
                    client_credential=self._secrets.client_secret.get_secret_value(),
                    authority=self._config.authority,
                    validate_authority=public,
                    instance_discovery=None if public else False,
                    token_cache=self._cache,
                    http_client=http,
                )
            except requests.RequestException as exc:
                raise ConnectorTransientError(
                    f"Azure AD authority {self._config.authority}: {type(exc).__name__}: {exc}"
                ) from exc
            except ValueError as exc:  # MSAL's word for an unknown tenant or authority
                raise ConnectorTerminalError(
                    f"Azure AD authority {self._config.authority} refused discovery: {exc}"
                ) from exc
        return self._app

    def _acquire_sync(
        self, serialized: str | None, stale: str | None
    ) -> tuple[str, int, str | None]:
        import requests

        if serialized:
            self._cache.deserialize(serialized)
        app = self._application()
        scopes = [self._config.scope]
        try:
            result = app.acquire_token_for_client(scopes=scopes)
            if stale is not None and result.get("access_token") == stale:
                app.remove_tokens_for_client()
                result = app.acquire_token_for_client(scopes=scopes)
        except requests.RequestException as exc:
            raise ConnectorTransientError(
                f"Azure AD token endpoint: {type(exc).__name__}: {exc}"
            ) from exc
        if result.get("token_source") != "cache":
            self.fetches += 1
        if "access_token" not in result:
            error = str(result.get("error") or "unknown_error")
            description = str(result.get("error_description") or "").split("\r\n")[0][:300]
            text = f"Azure AD refused the client credentials: {error} {description}".strip()
            if error in _TRANSIENT_ERRORS:
                raise ConnectorTransientError(text)
            raise ConnectorTerminalError(text, error=error)
        changed = self._cache.serialize() if self._cache.has_state_changed else None
        self._cache.has_state_changed = False
        return str(result["access_token"]), int(result.get("expires_in") or 0), changed


def _session(ca_file: str | None, timeout: float) -> Any:
    """A requests session for MSAL that keeps ``ca_file`` and a timeout on every request
    (requests lets REQUESTS_CA_BUNDLE replace ``session.verify`` otherwise)."""
    import requests

    class PinnedSession(requests.Session):
        def merge_environment_settings(
            self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
        ) -> Any:
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if ca_file is not None and verify in (None, True):
                settings["verify"] = ca_file
            return settings

        def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", timeout)
            return super().request(method, url, *args, **kwargs)

    session = PinnedSession()
    adapter = requests.adapters.HTTPAdapter(max_retries=1)
    session.mount("https://", adapter)
    return session
