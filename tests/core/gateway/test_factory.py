"""The gateway is assembled from settings: backends, limits and routing checked at start."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from core.db.engine import make_engine
from core.errors import SettingsError
from core.gateway.admission_memory import InProcessAdmission
from core.gateway.admission_redis import RedisAdmission
from core.gateway.catalog import Catalog, RateLimits
from core.gateway.factory import admission_limits, build_gateway
from core.gateway.response_cache import MemoryResponseCache, RedisResponseCache
from core.metrics import Metrics
from core.settings import GatewaySettings, Settings, load_settings


def settings_with(tmp_path: Path, **gateway: object) -> Settings:
    return load_settings(
        database_url=f"sqlite:///{tmp_path / 'x.db'}",
        gateway=GatewaySettings(**gateway),  # type: ignore[arg-type]
    )


async def test_memory_backends_by_default(tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    engine = make_engine(settings.database_url)
    gateway = build_gateway(settings, async_sessionmaker(engine), Metrics())
    assert isinstance(gateway.admission, InProcessAdmission)
    assert isinstance(gateway.response_cache, MemoryResponseCache)
    await gateway.aclose()
    await engine.dispose()


async def test_redis_backends_when_redis_is_configured(tmp_path: Path) -> None:
    settings = settings_with(tmp_path).model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    engine = make_engine(settings.database_url)
    gateway = build_gateway(settings, async_sessionmaker(engine), Metrics())
    assert isinstance(gateway.admission, RedisAdmission)
    assert isinstance(gateway.response_cache, RedisResponseCache)
    await gateway.aclose()
    await engine.dispose()


def test_redis_admission_without_a_redis_url_names_the_fix(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, admission="redis")
    with pytest.raises(SettingsError, match="SWITCHYARD_REDIS_URL"):
        build_gateway(settings, async_sessionmaker(make_engine(settings.database_url)), Metrics())


def test_limits_override_the_catalogue_per_field(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, limits={"claude-haiku-5-5": {"rpm": 50}})
    limits = admission_limits(settings, Catalog.load())
    haiku = Catalog.load().get("claude-haiku-5-5").limits
    assert limits["claude-haiku-5-5"].rpm == 50
    assert limits["claude-haiku-5-5"].input_tpm == haiku.input_tpm


def test_bad_limits_and_unknown_tier_models_fail_at_start(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="SWITCHYARD_GATEWAY__LIMITS"):
        admission_limits(
            settings_with(tmp_path, limits={"claude-haiku-5-5": {"rpm": -1}}), Catalog.load()
        )
    settings = settings_with(tmp_path, tier_models={"small": "claude-imaginary-1"})
    with pytest.raises(SettingsError, match="claude-imaginary-1"):
        build_gateway(settings, async_sessionmaker(make_engine(settings.database_url)), Metrics())


def test_admission_aims_a_little_below_each_limit() -> None:
    from core.gateway.factory import with_headroom

    kept = with_headroom({"m": RateLimits(rpm=100, input_tpm=1_000, output_tpm=1)}, 0.05)
    assert kept["m"] == RateLimits(rpm=95, input_tpm=950, output_tpm=1)
