"""Prompt rollouts: which version of a prompt answers one record's call.

A flow pins a prompt version (``prompt: lead_qualification@1``). A tenant's rollout of that
prompt names a *candidate* version and a share of traffic, in basis points of 10,000
(1% → 5% → 50% → 100%). Each call asks: is this record in the candidate's share?

Bucketing is a hash, not a coin: ``sha256(rollout id, tenant, record key)`` mapped onto
0..9,999, and the record is in when its bucket is below the share. So a record keeps its
version from call to call (sticky), raising the share only adds records (the 1% stay in
at 5%), rolling back (share 0) takes everyone out on the next call, and each rollout — a
new id — draws a fresh split. ``sticky: tenant`` hashes the tenant alone: all or nothing.

The decision goes through OpenFeature (:mod:`openfeature`), the vendor-neutral flag API: the
flag ``prompt-version.<name>`` resolves to a version number, with the record key as the
targeting key and the tenant and pinned version as attributes. :class:`RolloutProvider`
answers it from Switchyard's own rollout table; a team with a flag service of its own points
``SWITCHYARD_GATEWAY__PROMPT_FLAG_PROVIDER`` at a factory for its provider instead. Whatever
answers, :class:`PromptVersions` only accepts an installed version whose slots the flow can
fill, and falls back to the pinned version otherwise (a broken flag service never breaks a
flow).

A version is immutable once used: the first call records its digest
(:class:`~core.db.models.PromptVersion`); a file edited afterwards is refused with
:class:`PromptVersionEdited` until it is restored or published as a new version.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, FeatureProvider, Metadata
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db.models import PromptRollout, PromptVersion, RolloutSticky
from core.db.types import new_id
from core.errors import SettingsError, TerminalError
from core.flows.prompts import Prompt, PromptRegistry
from core.logging import get_logger

log = get_logger("switchyard.rollouts")

SCALE = 10_000  # shares are basis points: 100% = 10,000
FLAG_PREFIX = "prompt-version."
PINNED, CANDIDATE = "pinned", "candidate"


class PromptVersionEdited(TerminalError):
    problem_type = "prompt-version-edited"
    title = "A prompt version was edited after calls used it"
    status = 409


def bucket(salt: str, key: str) -> int:
    """A stable position in 0..SCALE-1 for ``key`` under ``salt`` (the rollout id)."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % SCALE


@dataclass(frozen=True)
class RolloutState:
    id: str
    prompt: str
    candidate_version: int
    share_basis_points: int
    sticky: RolloutSticky

    @classmethod
    def of(cls, row: PromptRollout) -> RolloutState:
        return cls(
            row.id,
            row.prompt,
            row.candidate_version,
            row.share_basis_points,
            RolloutSticky(row.sticky),
        )

    def position(self, tenant_id: str, record_key: str) -> int:
        key = tenant_id if self.sticky is RolloutSticky.TENANT else f"{tenant_id}\x00{record_key}"
        return bucket(self.id, key)

    def admits(self, tenant_id: str, record_key: str) -> bool:
        return self.position(tenant_id, record_key) < self.share_basis_points


async def load_rollout(session: AsyncSession, tenant_id: str, prompt: str) -> PromptRollout | None:
    row: PromptRollout | None = await session.scalar(
        select(PromptRollout).where(
            PromptRollout.tenant_id == tenant_id, PromptRollout.prompt == prompt
        )
    )
    return row


