"""The ``switchyard`` command.

Every failure the user can fix prints one line saying what to do and exits with 2; nothing
prints a traceback for a known error.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from sqlalchemy import select

from core.bench.cli import bench_app
from core.cli_support import fail as _fail
from core.cli_support import load as _settings
from core.cli_support import run as _run
from core.cli_support import with_services as _with_services
from core.db.models import ApiKey, Job, JobStatus, Role
from core.errors import NotFound, SwitchyardError
from core.flows.cli import flows_app
from core.gateway.rollout_cli import prompts_app

app = typer.Typer(
    help="Switchyard: integration middleware between CRM/ERP systems and the Claude API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
tenants_app = typer.Typer(help="Tenants.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
jobs_app = typer.Typer(help="Jobs in the durable queue.", no_args_is_help=True)
secrets_app = typer.Typer(help="Encryption keys for secrets at rest.", no_args_is_help=True)
call_audit_app = typer.Typer(
    help="The encrypted audit log of gateway calls (retention, key rotation).",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
app.add_typer(jobs_app, name="jobs")
app.add_typer(bench_app, name="bench")
app.add_typer(flows_app, name="flows")
app.add_typer(prompts_app, name="prompts")
app.add_typer(secrets_app, name="secrets")
app.add_typer(call_audit_app, name="call-audit")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database to the code's schema."""
    from core.db.migrate import upgrade

    settings = _settings()
    try:
        upgrade(settings.database_url)
    except SwitchyardError as exc:
        raise _fail(exc.detail) from None
    typer.echo("database is up to date")


@app.command()
def serve(
    demo: Annotated[bool, typer.Option(help="Start sandboxes, a demo tenant and flows.")] = False,
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    worker: Annotated[
        bool | None,
        typer.Option(help="Run a worker in this process (default: yes on embedded SQLite)."),
    ] = None,
) -> None:
    """Serve the API (and, in embedded mode, an in-process worker)."""
    from core.server import serve as run_server

    _run(lambda settings: run_server(settings, demo=demo, host=host, port=port, worker=worker))


@app.command("worker")
def worker_command() -> None:
    """Run a worker: claims jobs until SIGTERM/SIGINT, then drains within the grace period."""
    from core.server import run_standalone_worker

    _run(run_standalone_worker)


@tenants_app.command("create")
def tenants_create(name: str) -> None:
    """Create a tenant."""
    from core.auth import create_tenant

    async def body(services: Any) -> str:
        async with services.sessions.begin() as session:
            tenant = await create_tenant(session, name)
            return tenant.id

    tenant_id = _run(lambda s: _with_services(s, body))
    typer.echo(f"created tenant {name} ({tenant_id})")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant name.")],
    role: Annotated[Role, typer.Option(help="admin, reviewer or service.")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
    email: Annotated[
        str | None, typer.Option(help="The person the key belongs to (for review four eyes).")
    ] = None,
    platform_id: Annotated[
        list[str] | None,
        typer.Option(
            help="Their user id in a connected platform, <connector>:<id> (repeatable), e.g. "
            "sap:JSMITH or salesforce:0055g00000XyZwVAAV; needs --email."
        ),
    ] = None,
) -> None:
    """Create an API key and print it once (it is stored only as a hash)."""
    from core import audit
    from core.auth import assign_person, create_api_key, tenant_by_name

    if platform_id and email is None:
        raise _fail("--platform-id needs --email: platform ids belong to a person")

    async def body(services: Any) -> str:
        async with services.sessions.begin() as session:
            found = await tenant_by_name(session, tenant)
            key, plaintext = await create_api_key(session, found.id, role, name)
            person = None
            if email is not None:
                person = await assign_person(session, key, email, platform_id or ())
            await audit.record(
                session,
                tenant_id=found.id,
                actor="cli",
                action="api_key.create",
                object_type="api_key",
                object_id=key.id,
                role=role.value,
                user=None if person is None else person.id,
            )
            return plaintext

    plaintext = _run(lambda s: _with_services(s, body))
    typer.echo(plaintext)
    typer.echo("store this key now: it cannot be shown again", err=True)


