"""Prompt rollouts: hash bucketing, stickiness, rollback, the OpenFeature seam, immutability."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata
from sqlalchemy import select, update

from core.auth import create_tenant
from core.db.models import AuditEntry, PromptRollout, RolloutSticky
from core.errors import SettingsError
from core.flows.prompts import Prompt
from core.gateway import rollout_store
from core.gateway.rollout_store import RolloutInvalid, RolloutNotFound, basis_points
from core.gateway.rollouts import (
    CANDIDATE,
    PINNED,
    SCALE,
    PromptVersionEdited,
    PromptVersions,
    RolloutState,
    bucket,
    load_provider_factory,
)
from core.services import Services

PROMPT = "ticket_test"
RECORDS = [f"conn/ticket/T-{n}" for n in range(2_000)]
FILLABLE = {"subject", "body", "customer"}
# 5% of 2,000 is 100; the binomial standard deviation is ~9.7, so 70..130 is three of them.
# The hash is salted with the rollout id and keyed by tenant and record; with those fixed
# the count is the same on every run, so the bound documents the claim, not luck.
TOLERANCE = 30
SALT = "rol_fixed_for_the_test"


def test_buckets_spread_evenly_and_do_not_move() -> None:
    positions = [bucket("rol_1", key) for key in RECORDS]
    assert positions == [bucket("rol_1", key) for key in RECORDS]
    assert all(0 <= p < SCALE for p in positions)
    tenths = [sum(1 for p in positions if p * 10 // SCALE == d) for d in range(10)]
    assert all(150 <= count <= 250 for count in tenths), tenths
    assert positions != [bucket("rol_2", key) for key in RECORDS]  # a new rollout reshuffles


def test_five_percent_of_2000_records_is_about_100() -> None:
    state = RolloutState(SALT, PROMPT, 2, basis_points(5), RolloutSticky.RECORD)
    inside = sum(state.admits("ten_fixed", key) for key in RECORDS)
    print(f"\n5% rollout over {len(RECORDS)} records: {inside} on the candidate")
    assert abs(inside - 100) <= TOLERANCE


def test_raising_the_share_only_adds_records() -> None:
    state = RolloutState("rol_x", PROMPT, 2, basis_points(1), RolloutSticky.RECORD)
    one = {key for key in RECORDS if state.admits("t1", key)}
    five = {key for key in RECORDS if replace(state, share_basis_points=500).admits("t1", key)}
    assert one < five
    assert not any(replace(state, share_basis_points=0).admits("t1", key) for key in RECORDS)
    assert all(replace(state, share_basis_points=SCALE).admits("t1", key) for key in RECORDS)


def test_tenant_stickiness_is_all_or_nothing() -> None:
    state = RolloutState("rol_y", PROMPT, 2, 5_000, RolloutSticky.TENANT)
    assert len({state.admits("tenant-7", key) for key in RECORDS}) == 1


@pytest.mark.parametrize(
    ("share", "points"), [("0", 0), ("0.01", 1), ("5", 500), ("12.5", 1250), ("100", SCALE)]
)
def test_shares_are_whole_basis_points(share: str, points: int) -> None:
    from decimal import Decimal

    assert basis_points(Decimal(share)) == points


def test_finer_or_out_of_range_shares_are_refused() -> None:
    from decimal import Decimal

    for share in ("0.001", "-1", "100.5"):
        with pytest.raises(RolloutInvalid):
            basis_points(Decimal(share))


@pytest.fixture
async def tenant(services: Services) -> str:
    async with services.sessions.begin() as session:
        return (await create_tenant(session, "rollouts")).id


def _pinned(services: Services) -> Prompt:
    prompt = services.flows.prompts.get(f"{PROMPT}@1")
    assert prompt is not None
    return prompt


async def _put(services: Services, tenant: str, version: int, share: int, **kw: Any) -> None:
    async with services.sessions.begin() as session:
        await rollout_store.put_rollout(
            session,
            services.flows,
            tenant_id=tenant,
            prompt=PROMPT,
            candidate_version=version,
            share_basis_points=share,
            sticky=kw.get("sticky"),
            actor="test",
        )


async def _fix_salt(services: Services, tenant: str) -> None:
    async with services.sessions.begin() as session:
        await session.execute(
            update(PromptRollout).where(PromptRollout.tenant_id == tenant).values(id=SALT)
        )


async def _split(services: Services, tenant: str, keys: list[str]) -> dict[str, str]:
    """The version each record's next call gets, through the real decision path."""
    versions = services.prompt_versions
    pinned = _pinned(services)
    return {key: (await versions.choose(tenant, pinned, key, FILLABLE)).prompt.ref for key in keys}


