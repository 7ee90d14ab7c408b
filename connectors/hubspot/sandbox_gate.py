"""SANDBOX — the gate in front of :class:`~connectors.hubspot.sandbox.HubSpotSandbox`'s API:
bearer auth (private-app tokens; OAuth access tokens that expire → 401
``EXPIRED_AUTHENTICATION``), the OAuth token endpoint with refresh-token rotation (a
refresh token works once), injected faults, and the rolling rate window with HubSpot's
``X-HubSpot-RateLimit-*`` headers (daily ones only for private-app tokens) and 429
``RATE_LIMITS`` answers. Called under the sandbox's lock."""

from __future__ import annotations

import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

ACCESS_TOKEN_SECONDS = 1800
THROTTLED = "You have reached your ten_secondly_rolling limit."


def error(status: int, category: str, message: str, **extra: Any) -> JSONResponse:
    """HubSpot's error body: status, message, correlationId, category (+ extras)."""
    body = {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
        **extra,
    }
    return JSONResponse(body, status)


def _throttled() -> JSONResponse:
    return error(
        429, "RATE_LIMITS", THROTTLED, errorType="RATE_LIMIT", policyName="TEN_SECONDLY_ROLLING"
    )


def _oauth_error(status: str, message: str) -> JSONResponse:
    body = {"status": status, "message": message, "correlationId": str(uuid.uuid4())}
    return JSONResponse(body, 400)


class Gate:
    def __init__(
        self,
        *,
        private_tokens: tuple[str, ...],
        refresh_tokens: tuple[str, ...],
        client_id: str,
        client_secret: str,
        rate_max: int,
        window_ms: int,
        daily_max: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.token_requests = 0
        self.clock = clock
        self._private = set(private_tokens)
        self._refresh = set(refresh_tokens)
        self._access: dict[str, float] = {}  # OAuth access token → expiry (epoch s)
        self._faults: deque[tuple[int, str, str]] = deque()
        self._window: deque[float] = deque()
        self._rate_max, self._window_ms = rate_max, window_ms
        self._daily_max, self._daily_used = daily_max, 0

    def inject(self, status: int, times: int, category: str | None, message: str) -> None:
        default = "RATE_LIMITS" if status == 429 else "INTERNAL_ERROR"
        self._faults.extend([(status, category or default, message)] * times)

    @property
    def faults_left(self) -> int:
        return len(self._faults)

    def expire_tokens(self) -> None:
        self._access = {token: 0.0 for token in self._access}

    def rate_headers(self, private: bool) -> dict[str, str]:
        headers = {
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(self._window_ms),
            "X-HubSpot-RateLimit-Max": str(self._rate_max),
            "X-HubSpot-RateLimit-Remaining": str(max(0, self._rate_max - len(self._window))),
        }
        if private:  # HubSpot sends no daily headers for OAuth-authorized requests
            headers["X-HubSpot-RateLimit-Daily"] = str(self._daily_max)
            headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(
                max(0, self._daily_max - self._daily_used)
            )
        return headers

    def check(self, request: Request) -> tuple[Response | None, dict[str, str]]:
        """Auth, faults and limits: an error answer (or None to go on) and the headers."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        now = self.clock()
        private = token in self._private
        if scheme.lower() != "bearer" or not (private or token in self._access):
            return error(
                401,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
            ), {}
        if not private and self._access[token] <= now:
            ago = int(now - self._access[token])
            message = f"The OAuth token used to make this call expired {ago} second(s) ago."
            return error(401, "EXPIRED_AUTHENTICATION", message), {}
        while self._window and self._window[0] <= now - self._window_ms / 1000:
            self._window.popleft()
        if self._faults:
            status, category, message = self._faults.popleft()
            if status == 429:
                spent = self.rate_headers(private) | {"X-HubSpot-RateLimit-Remaining": "0"}
                return _throttled(), spent
            return error(status, category, message), {}
        if len(self._window) >= self._rate_max:
            return _throttled(), self.rate_headers(private)
        self._window.append(now)
        self._daily_used += 1
        return None, self.rate_headers(private)

    def token(self, form: Mapping[str, str]) -> Response:
        """``POST /oauth/v1/token`` (form-encoded), grant_type=refresh_token."""
        self.token_requests += 1
        if form.get("grant_type") != "refresh_token":
            return _oauth_error("BAD_GRANT_TYPE", "unsupported grant_type")
        if (form.get("client_id"), form.get("client_secret")) != (
            self.client_id,
            self.client_secret,
        ):
            return _oauth_error("BAD_CLIENT_ID", "missing or unknown client id")
        presented = form.get("refresh_token", "")
        if presented not in self._refresh:
            return _oauth_error("BAD_REFRESH_TOKEN", "missing or unknown refresh token")
        self._refresh.discard(presented)  # rotation: a refresh token works once
        rotated = f"sbx-rt-{secrets.token_hex(12)}"
        access = f"sbx-at-{secrets.token_hex(16)}"
        self._refresh.add(rotated)
        self._access[access] = self.clock() + ACCESS_TOKEN_SECONDS
        token = {"token_type": "bearer", "refresh_token": rotated, "access_token": access}
        return JSONResponse(token | {"expires_in": ACCESS_TOKEN_SECONDS})
