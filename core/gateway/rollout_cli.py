"""``switchyard prompts``: the prompt registry and rollouts from a terminal.

The same store as ``/v1/prompts`` (:mod:`core.gateway.rollout_store`): changes are audited
with the actor ``cli:<user>`` and apply to the next call of every running process.
"""

from __future__ import annotations

import getpass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer

from core.cli_support import fail, run, with_services
from core.db.models import RolloutSticky
from core.errors import SwitchyardError
from core.gateway import rollout_store
from core.gateway.prompt_usage import PromptComparison, compare_versions
from core.gateway.rollout_store import basis_points, percent

prompts_app = typer.Typer(
    help="Prompt versions and their rollouts (which share of calls a new version answers).",
    no_args_is_help=True,
)

Tenant = Annotated[str, typer.Option(help="Tenant name.")]
Name = Annotated[str, typer.Argument(help="The prompt's name, e.g. lead_qualification.")]


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


async def _tenant_id(services: Any, name: str) -> str:
    from core.auth import tenant_by_name

    async with services.sessions() as session:
        return str((await tenant_by_name(session, name)).id)


def _installed(services: Any, name: str) -> None:
    if not services.flows.prompts.versions(name):
        installed = sorted({ref.partition("@")[0] for ref in services.flows.prompts.refs()})
        raise fail(
            f"no prompt named {name!r} is installed under SWITCHYARD_MAPPINGS_DIR/prompts; "
            f"installed: {', '.join(installed) or 'none'}"
        )


def _describe(row: Any) -> str:
    return (
        f"{row.prompt}: {percent(row.share_basis_points):g}% of calls on version "
        f"{row.candidate_version} (sticky per {row.sticky}, rollout {row.id})"
    )


@prompts_app.command("list")
def list_prompts(tenant: Tenant) -> None:
    """Installed prompts: versions (used? edited?), the flows pinning them, rollouts."""

    async def body(services: Any) -> list[str]:
        tenant_id = await _tenant_id(services, tenant)
        recorded = await services.prompt_versions.recorded_digests()
        async with services.sessions() as session:
            rollouts = await rollout_store.rollouts(session, tenant_id)
        registry = services.flows.prompts
        lines = []
        for name in sorted({ref.partition("@")[0] for ref in registry.refs()}):
            users = rollout_store.users_of(services.flows, name)
            pins = ", ".join(f"{u.flow}@{u.pinned_version}" for u in users) or "no flow"
            lines.append(f"{name}  (pinned by {pins})")
            for version in registry.versions(name):
                prompt = registry.get(f"{name}@{version}")
                first = recorded.get(prompt.ref)
                state = "unused" if first is None else "used"
                if first is not None and first != prompt.digest:
                    state = "EDITED after use: calls refuse it"
                lines.append(f"  {prompt.ref:<40} {state}")
            if name in rollouts:
                lines.append(f"  rollout: {_describe(rollouts[name])}")
        return lines

    for line in run(lambda s: with_services(s, body)):
        typer.echo(line)


@prompts_app.command("rollout")
def start_or_change(
    name: Name,
    tenant: Tenant,
    version: Annotated[int, typer.Option(min=1, help="The candidate version.")],
    share: Annotated[str, typer.Option(help="Percent of calls for the candidate, e.g. 5.")],
    sticky: Annotated[
        RolloutSticky | None,
        typer.Option(help="record (default for a new rollout) or tenant."),
    ] = None,
) -> None:
    """Start a rollout of VERSION, or change its share: 1 → 5 → 50 → 100."""
    try:
        points = basis_points(Decimal(share))
    except InvalidOperation:
        raise fail(f"--share {share!r} is not a number; give a percent such as 5 or 0.5") from None
    except SwitchyardError as exc:
        raise fail(exc.detail) from None

    async def body(services: Any) -> str:
        _installed(services, name)
        tenant_id = await _tenant_id(services, tenant)
        async with services.sessions.begin() as session:
            row, _ = await rollout_store.put_rollout(
                session,
                services.flows,
                tenant_id=tenant_id,
                prompt=name,
                candidate_version=version,
                share_basis_points=points,
                sticky=sticky,
                actor=_actor(),
            )
            return _describe(row)

    typer.echo(run(lambda s: with_services(s, body)))


@prompts_app.command("rollback")
def rollback(name: Name, tenant: Tenant) -> None:
    """Every call back on the pinned version, from the next call (the rollout stays)."""

    async def body(services: Any) -> str:
        _installed(services, name)
        tenant_id = await _tenant_id(services, tenant)
        async with services.sessions.begin() as session:
            row, _ = await rollout_store.rollback(
                session, tenant_id=tenant_id, prompt=name, actor=_actor()
            )
            return _describe(row)

    typer.echo(f"rolled back: {run(lambda s: with_services(s, body))}")


@prompts_app.command("end")
def end(name: Name, tenant: Tenant) -> None:
    """Remove the rollout (after promoting: pin the candidate in the flow files first)."""

    async def body(services: Any) -> None:
        _installed(services, name)
        tenant_id = await _tenant_id(services, tenant)
        async with services.sessions.begin() as session:
            await rollout_store.end_rollout(
                session, tenant_id=tenant_id, prompt=name, actor=_actor()
            )

    run(lambda s: with_services(s, body))
    typer.echo(f"the rollout of {name} has ended; every call uses the pinned version")


@prompts_app.command("compare")
def compare(
    name: Name,
    tenant: Tenant,
    since: Annotated[
        datetime | None, typer.Option(help="ISO 8601 with a timezone; default 24 h ago.")
    ] = None,
    until: Annotated[datetime | None, typer.Option(help="ISO 8601 with a timezone.")] = None,
) -> None:
    """Versions side by side: calls, cost, latency, validation failures, review rejections."""

    async def body(services: Any) -> PromptComparison:
        tenant_id = await _tenant_id(services, tenant)
        pinned = frozenset(u.pinned_version for u in rollout_store.users_of(services.flows, name))
        async with services.sessions() as session:
            return await compare_versions(
                session, tenant_id, name, since=since, until=until, pinned=pinned
            )

    report = run(lambda s: with_services(s, body))
    typer.echo(f"{name}, {report.since.isoformat()} to {report.until.isoformat()}")
    if report.rollout is not None:
        typer.echo(
            f"rollout: {report.rollout.share_percent:g}% on version "
            f"{report.rollout.candidate_version}"
        )
    typer.echo(
        f"{'version':<10}{'arm':<11}{'calls':>7}{'cost $':>12}{'$/call':>11}{'p50 ms':>9}"
        f"{'p95 ms':>9}{'invalid':>9}{'rejected':>10}"
    )
    for row in report.versions:
        usage = row.usage
        per_call = usage.cost_usd / usage.requests if usage.requests else 0.0
        latency = usage.latency_ms
        typer.echo(
            f"{row.version:<10}{row.arm or '-':<11}{usage.requests:>7}{usage.cost_usd:>12.6f}"
            f"{per_call:>11.6f}{latency.p50 if latency else 0:>9.0f}"
            f"{latency.p95 if latency else 0:>9.0f}{row.validation_failure_rate:>9.1%}"
            f"{row.reviews.rejection_rate:>10.1%}"
        )
    if not report.versions:
        typer.echo("no calls used this prompt in the range")
