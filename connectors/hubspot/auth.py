"""Access tokens: a private app's fixed token, or OAuth tokens that refresh and rotate.

OAuth access tokens live 30 minutes; a refresh (``POST /oauth/v1/token``,
``grant_type=refresh_token``) answers a new access token and a refresh token, which may
differ from the one sent. The current pair is kept in the connection's sealed state
(``context.state``, key ``oauth``) so every worker and every restart uses the newest one,
and a refresh runs under ``state.lock("oauth")``: a second worker that waited for the lock
re-reads the state and adopts the token the first one stored instead of refreshing again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from connectors.base import StateStore

STATE_KEY = "oauth"
EARLY_SECONDS = 60  # refresh this long before the access token expires


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_at: float  # epoch seconds

    def fresh(self, now: float) -> bool:
        return now < self.expires_at - EARLY_SECONDS

    @classmethod
    def load(cls, value: Mapping[str, Any] | None) -> Tokens | None:
        if not value or not value.get("access_token") or not value.get("refresh_token"):
            return None
        return cls(
            str(value["access_token"]),
            str(value["refresh_token"]),
            float(value.get("expires_at", 0)),
        )


# Swaps a refresh token for (access token, refresh token, expires_in seconds).
Exchange = Callable[[str], Awaitable[tuple[str, str, int]]]


class TokenSource(Protocol):
    async def token(self) -> str: ...

    async def refreshed(self, stale: str) -> str | None:
        """A token to replace ``stale`` after a 401, or None when none can be had."""


class StaticToken:
    """A private app's access token: it does not expire, so a 401 is final."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def token(self) -> str:
        return self._token

    async def refreshed(self, stale: str) -> str | None:
        return None


class OAuthTokens:
    def __init__(
        self,
        state: StateStore,
        initial_refresh_token: str,
        exchange: Exchange,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self._initial = initial_refresh_token
        self._exchange = exchange
        self._clock = clock
        self._current: Tokens | None = None
        self.refreshes = 0  # exchanges made by this instance

    async def token(self) -> str:
        now = self._clock()
        if self._current is None or not self._current.fresh(now):
            stored = Tokens.load(await self._state.get(STATE_KEY))
            self._current = stored if stored is not None and stored.fresh(now) else None
        if self._current is None:
            return await self._refresh(stale=None)
        return self._current.access_token

    async def refreshed(self, stale: str) -> str | None:
        return await self._refresh(stale=stale)

    async def _refresh(self, stale: str | None) -> str:
        async with self._state.lock(STATE_KEY):
            stored = Tokens.load(await self._state.get(STATE_KEY))
            now = self._clock()
            if stored is not None and stored.fresh(now) and stored.access_token != stale:
                self._current = stored  # another worker refreshed while we waited
                return stored.access_token
            refresh_token = stored.refresh_token if stored is not None else self._initial
            access, rotated, expires_in = await self._exchange(refresh_token)
            self.refreshes += 1
            tokens = Tokens(access, rotated or refresh_token, now + expires_in)
            await self._state.put(
                STATE_KEY,
                {
                    "access_token": tokens.access_token,
                    "refresh_token": tokens.refresh_token,
                    "expires_at": tokens.expires_at,
                },
            )
            self._current = tokens
            return tokens.access_token
