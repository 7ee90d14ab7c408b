"""``switchyard flows test FLOW --record FILE.json``: a dry run from the terminal.

The same dry run as ``POST /v1/flows/{flow}/test`` (:mod:`core.flows.dryrun`): the prompt as
sent, the model, the answer, the patch and the cost, nothing written. The call goes through
the gateway with the settings' Anthropic key; without one, through the local Anthropic
SANDBOX (said in the output), so an admin can try a flow on a laptop with nothing set up.
The call is recorded under a tenant: ``--tenant``, or the only one there is.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import select

from core.db.models import Tenant
from core.errors import SwitchyardError
from core.flows.dryrun import DryRun, dry_run
from core.settings import Settings, load_settings


class _Refused(Exception):
    """A message for the person at the terminal, with the fix."""


def _record(path: Path) -> dict[str, Any]:
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Refused(f"{path}: cannot read a JSON record ({exc})") from None
    if not isinstance(fields, dict):
        raise _Refused(
            f"{path}: the record must be a JSON object of field: value, as the connector "
            'reads it, e.g. {"subject": "...", "body": "..."}'
        )
    return fields


async def _tenant_id(services: Any, name: str | None) -> str:
    async with services.sessions() as session:
        tenants = list(await session.scalars(select(Tenant).order_by(Tenant.name)))
    if name is not None:
        for tenant in tenants:
            if tenant.name == name:
                return str(tenant.id)
        raise _Refused(f"no tenant named {name!r}; tenants: {[t.name for t in tenants]}")
    if len(tenants) == 1:
        return str(tenants[0].id)
    if not tenants:
        raise _Refused("no tenant yet: create one with `switchyard tenants create NAME`")
    raise _Refused(f"name the tenant with --tenant; tenants: {[t.name for t in tenants]}")


async def _run(
    settings: Settings, flow: str, fields: dict[str, Any], tenant: str | None
) -> tuple[DryRun, bool]:
    from core.db.migrate import assert_migrated
    from core.demo import start_claude_sandbox
    from core.services import build_services

    settings, sandbox = start_claude_sandbox(settings)
    try:
        services = build_services(settings)
        try:
            await assert_migrated(services.engine)
            tenant_id = await _tenant_id(services, tenant)
            record_id = str(fields.get("Id") or fields.get("id") or "dry-run")
            run = await dry_run(services, flow, fields, tenant_id=tenant_id, record_id=record_id)
        finally:
            await services.aclose()
    finally:
        if sandbox is not None:
            sandbox.stop()
    return run, sandbox is not None


def _show(run: DryRun, sandboxed: bool) -> None:
    echo = typer.echo
    echo(f"flow     {run.flow}  (prompt {run.prompt}, task {run.task}, trace {run.trace_id})")
    redacted = ", ".join(f"{k} {v}" for k, v in run.redacted.items()) or "none"
    echo(f"sent     fields {', '.join(run.fields_sent)}; redacted: {redacted}")
    if run.skipped:
        echo(f"skipped  {run.skipped} (Claude was not called)")
        return
    where = " (Anthropic SANDBOX: no SWITCHYARD_ANTHROPIC_API_KEY set)" if sandboxed else ""
    echo(f"model    {run.model}{where}; cost ${run.cost_usd:.6f}")
    echo("--- user turn, as sent " + "-" * 40)
    echo(run.user.rstrip())
    echo("--- answer" + (" (after one repair)" if run.repaired else "") + " " + "-" * 40)
    echo(json.dumps(run.output, indent=2, ensure_ascii=False))
    echo("--- patch (not written) " + "-" * 40)
    echo(json.dumps(run.patch, indent=2, ensure_ascii=False) if run.patch else "(no change)")
    echo(f"review   {run.review or 'no: the write would go straight to the record'}")


def dry_run_command(
    flow: Annotated[str, typer.Argument(help="The flow, e.g. salesforce/lead_qualification.")],
    record: Annotated[
        Path, typer.Option("--record", help="A JSON file holding the record's fields.")
    ],
    tenant: Annotated[
        str | None, typer.Option(help="Tenant the call is recorded under (default: the only).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Dry run: one record through a flow, showing the prompt, model, answer and patch."""
    try:
        fields = _record(record)
        run, sandboxed = asyncio.run(_run(load_settings(), flow, fields, tenant))
    except _Refused as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    except SwitchyardError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(code=1) from None
    if as_json:
        typer.echo(json.dumps({**run.as_dict(), "sandbox": sandboxed}, indent=2))
    else:
        _show(run, sandboxed)
