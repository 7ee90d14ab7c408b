"""Typed tables. A tenant owns every row below it; API queries always filter by tenant
(workers, the scheduler and the operator CLI work across tenants).

:mod:`.platform` holds the platform's tables, :mod:`.gateway` the Claude gateway's,
:mod:`.prompts` the prompt registry's, :mod:`.batches` the Message Batches'; all
register on :class:`Base`'s metadata, which Alembic compares against the migrations.
"""

from core.db.models.base import NAMING, Base
from core.db.models.batches import (
    BatchRequest,
    BatchRequestStatus,
    MessageBatch,
    MessageBatchStatus,
)
from core.db.models.gateway import (
    Budget,
    BudgetPeriod,
    BudgetReservation,
    BudgetScope,
    BudgetUsage,
    CallAudit,
    GatewayRequest,
    UpstreamCall,
)
from core.db.models.platform import (
    FINISHED,
    ApiKey,
    AuditEntry,
    Connection,
    ConnectorStateRow,
    Delivery,
    Event,
    FlowEnablement,
    Job,
    JobStatus,
    ReviewItem,
    ReviewStatus,
    Role,
    Subscription,
    Tenant,
    User,
)
from core.db.models.prompts import PromptRollout, PromptVersion, RolloutChange, RolloutSticky

__all__ = [
    "FINISHED",
    "NAMING",
    "ApiKey",
    "AuditEntry",
    "Base",
    "BatchRequest",
    "BatchRequestStatus",
    "Budget",
    "BudgetPeriod",
    "BudgetReservation",
    "BudgetScope",
    "BudgetUsage",
    "CallAudit",
    "Connection",
    "ConnectorStateRow",
    "Delivery",
    "Event",
    "FlowEnablement",
    "GatewayRequest",
    "Job",
    "JobStatus",
    "MessageBatch",
    "MessageBatchStatus",
    "PromptRollout",
    "PromptVersion",
    "ReviewItem",
    "ReviewStatus",
    "Role",
    "RolloutChange",
    "RolloutSticky",
    "Subscription",
    "Tenant",
    "UpstreamCall",
    "User",
]
