"""The check before an admin enables a flow on a connection.

A flow file that validates on its own can still be wrong for one org: a custom field that
this org does not have, a field its profile cannot update, a picklist without one of the
answer's values, or an ERP target whose connection holds every write for review. So the
flow is validated again with the connection's live field metadata (``describe``) for the
source and the writeback object, the target's kind and its review setting, and refused
with every problem, located in the file, when anything is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from core.db.models import Connection
from core.errors import SwitchyardError
from core.flows.catalog import FlowEntry
from core.flows.validate import Problem, validate_flow

if TYPE_CHECKING:
    from core.services import Services


class FlowInvalid(SwitchyardError):
    problem_type = "flow-invalid"
    title = "The flow does not validate, so it cannot be enabled"
    status = 422


def _refuse(name: str, problems: list[Problem]) -> FlowInvalid:
    errors = [p for p in problems if p.severity == "error"]
    shown = "; ".join(str(p) for p in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return FlowInvalid(
        f"flow {name} has {len(errors)} error(s): {shown}{more}",
        problems=[p.as_dict() for p in problems],
    )


async def check_flow_for_connection(
    services: Services, entry: FlowEntry, connection: Connection
) -> None:
    """Raise :class:`FlowInvalid` unless ``entry`` may run on ``connection``.

    Call it with no transaction open: ``describe`` may make the connector sign in and store
    its token (its own transaction), and asks the platform, which takes time."""
    if not entry.ok or entry.spec is None:
        raise _refuse(entry.name, entry.problems)
    spec = entry.spec
    source = await services.connectors.get(connection)
    target_connection = connection
    name = spec.writeback.connection if spec.writeback else None
    if name is not None and name != connection.name:
        async with services.sessions() as session:
            other = await session.scalar(
                select(Connection).where(
                    Connection.tenant_id == connection.tenant_id, Connection.name == name
                )
            )
        if other is None:
            raise FlowInvalid(
                f"flow {entry.name} writes to connection {name!r}, which this tenant lacks; "
                "create it first or change writeback.connection"
            )
        target_connection = other
    target = await services.connectors.get(target_connection)
    described = await source.describe(spec.source.object)
    metadata = {spec.source.object: described} if described else None
    target_metadata = None
    if spec.writeback is not None:
        target_object = spec.writeback.object or spec.source.object
        target_fields = await target.describe(target_object)
        target_metadata = {target_object: target_fields} if target_fields else None
    check = validate_flow(
        Path(entry.path),
        services.flows.prompts,
        metadata=metadata,
        target_metadata=target_metadata,
        target_kind=target.kind,
        allow_unreviewed_erp_writes=target_connection.allow_unreviewed_writes,
    )
    if not check.ok:
        raise _refuse(entry.name, check.problems)
