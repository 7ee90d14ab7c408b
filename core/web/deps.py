"""FastAPI dependencies shared by every router: services, one transaction, the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

import structlog
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from core.auth import Principal, authenticate
from core.db.models import Role
from core.errors import Forbidden, Unauthenticated
from core.queue import new_trace_id
from core.services import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_session(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    """One transaction per request, committed when the handler returns (before the response
    is sent, thanks to ``scope="function"``) and rolled back on error."""
    async with services.sessions.begin() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def get_trace_id(request: Request) -> str:
    """The request's trace id (set by the request-context middleware from ``traceparent``)."""
    state = request.scope.setdefault("state", {})
    trace_id: str | None = state.get("trace_id")
    if trace_id is None:  # the app was mounted without its middleware
        trace_id = state["trace_id"] = new_trace_id()
    return trace_id


TraceIdDep = Annotated[str, Depends(get_trace_id)]


def wake_worker(request: Request) -> None:
    """Nudge the in-process worker, if the CLI attached one, so new jobs start at once.

    Call it after the jobs' transaction committed (e.g. as a background task of the
    response); woken before, the worker would find nothing and sleep a poll interval.
    """
    wake: Callable[[], None] | None = getattr(request.app.state, "wake_worker", None)
    if wake is not None:
        wake()


# Declared as security schemes so /docs offers both ways of sending the key.
_bearer = HTTPBearer(
    auto_error=False, scheme_name="bearer", description="`Authorization: Bearer KEY`"
)
_api_key_header = APIKeyHeader(
    name="x-api-key", scheme_name="x-api-key", auto_error=False, description="`x-api-key: KEY`"
)


def _presented_key(bearer: HTTPAuthorizationCredentials | None, api_key: str | None) -> str:
    if bearer is not None and bearer.credentials.strip():
        return bearer.credentials.strip()
    if api_key and api_key.strip():
        return api_key.strip()
    raise Unauthenticated("send the API key as `Authorization: Bearer KEY` or `x-api-key: KEY`")


def _holding(principal: Principal, allowed: set[Role]) -> Principal:
    structlog.contextvars.bind_contextvars(tenant=principal.tenant_id)
    if principal.role not in allowed:
        needed = " or ".join(sorted(role.value for role in allowed))
        raise Forbidden(f"this needs the {needed} role; the key has {principal.role.value}")
    return principal


def require(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """Dependency: the authenticated caller, who must hold one of ``roles``."""
    allowed = set(roles)

    async def dependency(
        session: SessionDep,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        api_key: Annotated[str | None, Depends(_api_key_header)],
    ) -> Principal:
        principal = await authenticate(session, _presented_key(bearer, api_key))
        return _holding(principal, allowed)

    return dependency


def require_without_transaction(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """Like :func:`require`, for routes that call Claude: the key is checked through the key
    cache, so no request transaction is held open (on SQLite it would hold the write lock,
    and block every writer, for as long as the call takes)."""
    allowed = set(roles)

    async def dependency(
        services: ServicesDep,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        api_key: Annotated[str | None, Depends(_api_key_header)],
    ) -> Principal:
        principal = await services.keys.authenticate(_presented_key(bearer, api_key))
        return _holding(principal, allowed)

    return dependency


def require_outside_transaction(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """Like :func:`require`, for routes that talk to a platform and write in transactions of
    their own (review decisions): the key is looked up now, never from the cache (a decision
    must not outlive a revocation), in a transaction that ends before the handler runs."""
    allowed = set(roles)

    async def dependency(
        services: ServicesDep,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        api_key: Annotated[str | None, Depends(_api_key_header)],
    ) -> Principal:
        presented = _presented_key(bearer, api_key)
        async with services.sessions() as session:
            principal = await authenticate(session, presented)
        return _holding(principal, allowed)

    return dependency


ANY_ROLE = (Role.ADMIN, Role.REVIEWER, Role.SERVICE)
