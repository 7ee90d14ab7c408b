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
   budgets (most calls) cost no database round trip.

Budget settling never fails a call that already happened: errors are logged, and the
reservation expires and is swept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select

from core.db.models import Budget
from core.gateway.budgets import Budgets, Reservation, worst_case_picodollars
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


class Governance:
    def __init__(
        self,
        *,
        policy: RedactionPolicy,
        tenant_policies: Mapping[str, RedactionPolicy],
        catalog: Catalog,
        budgets: Budgets | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.tenant_policies = dict(tenant_policies)
        self.catalog = catalog
        self.budgets = budgets
        self._clock = clock
        self._has_budgets: dict[str, tuple[float, bool]] = {}

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
        assert self.budgets is not None
        now = self._clock()
        known = self._has_budgets.get(tenant_id)
        if known is not None and now - known[0] < BUDGET_INDEX_SECONDS:
            return known[1]
        async with self.budgets.sessions() as session:
            found = await session.scalar(
                select(Budget.id).where(Budget.tenant_id == tenant_id).limit(1)
            )
        self._has_budgets[tenant_id] = (now, found is not None)
        return found is not None

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
                crossings = await self.budgets.settle(reservation, cost_picodollars)
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
