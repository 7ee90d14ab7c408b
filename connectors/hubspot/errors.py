"""HubSpot's errors, translated once at the SDK boundary.

Every SDK call goes through :func:`translate`; nothing above it sees an SDK exception.

The tree (from :mod:`core.errors`)::

    ConnectorTransientError        429 (RATE_LIMITS; retry_after from Retry-After or the
    │                              10-second window), 5xx, 408, timeouts, refused connections
    ConnectorTerminalError         other 4xx: VALIDATION_ERROR (message names the property),
    │                              403 missing scopes, 404, 409, 414
    └── HubSpotUnauthorized        401: the token expired or was revoked; the client
                                   refreshes an OAuth token once and replays the request

Error bodies are ``{"status": "error", "message", "correlationId", "category",
"errors": [{"message", "in"}], ...}``; all fields are optional (HubSpot's error-handling
guide), so each is read defensively.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from core.errors import ConnectorTerminalError, ConnectorTransientError
from core.http_errors import retry_after_seconds

TRANSIENT_STATUS = {408, 423, 429, 500, 502, 503, 504}
DAILY_RETRY_SECONDS = 3600.0  # the daily limit resets at midnight in the portal's zone


class HubSpotUnauthorized(ConnectorTerminalError):
    problem_type = "hubspot-unauthorized"
    title = "HubSpot refused the access token"


def _body(raw: Any) -> dict[str, Any]:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name.lower():
            return value
    return None


def retry_after(headers: Mapping[str, str] | None, body: Mapping[str, Any]) -> float:
    """Seconds to wait after a 429: Retry-After if sent, else the limit's own window."""
    wait = retry_after_seconds(_header(headers, "Retry-After"))
    if wait is not None:
        return wait
    if body.get("policyName") == "DAILY":
        return DAILY_RETRY_SECONDS
    interval = _header(headers, "X-HubSpot-RateLimit-Interval-Milliseconds") or ""
    return int(interval) / 1000 if interval.isdigit() else 10.0


def from_response(
    what: str, status: int, raw_body: Any, headers: Mapping[str, str] | None
) -> ConnectorTransientError | ConnectorTerminalError:
    body = _body(raw_body)
    message = str(body.get("message") or f"HTTP {status}")[:500]
    details = [
        str(item.get("message"))
        for item in body.get("errors") or []
        if isinstance(item, dict) and item.get("message")
    ]
    extensions = {
        "status_code": status,
        "category": body.get("category"),
        "correlation_id": body.get("correlationId"),
    }
    text = f"{what}: HubSpot answered {status}"
    text += f" {body['category']}" if body.get("category") else ""
    text += f": {message}" + (f" ({'; '.join(details[:5])})" if details else "")
    if status == 429:
        return ConnectorTransientError(text, retry_after=retry_after(headers, body), **extensions)
    if status in TRANSIENT_STATUS or status >= 500:
        return ConnectorTransientError(text, **extensions)
    if status == 401:
        return HubSpotUnauthorized(text, **extensions)
    return ConnectorTerminalError(text, **extensions)


def _api_exception_types() -> tuple[type[Exception], ...]:
    from hubspot.crm.associations.v4.exceptions import ApiException as AssociationsError
    from hubspot.crm.objects.exceptions import ApiException as ObjectsError
    from hubspot.crm.properties.exceptions import ApiException as PropertiesError
    from hubspot.oauth.exceptions import ApiException as OAuthError

    return (ObjectsError, PropertiesError, AssociationsError, OAuthError)


@contextmanager
def translate(what: str) -> Iterator[None]:
    """Turn the SDK's and urllib3's exceptions into Switchyard's, ``from`` the original."""
    import urllib3

    api_errors = _api_exception_types()
    try:
        yield
    except api_errors as exc:
        status = int(getattr(exc, "status", 0) or 0)
        if status == 0:  # raised before any answer (TLS, request preparation)
            raise ConnectorTransientError(f"{what}: {getattr(exc, 'reason', exc)}") from exc
        headers = getattr(exc, "headers", None)
        raise from_response(what, status, getattr(exc, "body", None), headers) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise ConnectorTransientError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except ValueError as exc:  # the SDK refused an answer that misses required fields
        raise ConnectorTerminalError(f"{what}: unexpected answer from HubSpot: {exc}") from exc