class RolloutProvider(AbstractProvider):
    """The OpenFeature provider for ``prompt-version.<name>`` flags: the rollout table.

    Read per evaluation (one indexed row, without the write lock), so a change made through
    the API or the CLI by any process applies to the next call everywhere.
    """

    def __init__(self, read_sessions: async_sessionmaker[AsyncSession]) -> None:
        super().__init__()
        self._read_sessions = read_sessions

    def get_metadata(self) -> Metadata:
        return Metadata(name="switchyard-rollouts")

    async def resolve_string_details_async(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        prompt = flag_key.removeprefix(FLAG_PREFIX)
        attributes = evaluation_context.attributes if evaluation_context else {}
        tenant_id = attributes.get("tenant_id")
        record_key = evaluation_context.targeting_key if evaluation_context else None
        if not isinstance(tenant_id, str) or not record_key:
            return FlagResolutionDetails(
                default_value,
                error_code=ErrorCode.TARGETING_KEY_MISSING,
                error_message="a prompt version needs the tenant_id and a targeting key",
                reason=Reason.ERROR,
            )
        async with self._read_sessions() as session:
            row = await load_rollout(session, tenant_id, prompt)
        if row is None:
            return FlagResolutionDetails(default_value, reason=Reason.DEFAULT, variant=PINNED)
        state = RolloutState.of(row)
        position = state.position(tenant_id, record_key)
        inside = position < state.share_basis_points
        return FlagResolutionDetails(
            str(state.candidate_version) if inside else default_value,
            reason=Reason.SPLIT,
            variant=CANDIDATE if inside else PINNED,
            flag_metadata={"rollout_id": state.id, "bucket": position},
        )

    # OpenFeature's synchronous API is not used: a lookup is a database read.
    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        return _unsupported(default_value)

    def resolve_boolean_details(self, flag_key: str, default_value: bool, *_: Any) -> Any:
        return _unsupported(default_value)

    def resolve_integer_details(self, flag_key: str, default_value: int, *_: Any) -> Any:
        return _unsupported(default_value)

    def resolve_float_details(self, flag_key: str, default_value: float, *_: Any) -> Any:
        return _unsupported(default_value)

    def resolve_object_details(self, flag_key: str, default_value: Any, *_: Any) -> Any:
        return _unsupported(default_value)


def _unsupported(default: Any) -> FlagResolutionDetails[Any]:
    return FlagResolutionDetails(
        default,
        error_code=ErrorCode.GENERAL,
        error_message="switchyard-rollouts answers prompt-version flags, asynchronously",
        reason=Reason.ERROR,
    )


def load_provider_factory(spec: str) -> Callable[[], FeatureProvider]:
    """``package.module:callable`` → the callable (a factory of an OpenFeature provider)."""
    module_name, _, attribute = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise SettingsError(
            f"prompt_flag_provider {spec!r} cannot be loaded ({exc}); give "
            "'package.module:factory', a callable returning an OpenFeature provider"
        ) from None
    if not callable(factory):
        raise SettingsError(f"prompt_flag_provider {spec!r} is not callable")
    return factory  # type: ignore[no-any-return]


@dataclass(frozen=True)
class PromptChoice:
    """The version that answers one call, and why (recorded on the job's steps)."""

    prompt: Prompt
    arm: str  # pinned | candidate
    reason: str  # the flag resolution's reason, or why the answer was not used
    rollout_id: str | None = None
    bucket: int | None = None

    def step(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt.ref,
            "arm": self.arm,
            "reason": self.reason,
            **({"rollout": self.rollout_id, "bucket": self.bucket} if self.rollout_id else {}),
        }


class PromptVersions:
    """Chooses a prompt version per call and keeps used versions immutable."""

    def __init__(
        self,
        registry: PromptRegistry,
        *,
        sessions: async_sessionmaker[AsyncSession],
        read_sessions: async_sessionmaker[AsyncSession],
        provider: FeatureProvider,
    ) -> None:
        self.registry = registry
        self._sessions = sessions
        self._read_sessions = read_sessions
        # A domain of its own per instance: tests run several apps in one process, and
        # OpenFeature's provider registry is global.
        self._domain = f"switchyard.prompts.{new_id('of')}"
        api.set_provider(provider, domain=self._domain)
        self._client = api.get_client(domain=self._domain)
        self._sealed: dict[str, str] = {}  # ref → digest known to be recorded

    async def choose(
        self, tenant_id: str, pinned: Prompt, record_key: str, fillable: Collection[str]
    ) -> PromptChoice:
        """The version for this record: the rollout's candidate or the pinned one.

        ``fillable`` are the slot names the flow can fill; a candidate needing others is
        not used.
        """
        context = EvaluationContext(
            targeting_key=record_key,
            attributes={"tenant_id": tenant_id, "pinned_version": pinned.version},
        )
        details = await self._client.get_string_details_async(
            FLAG_PREFIX + pinned.name, str(pinned.version), context
        )
        metadata = details.flag_metadata or {}
        rollout_id = metadata.get("rollout_id")
        position = metadata.get("bucket")
        choice = PromptChoice(
            pinned,
            PINNED,
            str(details.reason or Reason.UNKNOWN),
            rollout_id if isinstance(rollout_id, str) else None,
            position if isinstance(position, int) else None,
        )
        if details.error_code is not None:
            log.warning(
                "prompt flag failed; using the pinned version",
                prompt=pinned.ref,
                error=details.error_message,
            )
        elif details.value != str(pinned.version):
            choice = self._candidate(choice, details.value, fillable)
        await self.seal(choice.prompt)
        return choice

    def _candidate(
        self, pinned: PromptChoice, value: str, fillable: Collection[str]
    ) -> PromptChoice:
        name = pinned.prompt.name
        candidate = self.registry.get(f"{name}@{value}") if value.isdigit() else None
        if candidate is None:
            reason = f"fallback: version {value[:20]!r} of {name} is not installed"
        elif not candidate.slots <= set(fillable):
            missing = ", ".join(sorted(candidate.slots - set(fillable)))
            reason = f"fallback: {candidate.ref} needs inputs the flow lacks ({missing})"
        else:
            return PromptChoice(
                candidate, CANDIDATE, pinned.reason, pinned.rollout_id, pinned.bucket
            )
        log.warning("prompt rollout answer not used", prompt=pinned.prompt.ref, reason=reason)
        return PromptChoice(pinned.prompt, PINNED, reason, pinned.rollout_id, pinned.bucket)

    async def seal(self, prompt: Prompt) -> None:
        """Record ``prompt``'s digest at its first use; refuse a version edited since."""
        if self._sealed.get(prompt.ref) == prompt.digest:
            return
        recorded = await self._recorded(prompt)
        if recorded is None:
            try:
                async with self._sessions.begin() as session:
                    session.add(
                        PromptVersion(
                            name=prompt.name, version=prompt.version, digest=prompt.digest
                        )
                    )
                recorded = prompt.digest
            except IntegrityError:  # another process recorded it first
                recorded = await self._recorded(prompt)
        if recorded != prompt.digest:
            raise PromptVersionEdited(
                f"{prompt.ref} ({prompt.path}) was edited after calls used it; restore its "
                f"text, or publish the change as a new version ({prompt.name}/"
                f"{max(self.registry.versions(prompt.name)) + 1}.yaml) and roll that out",
                prompt=prompt.ref,
            )
        self._sealed[prompt.ref] = prompt.digest

    async def _recorded(self, prompt: Prompt) -> str | None:
        async with self._read_sessions() as session:
            row = await session.get(PromptVersion, (prompt.name, prompt.version))
            return row.digest if row is not None else None

    async def recorded_digests(self) -> dict[str, str]:
        """Every used version's digest at first use, by ``name@version``."""
        async with self._read_sessions() as session:
            rows = (await session.scalars(select(PromptVersion))).all()
        return {f"{row.name}@{row.version}": row.digest for row in rows}