async def test_five_percent_routes_about_five_percent_and_sticks(
    services: Services, tenant: str
) -> None:
    pinned = _pinned(services)
    before = await services.prompt_versions.choose(tenant, pinned, RECORDS[0], FILLABLE)
    assert (before.prompt.ref, before.arm) == (f"{PROMPT}@1", PINNED)  # no rollout yet

    await _put(services, tenant, 2, 500)
    await _fix_salt(services, tenant)
    first = await _split(services, tenant, RECORDS)
    candidates = [key for key, ref in first.items() if ref == f"{PROMPT}@2"]
    state = RolloutState(SALT, PROMPT, 2, 500, RolloutSticky.RECORD)
    assert candidates == [key for key in RECORDS if state.admits(tenant, key)]
    assert abs(len(candidates) - 100) <= 4 * TOLERANCE / 3  # 4 sd: the tenant id is random
    sample = candidates + RECORDS[:200]
    assert await _split(services, tenant, sample) == {key: first[key] for key in sample}

    await _put(services, tenant, 2, 5_000)  # widening keeps everyone who was in
    assert set((await _split(services, tenant, candidates)).values()) == {f"{PROMPT}@2"}

    async with services.sessions.begin() as session:
        await rollout_store.rollback(session, tenant_id=tenant, prompt=PROMPT, actor="test")
    assert set((await _split(services, tenant, candidates)).values()) == {f"{PROMPT}@1"}


async def test_a_choice_says_why(services: Services, tenant: str) -> None:
    await _put(services, tenant, 2, SCALE)
    choice = await services.prompt_versions.choose(tenant, _pinned(services), "r1", FILLABLE)
    assert choice.arm == CANDIDATE
    step = choice.step()
    assert step["prompt"] == f"{PROMPT}@2"
    assert step["reason"] == Reason.SPLIT
    assert step["rollout"].startswith("rol_")
    assert 0 <= step["bucket"] < SCALE


async def test_the_rollout_history_and_audit_record_every_change(
    services: Services, tenant: str
) -> None:
    await _put(services, tenant, 2, 100)
    await _put(services, tenant, 2, 500, sticky=RolloutSticky.TENANT)
    async with services.sessions.begin() as session:
        await rollout_store.rollback(session, tenant_id=tenant, prompt=PROMPT, actor="ops")
        await rollout_store.end_rollout(session, tenant_id=tenant, prompt=PROMPT, actor="ops")
    async with services.sessions() as session:
        changes = await rollout_store.history(session, tenant, PROMPT)
        audited = (
            await session.scalars(select(AuditEntry.action).where(AuditEntry.tenant_id == tenant))
        ).all()
    assert [(c.action, c.share_before, c.share_after) for c in changes] == [
        ("start", None, 100),
        ("change", 100, 500),
        ("rollback", 500, 0),
        ("end", 0, None),
    ]
    assert list(audited) == [
        "prompt_rollout.start",
        "prompt_rollout.change",
        "prompt_rollout.rollback",
        "prompt_rollout.end",
    ]
    async with services.sessions.begin() as session:
        with pytest.raises(RolloutNotFound):
            await rollout_store.rollback(session, tenant_id=tenant, prompt=PROMPT, actor="x")


async def test_a_new_rollout_draws_a_new_split(services: Services, tenant: str) -> None:
    await _put(services, tenant, 2, 500)
    async with services.sessions.begin() as session:
        first = (await rollout_store.rollouts(session, tenant))[PROMPT].id
        await rollout_store.end_rollout(session, tenant_id=tenant, prompt=PROMPT, actor="t")
    await _put(services, tenant, 2, 500)
    async with services.sessions() as session:
        assert (await rollout_store.rollouts(session, tenant))[PROMPT].id != first  # new salt


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (9, "not installed"),
        (1, "already pins version 1"),
        (3, "cannot fill: webhook/ticket_deletions lacks priority; webhook/ticket_updates"),
    ],
)
async def test_a_candidate_must_be_installed_new_and_fillable(
    services: Services, tenant: str, version: int, message: str
) -> None:
    with pytest.raises(RolloutInvalid, match=message):
        await _put(services, tenant, version, 500)


