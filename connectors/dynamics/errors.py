"""Dataverse's errors, translated once at the HTTP boundary.

Every Web API call goes through :func:`core.http_errors.translate_httpx` (httpx's
exceptions) and :func:`from_response` (an error answer); nothing above the client sees httpx.

The tree (from :mod:`core.errors`)::

    ConnectorTransientError          429 service protection (retry_after from Retry-After),
    │                                5xx, 408, timeouts, refused connections, token endpoint
    │                                outages
    ConnectorTerminalError           other 4xx, with the platform's code and message
    ├── DynamicsUnauthorized         401: the token expired or was revoked; the client gets
    │                                a new one once and replays the request
    ├── DynamicsNotFound             404: no such row (or table)
    ├── DynamicsPreconditionFailed   412: If-Match version mismatch, or If-None-Match: *
    │                                on an existing row; the connector turns it into a
    │                                CONFLICT (or "already created") and never overwrites
    └── DeltaTokenExpired            a change-tracking token too old to use: full resync

Error bodies are ``{"error": {"code": "<hex or empty>", "message": "<text>"}}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from core.errors import ConnectorTerminalError, ConnectorTransientError
from core.http_errors import retry_after_seconds

TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
DEFAULT_RETRY_AFTER = 5.0
# RetrieveEntityChanges' fault for a token older than ExpireChangeTrackingInDays
# (ExpiredVersionStamp). The Web API's text for it is not documented: see is_expired_token.
EXPIRED_VERSION_STAMP = "0x80044352"


class DynamicsUnauthorized(ConnectorTerminalError):
    problem_type = "dynamics-unauthorized"
    title = "Dataverse refused the access token"


class DynamicsNotFound(ConnectorTerminalError):
    problem_type = "dynamics-not-found"
    title = "Dataverse has no such row"


class DynamicsPreconditionFailed(ConnectorTerminalError):
    problem_type = "dynamics-precondition-failed"
    title = "The row's version or existence did not match the request's condition"


class DeltaTokenExpired(ConnectorTerminalError):
    problem_type = "dynamics-delta-token-expired"
    title = "The change-tracking token expired; a full resync is needed"


def error_body(raw: bytes | str) -> tuple[str, str]:
    """(code, message) of an error answer, read defensively."""
    try:
        parsed: Any = json.loads(raw) if raw else {}
    except ValueError:
        return "", ""
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return "", ""
    return str(error.get("code") or ""), str(error.get("message") or "")[:1000]


def retry_after(headers: Mapping[str, str]) -> float:
    wait = retry_after_seconds(headers.get("retry-after", headers.get("Retry-After")))
    return DEFAULT_RETRY_AFTER if wait is None else wait


def is_expired_token(status: int, code: str, message: str) -> bool:
    """Conservative: the documented ExpiredVersionStamp code, or a 400/410 whose message
    says the token or version stamp expired. Anything else stays an error."""
    if code.lower() == EXPIRED_VERSION_STAMP:
        return True
    text = message.lower()
    return status in (400, 410) and "expired" in text and ("token" in text or "stamp" in text)


def from_response(
    what: str, status: int, raw_body: bytes | str, headers: Mapping[str, str]
) -> ConnectorTransientError | ConnectorTerminalError:
    code, message = error_body(raw_body)
    text = f"{what}: Dataverse answered {status}"
    text += f" {code}" if code else ""
    text += f": {message}" if message else ""
    extensions = {"status_code": status, "code": code or None}
    if status == 429:
        return ConnectorTransientError(text, retry_after=retry_after(headers), **extensions)
    if status in TRANSIENT_STATUS or status >= 500:
        wait = retry_after(headers) if "retry-after" in {k.lower() for k in headers} else None
        return ConnectorTransientError(text, retry_after=wait, **extensions)
    if status == 401:
        return DynamicsUnauthorized(text, **extensions)
    if status == 404:
        return DynamicsNotFound(text, **extensions)
    if status == 412:
        return DynamicsPreconditionFailed(text, **extensions)
    if is_expired_token(status, code, message):
        return DeltaTokenExpired(text, **extensions)
    return ConnectorTerminalError(text, **extensions)
