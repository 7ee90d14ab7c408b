"""FastAPI dependencies shared by every router: services, one transaction, the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from core.auth import Principal, authenticate
from core.db.models import Role
from core.errors import Forbidden, Unauthenticated
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


def _presented_key(request: Request) -> str:
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    api_key = request.headers.get("x-api-key", "").strip()
    if api_key:
        return api_key
    raise Unauthenticated("send the API key as `Authorization: Bearer KEY` or `x-api-key: KEY`")


def require(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """Dependency: the authenticated caller, who must hold one of ``roles``."""
    allowed = set(roles)

    async def dependency(request: Request, session: SessionDep) -> Principal:
        principal = await authenticate(session, _presented_key(request))
        if principal.role not in allowed:
            needed = " or ".join(sorted(role.value for role in allowed))
            raise Forbidden(f"this needs the {needed} role; the key has {principal.role.value}")
        return principal

    return dependency


ANY_ROLE = (Role.ADMIN, Role.REVIEWER, Role.SERVICE)
