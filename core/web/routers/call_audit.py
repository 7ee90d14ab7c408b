"""The encrypted audit log of calls: one record read at a time, for a stated reason.

Role policy: admin only. ``POST`` (never ``GET``: nothing may cache or prefetch it, and the
reason travels in the body). Every read is written to the admin audit log in the same
transaction as the read, whether it found a record or not; a read that cannot be audited is
not served (the transaction commits before the answer is sent). Another tenant's request id
answers 404 like a missing one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from core import audit
from core.auth import Principal
from core.db.models import Role
from core.errors import NotFound
from core.gateway.call_audit import CallAuditUnreadable, read_call
from core.web import problems
from core.web.deps import ServicesDep, SessionDep, require

router = APIRouter(tags=["call audit"])

AdminDep = Annotated[Principal, Depends(require(Role.ADMIN))]
NO_STORE = {"cache-control": "no-store"}  # a decrypted prompt is kept by no cache


class AuditReadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=10, max_length=1000)
    ] = Field(
        description="Why this call is being read (ticket, incident…), at least 10 characters; "
        "kept in the audit log."
    )


class AuditedCall(BaseModel):
    request_id: str
    created_at: datetime
    key_id: str = Field(description="The encryption key that sealed the record.")
    request: dict[str, Any] = Field(description="The request body as sent (after redaction).")
    response: dict[str, Any] | None = Field(
        description="The answer as received (placeholders not restored); null on error."
    )
    error: str | None


@router.post(
    "/v1/calls/{request_id}/audit",
    response_model=AuditedCall,
    summary="Read one call's encrypted prompt and answer (admin; the read is audited)",
    responses={409: {"description": "Sealed with a key no longer configured"}},
)
async def read_audited_call(
    request_id: Annotated[str, Path(max_length=32)],
    body: AuditReadIn,
    principal: AdminDep,
    session: SessionDep,
    services: ServicesDep,
    request: Request,
    response: Response,
) -> AuditedCall | Response:
    try:
        document = await read_call(session, services.keyring, principal.tenant_id, request_id)
    except (NotFound, CallAuditUnreadable) as exc:
        outcome = exc.problem_type
        failure: NotFound | CallAuditUnreadable | None = exc
    else:
        outcome, failure = "read", None
    await audit.record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="call_audit.read",
        object_type="gateway_request",
        object_id=request_id,
        reason=body.reason,
        outcome=outcome,
    )
    if failure is not None:
        # Answered, not raised: raising would roll back the audit entry with the read.
        return problems.problem_response(
            failure,
            instance=request.url.path,
            trace_id=problems.trace_id_of(request),
            headers=NO_STORE,
        )
    response.headers.update(NO_STORE)
    return AuditedCall(**document)
