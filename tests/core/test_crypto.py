"""Secrets at rest: AES-GCM with associated data, key ids, and rotation."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel
from sqlalchemy import select

from connectors.base import ConnectorKind
from connectors.registry import ConnectorRegistry
from core.connections import create_connection, open_secrets, rotate_secrets
from core.crypto import DecryptionFailed, KeyRing, generate_key
from core.db.models import Connection, Tenant
from core.errors import SettingsError
from core.flows.catalog import FlowCatalog
from core.services import Services, build_services
from core.settings import Settings


def ring(*key_ids: str) -> KeyRing:
    return KeyRing.parse([f"{key_id}:{KEYS[key_id]}" for key_id in key_ids])


KEYS = {name: generate_key() for name in ("k1", "k2", "k3")}


def test_round_trip_with_the_same_associated_data() -> None:
    keys = ring("k1")
    token = keys.encrypt(b'{"token": "s3cret"}', b"con_1")
    assert token.startswith("v1.k1.")
    assert b"s3cret" not in base64.urlsafe_b64decode(token.split(".")[2] + "==")
    assert keys.decrypt(token, b"con_1") == b'{"token": "s3cret"}'
    assert keys.encrypt(b"same", b"a") != keys.encrypt(b"same", b"a")  # fresh nonce each time


def test_wrong_associated_data_or_tampering_fails() -> None:
    keys = ring("k1")
    token = keys.encrypt(b"secret", b"con_1")
    with pytest.raises(DecryptionFailed):
        keys.decrypt(token, b"con_2")  # moved to another row
    body = token.split(".")[2]
    flipped = token[: -len(body)] + body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(DecryptionFailed):
        keys.decrypt(flipped, b"con_1")
    with pytest.raises(DecryptionFailed):
        keys.decrypt("plaintext", b"con_1")


def test_rotation_keeps_old_ciphertexts_readable() -> None:
    old_token = ring("k1").encrypt(b"secret", b"row")
    rotated = ring("k2", "k1")  # new key first, old key still listed
    assert rotated.decrypt(old_token, b"row") == b"secret"
    assert KeyRing.key_id_of(rotated.encrypt(b"secret", b"row")) == "k2"
    with pytest.raises(DecryptionFailed, match="k1"):
        ring("k2").decrypt(old_token, b"row")  # once dropped, the key id is named


@pytest.mark.parametrize(
    "entries",
    [[], ["no-separator"], ["k:" + base64.urlsafe_b64encode(b"short").decode()], ["bad id!:AAAA"]],
)
def test_bad_keys_are_settings_errors(entries: list[str]) -> None:
    with pytest.raises(SettingsError, match="SWITCHYARD_ENCRYPTION_KEYS"):
        KeyRing.parse(entries)


class NoConfig(BaseModel):
    pass


class Secrets(BaseModel):
    api_token: str


class SecretFactory:
    name = "secretive"
    kind = ConnectorKind.CRM
    config_model = NoConfig
    secrets_model = Secrets
    supports_polling = False

    def create(self, config: object, secrets: object, context: object) -> object:
        raise NotImplementedError


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    built = build_services(settings, registry=ConnectorRegistry([]), flows=FlowCatalog())
    yield built
    await built.aclose()


async def test_rotate_secrets_reencrypts_under_the_active_key(services: Services) -> None:
    async with services.sessions.begin() as session:
        session.add(Tenant(id="ten_c", name="crypto"))
        await session.flush()
        for n in range(3):
            await create_connection(
                session,
                tenant_id="ten_c",
                factory=SecretFactory(),  # type: ignore[arg-type]
                name=f"c{n}",
                config={},
                secrets={"api_token": f"token-{n}"},
                keyring=ring("k1"),
            )

    rotated = ring("k2", "k1")
    async with services.sessions.begin() as session:
        assert await rotate_secrets(session, rotated) == 3
    async with services.sessions.begin() as session:
        assert await rotate_secrets(session, rotated) == 0  # idempotent
    async with services.sessions() as session:
        rows = (await session.execute(select(Connection).order_by(Connection.name))).scalars()
        connections = list(rows)
    assert {KeyRing.key_id_of(c.secrets_encrypted) for c in connections} == {"k2"}
    only_new = ring("k2")  # the old key can now be dropped
    assert [open_secrets(only_new, c) for c in connections] == [
        {"api_token": f"token-{n}"} for n in range(3)
    ]


async def test_rotation_covers_subscription_secrets(services: Services) -> None:
    from core.callbacks import open_secret, rotate_subscription_secrets
    from core.db.models import Subscription

    old = ring("k1")
    async with services.sessions.begin() as session:
        session.add(Tenant(id="ten_s", name="subs"))
        await session.flush()
        session.add(
            Subscription(
                id="sub_1",
                tenant_id="ten_s",
                url="https://example.com/hook",
                events=["job.done"],
                secret_encrypted=old.encrypt(b"whsec", b"sub_1"),
            )
        )
    rotated = ring("k2", "k1")
    async with services.sessions.begin() as session:
        assert await rotate_subscription_secrets(session, rotated) == 1
        assert await rotate_subscription_secrets(session, rotated) == 0
    async with services.sessions() as session:
        subscription = await session.get(Subscription, "sub_1")
    assert subscription is not None
    services.keyring = ring("k2")  # the old key can now be dropped
    assert open_secret(services, subscription) == "whsec"
