"""``switchyard flows validate|list|schema|test``: flow files checked before they are deployed.

``validate`` is meant for CI and editors' terminals: it prints every problem as
``file:line:col: severity[code]: message`` (the format compilers use, so editors can jump
to it) and exits 1 when any error remains; warnings never fail a run. It works offline: no
connection is contacted, so checks that need a platform's field metadata or a connection's
kind are left to the API, which has them.

``schema`` keeps ``mappings/schema.json`` generated from the pydantic model, never edited by
hand; ``--check`` lets a test or CI job fail when someone changed the model and forgot it.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from core.errors import SettingsError, SwitchyardError
from core.flows.catalog import PROMPTS_DIR, FlowEntry, flow_files, load_entries
from core.flows.cli_dryrun import dry_run_command
from core.flows.prompts import Prompt, PromptRegistry, load_prompt
from core.flows.spec import FlowSpec
from core.flows.validate import FlowCheck, Problem, validate_flow
from core.settings import load_settings

SCHEMA_FILE = "schema.json"

flows_app = typer.Typer(
    help="Flow files: validate them, list them, generate their JSON Schema.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _mappings_dir() -> Path:
    try:
        return load_settings().mappings_dir
    except SwitchyardError as exc:
        raise _fail(exc.detail) from None


def flow_schema_text() -> str:
    """``mappings/schema.json`` as it must read: stable order, so diffs show real changes."""
    schema = FlowSpec.model_json_schema(by_alias=True)
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def load_prompts(root: Path) -> tuple[PromptRegistry, list[Problem]]:
    """The prompts under ``root`` that load, and a problem for each that does not.

    Unlike :meth:`PromptRegistry.load` (which stops a start), a validator reports a broken
    prompt and goes on, so one run shows everything to fix.
    """
    prompts: dict[str, Prompt] = {}
    problems: list[Problem] = []
    for path in sorted(root.glob("*/*.yaml")):
        try:
            prompt = load_prompt(path)
        except SettingsError as exc:
            problems.append(
                Problem(
                    str(path),
                    1,
                    1,
                    "error",
                    "prompt-invalid",
                    exc.detail,
                    "a prompt file holds description, system and user (with {{ slots }})",
                )
            )
        else:
            prompts[prompt.ref] = prompt
    return PromptRegistry(prompts), problems


def _targets(path: Path) -> tuple[Path, list[Path]]:
    """The mappings root ``path`` belongs to, and the flow files it names.

    A path is a flow file, a platform directory (``mappings/salesforce``), a mappings root
    or its ``prompts/``; prompts are always read (and checked) from the root's
    ``prompts/``.
    """
    if path.is_file():
        return path.parent.parent, [path]
    if not path.is_dir():
        raise _fail(f"{path}: no such file or directory")
    if path.name == PROMPTS_DIR:
        return path.parent, []  # the prompt files alone
    files = flow_files(path)
    if files or (path / PROMPTS_DIR).is_dir():
        return path, files
    return path.parent, sorted(path.glob("*.yaml"))


def run_validation(paths: list[Path]) -> tuple[list[FlowCheck], list[Problem]]:
    """Validate the flows under ``paths``; also the problems of the prompt files read."""
    checks: list[FlowCheck] = []
    prompt_problems: list[Problem] = []
    registries: dict[Path, PromptRegistry] = {}
    for path in paths:
        root, files = _targets(path)
        if root not in registries:
            registries[root], problems = load_prompts(root / PROMPTS_DIR)
            prompt_problems += problems
        checks += [validate_flow(file, registries[root]) for file in files]
    return checks, prompt_problems


@flows_app.command("validate")
def validate_command(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Flow files or directories (default: the mappings directory)."),
    ] = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="text, or json (a list of problems).")
    ] = OutputFormat.TEXT,
) -> None:
    """Check flow files and their prompts; exit 1 if any error (warnings pass)."""
    checks, prompt_problems = run_validation(paths or [_mappings_dir()])
    problems = prompt_problems + [p for check in checks for p in check.problems]
    errors = sum(problem.severity == "error" for problem in problems)
    if output_format is OutputFormat.JSON:
        typer.echo(json.dumps([problem.as_dict() for problem in problems], indent=2))
    else:
        for problem in problems:
            typer.echo(
                f"{problem.file}:{problem.line}:{problem.column}: "
                f"{problem.severity}[{problem.code}]: {problem.message}"
            )
            if problem.hint:
                typer.echo(f"    hint: {problem.hint}")
        warnings = len(problems) - errors
        invalid = sum(not check.ok for check in checks)
        typer.echo(
            f"{len(checks)} flow(s) checked, {invalid} invalid: "
            f"{errors} error(s), {warnings} warning(s)"
        )
    if errors:
        raise typer.Exit(code=1)


@flows_app.command("list")
def list_command(
    path: Annotated[
        Path | None, typer.Argument(help="A mappings directory (default: the settings').")
    ] = None,
) -> None:
    """Each flow, the connector and object it reads, and whether it is valid."""
    root = path or _mappings_dir()
    if not root.is_dir():
        raise _fail(f"{root}: no such directory")
    prompts, problems = load_prompts(root / PROMPTS_DIR)
    for problem in problems:
        typer.echo(str(problem), err=True)
    entries = load_entries(root, prompts)
    if not entries:
        typer.echo(f"no flows under {root}", err=True)
    width = max((len(entry.name) for entry in entries), default=0)
    for entry in entries:
        typer.echo(f"{entry.name:<{width}}  {_source(entry):<32} {_status(entry)}")


def _source(entry: FlowEntry) -> str:
    return f"{entry.source.connector}/{entry.source.object}" if entry.source else "-"


def _status(entry: FlowEntry) -> str:
    errors = sum(problem.severity == "error" for problem in entry.problems)
    warnings = len(entry.problems) - errors
    status = "ok" if not errors else f"invalid: {errors} error(s)"
    return status + (f", {warnings} warning(s)" if warnings else "")


@flows_app.command("schema")
def schema_command(
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 if the file is stale; write nothing.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(help="The schema file (default: schema.json in the mappings directory)."),
    ] = None,
) -> None:
    """Write the flow files' JSON Schema, generated from the flow model."""
    target = output or _mappings_dir() / SCHEMA_FILE
    text = flow_schema_text()
    if check:
        current = target.read_text(encoding="utf-8") if target.is_file() else None
        if current != text:
            state = "is missing" if current is None else "is stale (the flow model changed)"
            typer.echo(
                f"{target} {state}: run `switchyard flows schema` and commit the result",
                err=True,
            )
            raise typer.Exit(code=1)
        typer.echo(f"{target} is up to date")
        return
    target.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {target}")


flows_app.command("test")(dry_run_command)
