"""Errors on the Anthropic-compatible routes, in the Anthropic API's own body shape.

SDK clients parse ``{"type":"error","error":{"type","message"},"request_id"}``; a problem
document would reach them as an unreadable error. The Switchyard problem type rides along
in ``error.switchyard_problem`` so the stable identifier is still there.

Budget-like refusals never use 429: the SDKs retry 429 on their own.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from core.errors import SwitchyardError
from core.gateway.upstream import UpstreamError
from core.web.problems import TYPE_PREFIX

# Our status → the Anthropic error type the SDKs map to an exception class.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_body(status: int, error_type: str, message: str, request_id: str, **extra: Any) -> bytes:
    return orjson.dumps(
        {
            "type": "error",
            "error": {"type": error_type, "message": message, **extra},
            "request_id": request_id,
        }
    )


def error_response(exc: BaseException, request_id: str) -> Response:
    headers = {"x-switchyard-trace-id": request_id}
    if isinstance(exc, UpstreamError) and exc.http_status:
        # The upstream's own answer (after our retries): status and body unchanged.
        if exc.retry_after is not None:
            headers["retry-after"] = str(max(1, round(exc.retry_after)))
        body = exc.body or error_body(exc.http_status, exc.error_type, str(exc), request_id)
        return Response(body, exc.http_status, headers, media_type="application/json")
    if isinstance(exc, SwitchyardError):
        status = 502 if isinstance(exc, UpstreamError) else exc.status
        # Anthropic answers 400 where our generic validation says 422.
        status = 400 if status == 422 else status
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int | float):
            headers["retry-after"] = str(max(1, round(retry_after)))
        body = error_body(
            status,
            _ERROR_TYPES.get(status, "api_error"),
            exc.detail,
            request_id,
            switchyard_problem=TYPE_PREFIX + exc.problem_type,
        )
        return Response(body, status, headers, media_type="application/json")
    body = error_body(
        500, "api_error", "internal error; the trace id finds it in the logs", request_id
    )
    return Response(body, 500, headers, media_type="application/json")
