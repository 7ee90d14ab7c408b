"""The Anthropic API's error responses, as the SANDBOX answers them.

These are wire errors, not Switchyard domain errors: each one becomes the API's JSON error
body ``{"type":"error","error":{"type","message"},"request_id"}`` with its HTTP status, in one
place (the route wrapper in :mod:`.app`). Sandbox code raises them; nothing else catches
them.

The tree::

    ApiError                 status + error.type + message (+ extra headers)
    ├── InvalidRequest       400 invalid_request_error
    ├── AuthenticationFailed 401 authentication_error
    ├── BillingFailed        402 billing_error
    ├── PermissionDenied     403 permission_error
    ├── NotFound             404 not_found_error
    ├── Conflict             409 conflict_error
    ├── RequestTooLarge      413 request_too_large
    ├── RateLimited          429 rate_limit_error (carries ``retry-after``)
    ├── ApiInternal          500 api_error
    ├── GatewayTimeout       504 timeout_error
    └── Overloaded           529 overloaded_error
"""

from __future__ import annotations

from typing import ClassVar

import orjson


class ApiError(Exception):
    """An error answer of the (simulated) Anthropic API."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self, request_id: str) -> bytes:
        return error_body(self.error_type, self.message, request_id)


class InvalidRequest(ApiError):
    status = 400
    error_type = "invalid_request_error"


class AuthenticationFailed(ApiError):
    status = 401
    error_type = "authentication_error"


class BillingFailed(ApiError):
    status = 402
    error_type = "billing_error"


class PermissionDenied(ApiError):
    status = 403
    error_type = "permission_error"


class NotFound(ApiError):
    status = 404
    error_type = "not_found_error"


class Conflict(ApiError):
    status = 409
    error_type = "conflict_error"


class RequestTooLarge(ApiError):
    status = 413
    error_type = "request_too_large"


class RateLimited(ApiError):
    status = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"retry-after": str(retry_after)})
        self.retry_after = retry_after


class ApiInternal(ApiError):
    status = 500
    error_type = "api_error"


class GatewayTimeout(ApiError):
    status = 504
    error_type = "timeout_error"


class Overloaded(ApiError):
    status = 529
    error_type = "overloaded_error"


BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (
        InvalidRequest,
        AuthenticationFailed,
        BillingFailed,
        PermissionDenied,
        NotFound,
        Conflict,
        RequestTooLarge,
        ApiInternal,
        GatewayTimeout,
        Overloaded,
    )
}


def injected(status: int, *, retry_after: int = 1) -> ApiError:
    """The error a fault injection answers with (any status of the API's error table)."""
    if status == RateLimited.status:
        return RateLimited(
            "Number of requests has exceeded your rate limit (injected).", retry_after=retry_after
        )
    try:
        cls = BY_STATUS[status]
    except KeyError:
        raise ValueError(f"{status} is not a status the API answers errors with") from None
    return cls(f"Injected {cls.error_type} (sandbox fault).")


def error_body(error_type: str, message: str, request_id: str | None = None) -> bytes:
    """The API's error JSON; without ``request_id`` it is the SSE ``error`` event's shape."""
    body: dict[str, object] = {"type": "error", "error": {"type": error_type, "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return orjson.dumps(body)
