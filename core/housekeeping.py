"""Periodic chores that keep stored state bounded and honest, run by every worker.

Each chore is safe to run from any number of workers at once (row-level deletes and
compare-and-set updates), so there is no leader to elect:

* release budget reservations whose call never settled (a crashed process's), so a budget
  is not held hostage by calls that will never finish;
* delete audited calls past their retention;
* delete resolved Message Batches requests (sealed prompts and answers) past theirs;
* expire review items nobody decided in time (their jobs end without writing).

Errors are logged and the chore runs again at the next tick.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from core.gateway.batch_retention import purge_resolved
from core.logging import get_logger
from core.review_decisions import expire_due

if TYPE_CHECKING:
    from core.services import Services

log = get_logger("switchyard.housekeeping")


async def housekeep(services: Services) -> dict[str, int]:
    """Run every chore once; returns what each one did."""
    done: dict[str, int] = {}
    budgets = services.gateway.governance.budgets
    if budgets is not None:
        try:
            done["budget_reservations_released"] = await budgets.sweep()
        except Exception:
            log.exception("releasing expired budget reservations failed; next tick retries")
    call_audit = services.gateway.call_audit
    if call_audit is not None:
        try:
            done["call_audit_purged"] = await call_audit.purge_expired()
        except Exception:
            log.exception("purging expired call audits failed; next tick retries")
    try:
        done["review_items_expired"] = await expire_due(services)
    except Exception:
        log.exception("expiring review items failed; next tick retries")
    try:
        done["batch_requests_purged"], done["message_batches_purged"] = await purge_resolved(
            services.sessions,
            retention=timedelta(days=services.settings.gateway.batch_retention_days),
            now=datetime.now(UTC),
        )
    except Exception:
        log.exception("purging resolved batch requests failed; next tick retries")
    if any(done.values()):
        log.info("housekeeping", **done)
    return done
