"""The gateway's policy steps before a call goes out, and their settling after.

1. **Data policy** (:mod:`core.gateway.redaction`): the settings' policy, the tenant's
   override, then the caller's (a flow's ``data_policy``). Blocked classes refuse the call
   (422 ``data-blocked``); redacted ones become placeholders the answer gets back. Large
   bodies are scanned on a worker thread so one long prompt does not stall every other
   request on the event loop.
2. **Budgets** (:mod:`core.gateway.budgets`): the call's worst case (input estimate and
   ``max_tokens`` at list price) is reserved on every applicable budget, or the call is
   refused with 402 ``budget-exhausted`` before admission; the real cost is settled after.
   Whether a tenant has any budget is remembered for a few seconds, so tenants without
   budgets (most calls) cost no database round trip. A soft threshold crossed for the
   first time in a period sends a ``budget.threshold`` callback to the tenant's subscribers.

Budget settling never fails a call that already happened: errors are logged, and the
reservation expires and is swept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db.models import Budget
from core.gateway.budgets import (
    Budgets,
    Reservation,
    ThresholdCrossing,
    threshold_event,
    worst_case_picodollars,
)
from core.gateway.catalog import Catalog
from core.gateway.prepare import Prepared
from core.gateway.redaction import RedactionPolicy, Redactor, apply
from core.logging import get_logger

log = get_logger(__name__)

THREAD_MIN_CHARS = 16_384  # bodies with more text than this are scanned off the event loop
BUDGET_INDEX_SECONDS = 5.0


def _text_size(body: Mapping[str, Any]) -> int:
    """A cheap upper bound of the text a scan reads (the serialized size of what it walks)."""
    size = len(str(body.get("system") or ""))
    for message in body.get("messages") or ():
        if isinstance(message, Mapping):
            size += len(str(message.get("content") or ""))
    return size


async def announce_thresholds(session: AsyncSession, crossings: list[ThresholdCrossing]) -> None:
    """A ``budget.threshold`` callback per crossing to the tenant's subscribers, written in
    the transaction that marks the threshold announced (once per period, never lost)."""
    # Imported here: core.callbacks needs core.services, which builds this gateway.
    from core.callbacks.listener import notify

    for crossing in crossings:
        event = threshold_event(crossing)
        await notify(
            session,
            tenant_id=crossing.tenant_id,
            event_type="budget.threshold",
            data={"budget_threshold": event},
        )


class Governance:
    def __init__(
        self,
        *,
        policy: RedactionPolicy,
        tenant_policies: Mapping[str, RedactionPolicy],
        catalog: Catalog,
        budgets: Budgets | None,
        read_sessions: async_sessionmaker[AsyncSession] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.tenant_policies = dict(tenant_policies)
        self.catalog = catalog
        self.budgets = budgets
        self._clock = clock
        self._has_budgets: dict[str, tuple[float, bool]] = {}
        self._lookups: dict[str, asyncio.Future[bool]] = {}
        # Reads that take no write lock (SQLite), so the check never waits for writers.
        self._read_sessions = read_sessions or (budgets.sessions if budgets else None)

    # ----------------------------------------------------------------- data policy

    def policy_for(self, tenant_id: str, override: RedactionPolicy | None) -> RedactionPolicy:
        policy = self.policy
        tenant = self.tenant_policies.get(tenant_id)
        if tenant is not None:
            policy = policy.merged(tenant)
        return policy.merged(override) if override is not None else policy

    async def redact(
        self, body: Mapping[str, Any], tenant_id: str, override: RedactionPolicy | None
    ) -> tuple[dict[str, Any], Redactor | None]:
        """The body to send and the redactor for the answer (None when nothing changed)."""
        policy = self.policy_for(tenant_id, override)
        if _text_size(body) >= THREAD_MIN_CHARS:
            redacted, redactor = await asyncio.to_thread(apply, policy, body)
        else:
            redacted, redactor = apply(policy, body)
        return redacted, (redactor if redactor.counts() else None)

    # --------------------------------------------------------------------- budgets

    def forget_budgets(self, tenant_id: str) -> None:
        """A budget of ``tenant_id`` changed here: look again on its next call."""
        self._has_budgets.pop(tenant_id, None)

    async def _tenant_has_budgets(self, tenant_id: str) -> bool:
        """Whether ``tenant_id`` has any budget, as of at most a few seconds ago.

        An expired answer is still used while ONE lookup refreshes it: at full call rate a
        lookup per call (or a stampede of them when the entry expires) would queue every
        request behind the database.
        """
        now = self._clock()
        known = self._has_budgets.get(tenant_id)
        if known is not None and now - known[0] < BUDGET_INDEX_SECONDS:
            return known[1]
        lookup = self._lookups.get(tenant_id)
        if lookup is None:
            lookup = asyncio.ensure_future(self._look_up(tenant_id))
            self._lookups[tenant_id] = lookup
            lookup.add_done_callback(lambda done: self._looked_up(tenant_id, done))
        if known is not None:
            return known[1]
        return await asyncio.shield(lookup)

    async def _look_up(self, tenant_id: str) -> bool:
        started = self._clock()
        sessions = self._read_sessions
        assert sessions is not None  # only called when budgets (and so sessions) exist
        async with sessions() as session:
            found = await session.scalar(
                select(Budget.id).where(Budget.tenant_id == tenant_id).limit(1)
            )
        self._has_budgets[tenant_id] = (started, found is not None)
        return found is not None

    def _looked_up(self, tenant_id: str, done: asyncio.Future[bool]) -> None:
        self._lookups.pop(tenant_id, None)
        if not done.cancelled() and done.exception() is not None:
            log.warning("looking up a tenant's budgets failed", error=str(done.exception()))

    async def reserve(
        self, prepared: Prepared, tenant_id: str, feature: str, api_key_id: str | None
    ) -> Reservation | None:
        """Raises ``BudgetExhausted`` (402) when any applicable budget cannot take the call."""
        if self.budgets is None or not await self._tenant_has_budgets(tenant_id):
            return None
        worst = worst_case_picodollars(
            self.catalog, prepared.model.id, prepared.input_estimate, prepared.max_tokens
        )
        return await self.budgets.reserve(tenant_id, feature, api_key_id, worst)

    async def settle(self, reservation: Reservation | None, cost_picodollars: int) -> None:
        if reservation is None or self.budgets is None:
            return
        try:
            if cost_picodollars > 0:
                crossings = await self.budgets.settle(
                    reservation, cost_picodollars, announce=announce_thresholds
                )
                for crossing in crossings:
                    log.warning(
                        "budget threshold reached",
                        budget_id=crossing.budget_id,
                        tenant=crossing.tenant_id,
                        scope=crossing.scope,
                        scope_value=crossing.scope_value,
                        threshold=crossing.threshold,
                    )
            else:
                await self.budgets.release(reservation)
        except Exception:
            log.exception("settling a budget reservation failed; it expires instead")
