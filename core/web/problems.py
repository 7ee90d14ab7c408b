"""RFC 9457 problem responses, built in one place.

Every error leaves the API as ``application/problem+json``::

    {"type": "/problems/<problem_type>", "title", "status", "detail", "instance",
     "trace_id", ...extensions}

* a :class:`~core.errors.SwitchyardError` answers its own ``problem_type`` and ``status``;
* FastAPI's request validation answers 422 ``invalid-request`` with ``errors: [{"loc",
  "msg"}]`` — input values are never echoed, because a rejected field may be a secret;
* an unknown route answers 404 ``not-found``, a wrong method 405 ``method-not-allowed``;
* anything else answers 500 ``internal-error`` with the trace id to quote
  (:func:`internal_error_response`, used by the request-context middleware, which also
  logs the traceback).

Problem types come only from :mod:`core.errors`; ``GET /problems`` lists them and
``GET /problems/{type}`` documents one, so every ``type`` URI resolves.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from core import errors
from core.errors import (
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    SwitchyardError,
    TransientError,
    Unauthenticated,
)
from core.logging import get_logger

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "/problems/"

log = get_logger(__name__)

# Starlette raises HTTPException for routing failures; these map onto our own types.
_HTTP_STATUS_TYPES: dict[int, type[SwitchyardError]] = {
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
}


class ProblemResponse(JSONResponse):
    media_type = MEDIA_TYPE


class ProblemType(BaseModel):
    type: str
    problem_type: str
    title: str
    status: int
    description: str


def problem_types() -> dict[str, type[SwitchyardError]]:
    """Every problem type declared in Switchyard's core (:mod:`core.errors` and the modules
    that define their own, such as the gateway's), by name (first class wins)."""
    found: dict[str, type[SwitchyardError]] = {}
    pending: list[type[SwitchyardError]] = [SwitchyardError]
    while pending:
        cls = pending.pop(0)
        if cls.__module__ == errors.__name__ or cls.__module__.startswith("core."):
            found.setdefault(cls.problem_type, cls)
        pending.extend(cls.__subclasses__())
    return dict(sorted(found.items()))


def problem_body(
    cls: type[SwitchyardError],
    detail: str,
    *,
    instance: str,
    trace_id: str | None,
    extensions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + cls.problem_type,
        "title": cls.title,
        "status": cls.status,
        "detail": detail,
        "instance": instance,
    }
    if trace_id:
        body["trace_id"] = trace_id
    # The RFC's members win over any extension of the same name.
    for name, value in jsonable_encoder(extensions or {}).items():
        body.setdefault(name, value)
    return body


def problem_response(
    exc: SwitchyardError,
    *,
    instance: str,
    trace_id: str | None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = problem_body(
        type(exc), exc.detail, instance=instance, trace_id=trace_id, extensions=exc.extensions
    )
    all_headers = dict(headers or {})
    if isinstance(exc, Unauthenticated):
        all_headers.setdefault("www-authenticate", 'Bearer realm="switchyard"')
    if isinstance(exc, TransientError) and exc.retry_after is not None:
        all_headers.setdefault("retry-after", str(math.ceil(exc.retry_after)))
    return ProblemResponse(body, status_code=exc.status, headers=all_headers or None)


def internal_error_response(*, instance: str, trace_id: str) -> Response:
    detail = f"an unexpected error occurred; quote trace id {trace_id} when reporting it"
    body = problem_body(SwitchyardError, detail, instance=instance, trace_id=trace_id)
    return ProblemResponse(body, status_code=SwitchyardError.status)


def trace_id_of(request: Request) -> str | None:
    state: dict[str, Any] = request.scope.get("state", {})
    trace_id: str | None = state.get("trace_id")
    return trace_id


async def _on_switchyard_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SwitchyardError)
    if exc.status >= 500:
        log.error("problem", problem=exc.problem_type, status=exc.status, detail=exc.detail)
    else:
        log.info("problem", problem=exc.problem_type, status=exc.status, detail=exc.detail)
    return problem_response(exc, instance=request.url.path, trace_id=trace_id_of(request))


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    # Only where and why: the offending value may be a secret or personal data.
    details = [
        ([str(part) for part in error.get("loc", ())], str(error.get("msg", "")))
        for error in exc.errors()
    ]
    summary = "; ".join(f"{'.'.join(loc)}: {msg}" for loc, msg in details[:10])
    problem = InvalidRequest(
        summary or "the request is invalid",
        errors=[{"loc": loc, "msg": msg} for loc, msg in details],
    )
    return problem_response(problem, instance=request.url.path, trace_id=trace_id_of(request))


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    instance = request.url.path
    trace_id = trace_id_of(request)
    cls = _HTTP_STATUS_TYPES.get(exc.status_code)
    if cls is NotFound:
        detail = f"no route {request.method} {instance}"
    elif cls is MethodNotAllowed:
        allowed = (exc.headers or {}).get("Allow", "")
        detail = f"{request.method} is not allowed on {instance}; allowed: {allowed}"
    else:
        detail = str(exc.detail)
    if cls is not None:
        return problem_response(
            cls(detail), instance=instance, trace_id=trace_id, headers=exc.headers
        )
    # A status none of our types describes: RFC 9457's "about:blank" says "just the status".
    phrase = HTTPStatus(exc.status_code).phrase
    body = {
        "type": "about:blank",
        "title": phrase,
        "status": exc.status_code,
        "detail": detail,
        "instance": instance,
        "trace_id": trace_id,
    }
    return ProblemResponse(body, status_code=exc.status_code, headers=exc.headers)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SwitchyardError, _on_switchyard_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)


class Problem(BaseModel):
    """An RFC 9457 problem, as every error of this API is answered."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    trace_id: str | None = None


def _documented(status: int, description: str) -> dict[str, Any]:
    return {
        "model": Problem,
        "description": description,
        "content": {"application/problem+json": {}},
    }


# OpenAPI documentation of the errors every authenticated /v1 route can answer.
API_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: _documented(401, "Missing or unknown API key (`/problems/unauthenticated`)"),
    403: _documented(403, "The key's role does not allow this (`/problems/forbidden`)"),
    404: _documented(404, "Not found, or owned by another tenant (`/problems/not-found`)"),
    422: _documented(422, "Invalid request (`/problems/invalid-request`)"),
}

router = APIRouter(tags=["problems"])


def _describe(cls: type[SwitchyardError]) -> ProblemType:
    return ProblemType(
        type=TYPE_PREFIX + cls.problem_type,
        problem_type=cls.problem_type,
        title=cls.title,
        status=cls.status,
        # Only the class's own docstring: an inherited one describes the base, not this type.
        description=inspect.cleandoc(cls.__dict__.get("__doc__") or cls.title),
    )


@router.get("/problems", summary="Every problem type this API answers")
async def list_problem_types() -> list[ProblemType]:
    return [_describe(cls) for cls in problem_types().values()]


@router.get("/problems/{problem_type}", summary="One problem type")
async def get_problem_type(problem_type: str) -> ProblemType:
    cls = problem_types().get(problem_type)
    if cls is None:
        raise NotFound(f"no problem type {problem_type!r}; GET /problems lists them")
    return _describe(cls)
