"""Tenants and API keys.

A key reads ``sy_<prefix>_<secret>``. It is shown once; the database keeps the prefix (to
find the row) and a SHA-256 of the whole key. Keys are 256-bit random values, so a fast
hash is enough (no password stretching needed), and the comparison is constant-time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db.models import ApiKey, Role, Tenant, User
from core.db.types import new_id, utcnow
from core.errors import Conflict, InvalidRequest, NotFound, Unauthenticated

KEY_PREFIX = "sy"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant's API key and its role."""

    tenant_id: str
    key_id: str
    role: Role

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_tenant(session: AsyncSession, name: str) -> Tenant:
    if await session.scalar(select(Tenant.id).where(Tenant.name == name)):
        raise Conflict(f"a tenant named {name!r} already exists")
    tenant = Tenant(id=new_id("ten"), name=name)
    session.add(tenant)
    await session.flush()
    return tenant


async def tenant_by_name(session: AsyncSession, name: str) -> Tenant:
    tenant = await session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise NotFound(f"no tenant named {name!r}; create it with `switchyard tenants create`")
    return tenant


async def create_api_key(
    session: AsyncSession, tenant_id: str, role: Role, name: str = ""
) -> tuple[ApiKey, str]:
    """Returns the stored row and the plaintext key, which is never retrievable again."""
    prefix = secrets.token_hex(6)
    plaintext = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        id=new_id("key"),
        tenant_id=tenant_id,
        role=role.value,
        name=name,
        prefix=prefix,
        key_hash=_hash(plaintext),
    )
    session.add(key)
    await session.flush()
    return key, plaintext


PLATFORM_ID = re.compile(r"^[a-z][a-z0-9_]*:\S.*$")


async def assign_person(
    session: AsyncSession, key: ApiKey, email: str, platform_ids: Sequence[str] = ()
) -> User:
    """The key belongs to the tenant's person with ``email`` (created on first mention),
    who is ``platform_ids`` (``<connector>:<user id>``) in the connected platforms: review
    four eyes knows their changes by either."""
    email = email.strip()
    if "@" not in email:
        raise InvalidRequest(f"{email!r} is not an email address")
    wrong = [p for p in platform_ids if not PLATFORM_ID.match(p)]
    if wrong:
        raise InvalidRequest(
            f"platform ids read <connector>:<user id>, e.g. sap:JSMITH; not {', '.join(wrong)}"
        )
    user = await session.scalar(
        select(User).where(User.tenant_id == key.tenant_id, User.email == email)
    )
    if user is None:
        user = User(id=new_id("usr"), tenant_id=key.tenant_id, email=email, platform_ids=[])
        session.add(user)
    user.platform_ids = sorted({*(user.platform_ids or ()), *platform_ids})
    await session.flush()
    key.user_id = user.id
    await session.flush()
    return user


async def authenticate(session: AsyncSession, presented: str) -> Principal:
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        raise Unauthenticated("malformed API key")
    key = await session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
    # Hash even when no row matched so a miss costs the same as a wrong secret.
    digest = _hash(presented)
    if key is None or not hmac.compare_digest(digest, key.key_hash) or key.revoked_at:
        raise Unauthenticated("unknown or revoked API key")
    return Principal(tenant_id=key.tenant_id, key_id=key.id, role=Role(key.role))


async def revoke_api_key(session: AsyncSession, key_id: str, tenant_id: str) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None or key.tenant_id != tenant_id:
        raise NotFound(f"no API key {key_id}")
    key.revoked_at = utcnow()
    await session.flush()
    return key


class KeyCache:
    """Verified API keys remembered for ``ttl`` seconds, so hot paths (``/v1/messages``)
    skip the database lookup. A revoked key stops working within ``ttl``.

    Keyed by the key's SHA-256, never the plaintext; failures are not cached. Concurrent
    requests with the same key share one lookup (no stampede when an entry expires), and
    the lookup reads through ``sessions`` that should not take a write lock.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], ttl: float) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._known: dict[str, tuple[Principal, float]] = {}
        self._lookups: dict[str, asyncio.Future[Principal]] = {}

    async def authenticate(self, presented: str) -> Principal:
        digest = _hash(presented)
        hit = self._known.get(digest)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        pending = self._lookups.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        lookup = asyncio.ensure_future(self._lookup(presented, digest))
        self._lookups[digest] = lookup
        try:
            return await asyncio.shield(lookup)
        finally:
            if lookup.done():
                self._lookups.pop(digest, None)
            else:
                lookup.add_done_callback(lambda _: self._lookups.pop(digest, None))

    async def _lookup(self, presented: str, digest: str) -> Principal:
        async with self._sessions() as session:
            principal = await authenticate(session, presented)
        if self._ttl > 0:
            now = time.monotonic()
            if len(self._known) > 10_000:
                self._known = {k: v for k, v in self._known.items() if v[1] > now}
            self._known[digest] = (principal, now + self._ttl)
        return principal