async def test_a_used_version_cannot_change(services: Services, tenant: str) -> None:
    pinned = _pinned(services)
    await services.prompt_versions.choose(tenant, pinned, "r1", FILLABLE)
    assert (await services.prompt_versions.recorded_digests())[pinned.ref] == pinned.digest

    edited = replace(pinned, system=pinned.system + " Be brief.")
    fresh = PromptVersions(
        services.flows.prompts,
        sessions=services.sessions,
        read_sessions=services.sessions,
        provider=_Fixed(None),
    )  # another process, after a restart with the edited file
    with pytest.raises(PromptVersionEdited, match=r"edited after calls used it.*/4\.yaml"):
        await fresh.choose(tenant, edited, "r1", FILLABLE)
    await fresh.choose(tenant, pinned, "r1", FILLABLE)  # the original text is fine


class _Fixed(AbstractProvider):
    """A team's own flag service, answering one version (or failing) for every call."""

    def __init__(self, value: str | None, *, fail: bool = False) -> None:
        super().__init__()
        self.value, self.fail, self.contexts = value, fail, []  # type: ignore[var-annotated]

    def get_metadata(self) -> Metadata:
        return Metadata(name="fixed")

    async def resolve_string_details_async(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        self.contexts.append((flag_key, evaluation_context))
        if self.fail:
            raise RuntimeError("flag service down")
        return FlagResolutionDetails(self.value or default_value, reason=Reason.TARGETING_MATCH)

    def resolve_string_details(self, *_: Any) -> Any:
        raise NotImplementedError

    def resolve_boolean_details(self, *_: Any) -> Any:
        raise NotImplementedError

    def resolve_integer_details(self, *_: Any) -> Any:
        raise NotImplementedError

    def resolve_float_details(self, *_: Any) -> Any:
        raise NotImplementedError

    def resolve_object_details(self, *_: Any) -> Any:
        raise NotImplementedError


@pytest.fixture
async def custom(services: Services) -> Any:
    def build(provider: AbstractProvider) -> PromptVersions:
        return PromptVersions(
            services.flows.prompts,
            sessions=services.sessions,
            read_sessions=services.sessions,
            provider=provider,
        )

    return build


async def test_a_teams_flag_service_decides_through_openfeature(
    services: Services, tenant: str, custom: Any
) -> None:
    provider = _Fixed("2")
    choice = await custom(provider).choose(tenant, _pinned(services), "conn/ticket/9", FILLABLE)
    assert (choice.prompt.ref, choice.arm, choice.reason) == (
        f"{PROMPT}@2",
        CANDIDATE,
        Reason.TARGETING_MATCH,
    )
    flag, context = provider.contexts[0]
    assert flag == f"prompt-version.{PROMPT}"
    assert context.targeting_key == "conn/ticket/9"
    assert context.attributes == {"tenant_id": tenant, "pinned_version": 1}


@pytest.mark.parametrize(
    ("provider", "reason"),
    [
        (_Fixed("7"), "not installed"),
        (_Fixed("3"), "needs inputs the flow lacks (priority)"),
        (_Fixed("two"), "not installed"),
        (_Fixed(None, fail=True), "ERROR"),
    ],
)
async def test_a_bad_flag_answer_falls_back_to_the_pinned_version(
    services: Services, tenant: str, custom: Any, provider: _Fixed, reason: str
) -> None:
    choice = await custom(provider).choose(tenant, _pinned(services), "r", FILLABLE)
    assert (choice.prompt.ref, choice.arm) == (f"{PROMPT}@1", PINNED)
    assert reason in choice.reason


def test_the_provider_setting_names_a_factory() -> None:
    factory = load_provider_factory("tests.core.gateway.test_rollouts:_Fixed")
    assert factory is _Fixed
    for spec in ("tests.nowhere:factory", "tests.core.gateway.test_rollouts:missing"):
        with pytest.raises(SettingsError, match=r"package\.module:factory"):
            load_provider_factory(spec)