@keys_app.command("list")
def keys_list(tenant: Annotated[str, typer.Option(help="Tenant name.")]) -> None:
    """List a tenant's API keys, revoked ones included (never the key or its hash)."""
    from core.auth import tenant_by_name

    async def body(services: Any) -> list[ApiKey]:
        async with services.sessions() as session:
            found = await tenant_by_name(session, tenant)
            query = (
                select(ApiKey)
                .where(ApiKey.tenant_id == found.id)
                .order_by(ApiKey.created_at, ApiKey.id)
            )
            return list((await session.execute(query)).scalars())

    keys = _run(lambda s: _with_services(s, body))
    if not keys:
        typer.echo(f"tenant {tenant} has no API keys", err=True)
    for key in keys:
        revoked = key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "-"
        typer.echo(
            f"{key.id}  {key.role:<8} {key.name or '-':<24} "
            f"created={key.created_at.isoformat(timespec='seconds')} revoked={revoked}"
        )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id, as `keys list` shows it.")],
    tenant: Annotated[str, typer.Option(help="Tenant name.")],
) -> None:
    """Revoke an API key: it stops authenticating at once. Revoking twice changes nothing."""
    from core import audit
    from core.auth import revoke_api_key, tenant_by_name

    async def body(services: Any) -> str:
        async with services.sessions.begin() as session:
            found = await tenant_by_name(session, tenant)
            existing = await session.get(ApiKey, key_id)
            if existing is not None and existing.tenant_id == found.id and existing.revoked_at:
                # Keep the first revocation's time (and audit entry) as the true record.
                when = existing.revoked_at.isoformat(timespec="seconds")
                return f"API key {key_id} was already revoked at {when}"
            try:
                key = await revoke_api_key(session, key_id, found.id)
            except NotFound:
                raise NotFound(
                    f"tenant {tenant!r} has no API key {key_id!r}; "
                    f"`switchyard keys list --tenant {tenant}` shows its keys"
                ) from None
            await audit.record(
                session,
                tenant_id=found.id,
                actor="cli",
                action="api_key.revoke",
                object_type="api_key",
                object_id=key.id,
            )
            return f"revoked API key {key.id} of tenant {tenant}"

    typer.echo(_run(lambda s: _with_services(s, body)))


@jobs_app.command("list")
def jobs_list(
    status: Annotated[JobStatus | None, typer.Option(help="Only this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List the newest jobs across tenants (operator view)."""

    async def body(services: Any) -> list[Job]:
        async with services.sessions() as session:
            query = select(Job).order_by(Job.id.desc()).limit(limit)
            if status is not None:
                query = query.where(Job.status == status.value)
            return list((await session.execute(query)).scalars())

    jobs = _run(lambda s: _with_services(s, body))
    for job in jobs:
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "id": job.id,
                        "tenant_id": job.tenant_id,
                        "kind": job.kind,
                        "status": job.status,
                        "flow": job.flow,
                        "attempts": job.attempts,
                        "last_error": job.last_error,
                        "trace_id": job.trace_id,
                    }
                )
            )
        else:
            error = f"  {job.last_error[:80]}" if job.last_error else ""
            typer.echo(
                f"{job.id:>8}  {job.status:<15} {job.kind:<16} {job.flow or '-':<30} "
                f"attempts={job.attempts}{error}"
            )


@jobs_app.command("replay")
def jobs_replay(job_id: int) -> None:
    """Run a dead or cancelled job again from its first attempt."""
    from core import audit, queue

    async def body(services: Any) -> None:
        async with services.sessions.begin() as session:
            job = await queue.replay(session, job_id, None)
            await audit.record(
                session,
                tenant_id=job.tenant_id,
                actor="cli",
                action="job.replay",
                object_type="job",
                object_id=str(job.id),
            )

    _run(lambda s: _with_services(s, body))
    typer.echo(f"job {job_id} queued again")


@secrets_app.command("new-key")
def secrets_new_key(key_id: Annotated[str, typer.Argument(help="A name for the key.")]) -> None:
    """Print a fresh KEY_ID:KEY entry for SWITCHYARD_ENCRYPTION_KEYS."""
    from core.crypto import generate_key

    typer.echo(f"{key_id}:{generate_key()}")


@secrets_app.command("rotate")
def secrets_rotate() -> None:
    """Re-encrypt every stored secret under the first (active) key."""
    from core.callbacks import rotate_subscription_secrets
    from core.connections import rotate_secrets

    async def body(services: Any) -> tuple[int, int]:
        async with services.sessions.begin() as session:
            connections = await rotate_secrets(session, services.keyring)
            subscriptions = await rotate_subscription_secrets(session, services.keyring)
            return connections, subscriptions

    connections, subscriptions = _run(lambda s: _with_services(s, body))
    typer.echo(
        f"re-encrypted {connections} connection secret(s) and "
        f"{subscriptions} subscription secret(s) under the active key"
    )


def _call_audit_log(services: Any) -> Any:
    from datetime import timedelta

    from core.gateway.call_audit import CallAuditLog

    days = services.settings.gateway.audit_retention_days
    return CallAuditLog(services.sessions, services.keyring, timedelta(days=days))


@call_audit_app.command("purge")
def call_audit_purge() -> None:
    """Delete audited calls past SWITCHYARD_GATEWAY__AUDIT_RETENTION_DAYS (run daily)."""

    async def body(services: Any) -> int:
        deleted: int = await _call_audit_log(services).purge_expired()
        return deleted

    typer.echo(f"deleted {_run(lambda s: _with_services(s, body))} expired call audit record(s)")


@call_audit_app.command("reseal")
def call_audit_reseal() -> None:
    """Re-encrypt audited calls under the active (first) key; then the old key can go."""

    async def body(services: Any) -> Any:
        return await _call_audit_log(services).reseal()

    report = _run(lambda s: _with_services(s, body))
    typer.echo(f"re-encrypted {report.resealed} call audit record(s) under the active key")
    for key_id, count in sorted(report.unreadable.items()):
        typer.echo(f"{count} record(s) sealed with key {key_id!r}, which is not configured")
    if report.unreadable:
        raise typer.Exit(code=1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
