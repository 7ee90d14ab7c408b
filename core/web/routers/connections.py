"""Connections: a tenant's link to one platform account, and the flows enabled on it.

Role policy:

* create (``POST /v1/connections``) and enable/disable flows
  (``PUT /v1/connections/{id}/flows/{flow}``): admin only;
* read (``GET /v1/connections``, ``GET /v1/connections/{id}``): any role — admin,
  service, reviewer.

Secrets are write-only: validated by the connector's secrets model, encrypted at rest,
never returned, never logged, never echoed in a validation error. A tenant sees only its
own connections; another tenant's id answers 404, never 403. Creating a connection and
changing a flow are written to the audit log in the same transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core import audit
from core.auth import Principal
from core.connections import check_outbound_urls, create_connection, get_connection
from core.db.dialect import insert_ignoring_conflicts
from core.db.models import Connection, FlowEnablement, Role
from core.db.types import utcnow
from core.errors import Conflict, InvalidRequest, NotFound
from core.flows.catalog import FlowCatalog
from core.flows.enabling import check_flow_for_connection
from core.ingest import enabled_flows
from core.services import Services
from core.web.deps import ANY_ROLE, ServicesDep, SessionDep, require, require_outside_transaction

router = APIRouter(prefix="/v1/connections", tags=["connections"])

Reader = Annotated[Principal, Depends(require(*ANY_ROLE))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
AdminOutsideTransaction = Annotated[Principal, Depends(require_outside_transaction(Role.ADMIN))]


class ConnectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connector: str = Field(min_length=1, max_length=64, description="Registered connector.")
    name: str = Field(min_length=1, max_length=200, description="Unique within the tenant.")
    config: dict[str, Any] = Field(default_factory=dict, description="Connector settings.")
    secrets: dict[str, Any] = Field(
        default_factory=dict, description="Write-only: encrypted at rest, never returned."
    )
    poll_interval_seconds: float | None = Field(
        None, gt=0, le=86_400, description="Polling connectors only: seconds between polls."
    )
    allow_unreviewed_writes: bool = Field(
        False,
        description="ERP connections only: let flows with `review: never` write without a "
        "reviewer. Off by default; every ERP write then waits for approval.",
    )


class ConnectionOut(BaseModel):
    id: str
    connector: str
    kind: str | None = Field(description="crm or erp; null if the connector is not installed.")
    name: str
    config: dict[str, Any]
    hook_url: str = Field(description="Where the platform delivers webhooks (relative).")
    flows: dict[str, bool] = Field(description="This connector's flows and whether enabled.")
    poll_interval_seconds: float | None
    allow_unreviewed_writes: bool
    created_at: datetime
    updated_at: datetime


class ConnectionList(BaseModel):
    data: list[ConnectionOut]


class FlowSwitch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool


def _flows_for(catalog: FlowCatalog, connector: str, enabled: dict[str, bool]) -> dict[str, bool]:
    return {name: enabled.get(name, False) for name in catalog.for_connector(connector)}


def _out(services: Services, connection: Connection, enabled: dict[str, bool]) -> ConnectionOut:
    factory = services.connectors.registry.get(connection.connector)
    return ConnectionOut(
        id=connection.id,
        connector=connection.connector,
        kind=factory.kind.value if factory is not None else None,
        name=connection.name,
        config=connection.config,
        hook_url=f"/hooks/{connection.id}",
        flows=_flows_for(services.flows, connection.connector, enabled),
        poll_interval_seconds=connection.poll_interval_seconds,
        allow_unreviewed_writes=connection.allow_unreviewed_writes,
        created_at=connection.created_at,
        updated_at=connection.updated_at,
    )


async def _view(session: AsyncSession, services: Services, connection: Connection) -> ConnectionOut:
    enabled = await enabled_flows(session, [connection.id])
    return _out(services, connection, enabled[connection.id])


@router.post("", status_code=201, summary="Create a connection")
async def create_one(
    body: ConnectionIn, session: SessionDep, services: ServicesDep, principal: Admin
) -> ConnectionOut:
    factory = services.connectors.registry.require(body.connector)
    taken = await session.scalar(
        select(Connection.id).where(
            Connection.tenant_id == principal.tenant_id, Connection.name == body.name
        )
    )
    if taken is not None:
        raise Conflict(f"a connection named {body.name!r} already exists")
    try:
        connection = await create_connection(
            session,
            tenant_id=principal.tenant_id,
            factory=factory,
            name=body.name,
            config=body.config,
            secrets=body.secrets,
            keyring=services.keyring,
            poll_interval_seconds=body.poll_interval_seconds,
            allow_unreviewed_writes=body.allow_unreviewed_writes,
        )
    except IntegrityError:  # a concurrent create with the same name won the race
        raise Conflict(f"a connection named {body.name!r} already exists") from None
    # After validation (clear config errors first); a refusal rolls the insert back.
    await check_outbound_urls(
        factory, connection.config, services.settings.connector_allow_networks
    )
    await audit.record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="connection.create",
        object_type="connection",
        object_id=connection.id,
        connector=connection.connector,
        name=connection.name,
    )
    return _out(services, connection, {})


@router.get("", summary="List connections")
async def list_connections(
    session: SessionDep, services: ServicesDep, principal: Reader
) -> ConnectionList:
    rows = (
        await session.scalars(
            select(Connection)
            .where(Connection.tenant_id == principal.tenant_id)
            .order_by(Connection.created_at, Connection.id)
        )
    ).all()
    enabled = await enabled_flows(session, [row.id for row in rows])
    return ConnectionList(data=[_out(services, row, enabled[row.id]) for row in rows])


@router.get("/{connection_id}", summary="One connection")
async def get_one(
    connection_id: str, session: SessionDep, services: ServicesDep, principal: Reader
) -> ConnectionOut:
    connection = await get_connection(session, connection_id, principal.tenant_id)
    return await _view(session, services, connection)


@router.put("/{connection_id}/flows/{flow:path}", summary="Enable or disable a flow")
async def set_flow(
    connection_id: str,
    flow: str,
    body: FlowSwitch,
    services: ServicesDep,
    principal: AdminOutsideTransaction,
) -> ConnectionOut:
    # The connection first: another tenant's id is 404 whatever the flow.
    async with services.sessions() as session:
        connection = await get_connection(session, connection_id, principal.tenant_id)
    entry = services.flows.get(flow)
    if entry is None:
        raise NotFound(f"no flow {flow!r}; installed: {', '.join(services.flows.names())}")
    source = entry.source
    if source is not None and source.connector != connection.connector:
        raise InvalidRequest(
            f"flow {flow!r} reads from the {source.connector!r} connector, but connection "
            f"{connection.id} uses {connection.connector!r}"
        )
    if body.enabled:
        # Checked against this connection's live field metadata, not only the file: an
        # unknown or read-only field, or a picklist mismatch, is refused here. No
        # transaction is open meanwhile: the connector may sign in first, and store its
        # token in its own transaction (on SQLite a request transaction would deadlock it).
        await check_flow_for_connection(services, entry, connection)
    async with services.sessions.begin() as session:
        return await _switch_flow(session, services, principal, connection, flow, body.enabled)


async def _switch_flow(
    session: AsyncSession,
    services: Services,
    principal: Principal,
    connection: Connection,
    flow: str,
    enabled: bool,
) -> ConnectionOut:
    before = await session.scalar(
        select(FlowEnablement.enabled).where(
            FlowEnablement.connection_id == connection.id, FlowEnablement.flow == flow
        )
    )
    # Insert-or-ignore, then update: an upsert that is race-free on both backends.
    await session.execute(
        insert_ignoring_conflicts(
            session,
            FlowEnablement.__table__,  # type: ignore[arg-type]
            ["connection_id", "flow"],
        ),
        [
            {
                "connection_id": connection.id,
                "flow": flow,
                "tenant_id": connection.tenant_id,
                "enabled": enabled,
                "updated_at": utcnow(),
            }
        ],
    )
    await session.execute(
        update(FlowEnablement)
        .where(FlowEnablement.connection_id == connection.id, FlowEnablement.flow == flow)
        .values(enabled=enabled, updated_at=utcnow())
    )
    await audit.record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="connection.flow.enable" if enabled else "connection.flow.disable",
        object_type="connection",
        object_id=connection.id,
        flow=flow,
        before={"enabled": bool(before)},
        after={"enabled": enabled},
    )
    return await _view(session, services, connection)
