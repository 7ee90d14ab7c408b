"""Checking a flow file, with every problem placed at a line and column.

Validation runs in fixed stages, each only if the one before produced something to check:

1. **YAML**: a syntax error is reported at the parser's mark (``yaml-syntax``); keys written
   twice are reported too (``duplicate-key``), since YAML silently keeps the last one.
2. **Shape**: :class:`~core.flows.spec.FlowSpec` validates the document; each pydantic error
   becomes one problem at its key or value (``unknown-key`` with a "did you mean",
   ``missing-key``, ``wrong-type``, ``invalid-choice``, ``invalid-value``,
   ``invalid-expression``, ``invalid-prompt-ref``).
3. **Meaning**: :func:`core.flows.checks.semantic_findings` (prompt, outputs, platform
   fields, review) on the valid spec.

Problems are values, not exceptions: a catalog keeps an invalid flow listed with its
problems, and ``switchyard flows validate`` prints them all at once rather than the first.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from connectors.base import ConnectorKind, FieldMeta
from core.flows import locations
from core.flows.checks import (
    Finding,
    Severity,
    closest,
    did_you_mean,
    duplicate_key_findings,
    semantic_findings,
)
from core.flows.expressions import ExpressionError
from core.flows.locations import Loc, SourceMap
from core.flows.prompts import PromptRegistry
from core.flows.spec import FlowSpec

Metadata = Mapping[str, Sequence[FieldMeta]]

_CHOICE_ERRORS = frozenset({"enum", "literal_error"})
_TYPE_ERRORS = frozenset({"int_from_float"})
_MAPPING_ERRORS = frozenset({"model_type", "model_attributes_type", "dict_type"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a flow file, where it is, and how to fix it."""

    file: str
    line: int
    column: int
    severity: Severity
    code: str  # stable kebab-case: tools and tests match on it, never on the message
    message: str
    hint: str = ""

    def __str__(self) -> str:
        text = (
            f"{self.file}:{self.line}:{self.column}: {self.severity}[{self.code}]: {self.message}"
        )
        return f"{text} (hint: {self.hint})" if self.hint else text

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class FlowCheck:
    """The outcome of validating one flow file.

    ``spec`` is set whenever the file has the right shape, even if semantic errors remain,
    so readers that need only part of it (the catalog's source matching) still can.
    ``document`` is the parsed YAML (None if it did not parse), for the same reason.
    """

    name: str
    path: Path
    spec: FlowSpec | None
    problems: list[Problem] = field(default_factory=list)
    document: Any = None

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == "error"]


def flow_name(path: Path) -> str:
    """``<platform>/<stem>``: the name jobs and enablements refer to."""
    return f"{path.parent.name}/{path.stem}"


def validate_flow(
    path: Path,
    prompts: PromptRegistry,
    *,
    metadata: Metadata | None = None,
    target_metadata: Metadata | None = None,
    target_kind: ConnectorKind | None = None,
    allow_unreviewed_erp_writes: bool = False,
) -> FlowCheck:
    """Validate the flow file at ``path``; an unreadable file is a problem, not an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem = Problem(
            str(path),
            1,
            1,
            "error",
            "unreadable",
            f"cannot read the file: {exc}",
            "check the file's permissions and that it is UTF-8 text",
        )
        return FlowCheck(flow_name(path), path, None, [problem])
    return validate_text(
        text,
        flow_name(path),
        prompts,
        file=str(path),
        metadata=metadata,
        target_metadata=target_metadata,
        target_kind=target_kind,
        allow_unreviewed_erp_writes=allow_unreviewed_erp_writes,
    )


def validate_text(
    text: str,
    name: str,
    prompts: PromptRegistry,
    *,
    file: str | None = None,
    metadata: Metadata | None = None,
    target_metadata: Metadata | None = None,
    target_kind: ConnectorKind | None = None,
    allow_unreviewed_erp_writes: bool = False,
) -> FlowCheck:
    """Validate a flow given as text (an upload, a test); ``file`` labels its problems."""
    label = file or name
    check = FlowCheck(name, Path(label), None)
    try:
        document, source_map = locations.load(text)
    except yaml.YAMLError as exc:
        check.problems.append(_syntax_problem(label, exc))
        return check
    check.document = document
    findings = duplicate_key_findings(source_map)
    try:
        spec = FlowSpec.model_validate(document)
    except ValidationError as exc:
        findings += shape_findings(exc.errors(), source_map)
    else:
        check.spec = spec
        findings += semantic_findings(
            spec,
            prompts,
            metadata=metadata,
            target_metadata=target_metadata,
            target_kind=target_kind,
            allow_unreviewed_erp_writes=allow_unreviewed_erp_writes,
        )
    check.problems = sorted(
        (_place(label, finding, source_map) for finding in findings),
        key=lambda p: (p.line, p.column, p.code),
    )
    return check


def _place(label: str, finding: Finding, source_map: SourceMap) -> Problem:
    line, column = finding.position or source_map.locate(finding.loc, at_key=finding.at_key)
    return Problem(
        label, line, column, finding.severity, finding.code, finding.message, finding.hint
    )


def _syntax_problem(label: str, exc: yaml.YAMLError) -> Problem:
    hint = "fix the YAML here; a wrong indentation, a missing ':' or an unclosed quote are usual"
    line, column, reason = 1, 1, str(exc)
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        reason = " ".join(part for part in (exc.context, exc.problem) if part) or reason
        if mark is not None:
            line, column = mark.line + 1, mark.column + 1
    return Problem(label, line, column, "error", "yaml-syntax", f"not valid YAML: {reason}", hint)


# --- pydantic errors → findings ------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    """Where a pydantic ``loc`` leads in the model: the key path without union tags, the
    model owning the last key, and the union (if any) whose member produced the error."""

    loc: Loc
    owner: type[BaseModel] | None
    field: FieldInfo | None
    union_at: Loc | None
    model_branch: bool
    expects: type[BaseModel] | None  # the model the value at ``loc`` should have been
    key: str  # the model key that ``field`` is written under


def _is_model(annotation: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _members(annotation: Any) -> list[Any]:
    """The alternatives of an annotation, unwrapped from Annotated and without None."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _members(get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [] if annotation is type(None) else [annotation]


def _model_field(model: type[BaseModel], key: str | int) -> FieldInfo | None:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info
    return None


def _keys(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _step(raw: tuple[str | int, ...]) -> _Step:
    """Follow ``raw`` through FlowSpec's annotations.

    Pydantic inserts the name of the member it tried (``ReviewWhen``,
    ``str-enum[ReviewMode]``) after every union with several members; those segments are
    not keys in the file and are dropped here, and the first one is remembered so the
    errors of the members the author did not mean can be set aside.
    """
    current: list[Any] = [FlowSpec]
    loc: list[str | int] = []
    owner: type[BaseModel] | None = None
    info: FieldInfo | None = None
    key = ""
    union_at: Loc | None = None
    model_branch = False
    for segment in raw:
        if len(current) > 1:
            chosen = [m for m in current if _is_model(m) and m.__name__ == segment]
            if union_at is None:
                union_at, model_branch = tuple(loc), bool(chosen)
            current = chosen or [m for m in current if not _is_model(m)][:1]
            continue
        loc.append(segment)
        target = current[0] if current else None
        origin = get_origin(target)
        if _is_model(target):
            owner, info, key = target, _model_field(target, segment), str(segment)
            current = _members(info.annotation) if info is not None else []
        elif origin is dict and segment != locations.KEY_SEGMENT:
            loc[-1] = str(segment)  # a YAML key `1:` arrives as an int; it is a key still
            current = _members(get_args(target)[1])
        elif origin is list:
            current = _members(get_args(target)[0])
        else:
            current = []
    expects = current[0] if len(current) == 1 and _is_model(current[0]) else None
    return _Step(tuple(loc), owner, info, union_at, model_branch, expects, key)


def _dotted(loc: Loc) -> str:
    text = ""
    for segment in loc:
        if isinstance(segment, int):
            text += f"[{segment}]"
        elif segment != locations.KEY_SEGMENT:
            text += f".{segment}" if text else str(segment)
    return text


def _described(step: _Step) -> str:
    description = step.field.description if step.field is not None else None
    return description.rstrip(".") if description else ""


def _yaml_kind(value: Any) -> str:
    """What the author wrote, in YAML's words rather than Python's."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if value is None:
        return "nothing (null)"
    if isinstance(value, int | float):
        return f"the number {value}"
    return f"the text {value!r}"


def _finding(error: ErrorDetails, step: _Step) -> Finding:
    kind, loc = error["type"], step.loc
    where = _dotted(loc)
    message = str(error["msg"]).removeprefix("Value error, ")
    described = _described(step)
    if kind == "extra_forbidden":
        key, parent = str(loc[-1]), _dotted(loc[:-1])
        allowed = _keys(step.owner) if step.owner is not None else []
        return Finding(
            loc,
            "unknown-key",
            f"unknown key {key!r}" + (f" in {parent}" if parent else ""),
            did_you_mean(key, allowed, listing="allowed keys"),
            at_key=True,
        )
    if kind == "missing":
        key, parent = str(loc[-1]), _dotted(loc[:-1])
        return Finding(
            loc,
            "missing-key",
            f"{parent or 'the flow'} needs the key {key!r}",
            (f"add {key}: under {parent}" if parent else f"add {key}: at the top level")
            + (f" ({described})" if described else ""),
        )
    if isinstance((error.get("ctx") or {}).get("error"), ExpressionError):
        return Finding(
            loc,
            "invalid-expression",
            f"{where}: {message}",
            "expressions are JMESPath (https://jmespath.org/specification.html); quote "
            "text as 'text' and literals as `1`",
        )
    if loc == ("prompt",) and kind == "value_error":
        return Finding(
            loc,
            "invalid-prompt-ref",
            f"prompt: {message}",
            "name a prompt file as name@version: mappings/prompts/<name>/<version>.yaml",
        )
    if step.expects is not None and kind in _MAPPING_ERRORS:
        found = _yaml_kind(error["input"])
        keys = ", ".join(_keys(step.expects))
        return Finding(
            loc,
            "wrong-type",
            f"{where or 'a flow file'} must be a mapping (key: value lines), not {found}",
            f"{where or 'a flow'} takes the keys {keys}",
        )
    if kind in _CHOICE_ERRORS:
        code = "invalid-choice"
    elif kind in _TYPE_ERRORS or kind.endswith(("_type", "_parsing")):
        code = "wrong-type"
    else:
        code = "invalid-value"
    hint = f"{step.key}: {described}" if described else ""
    return Finding(loc, code, f"{where}: {message}" if where else message, hint)


def shape_findings(errors: Sequence[ErrorDetails], source_map: SourceMap) -> list[Finding]:
    """One finding per pydantic error, once the errors of unmeant union members are gone.

    ``review: sometimes`` fails both as ``never | always`` and as ``{when: ...}``; only
    the member of the same kind as what was written (a mapping or a scalar) is reported.
    Errors left at one place with one code (``1.5`` is neither a string nor an integer)
    are merged into one finding.
    """
    steps = [(error, _step(tuple(error["loc"]))) for error in errors]
    kept: list[tuple[ErrorDetails, _Step]] = []
    for error, step in steps:
        if step.union_at is not None:
            wrote_mapping = isinstance(source_map.node(step.union_at), yaml.MappingNode)
            rivals = [s for _, s in steps if s.union_at == step.union_at]
            meant = [s for s in rivals if s.model_branch == wrote_mapping]
            if meant and step.model_branch != wrote_mapping:
                continue
        kept.append((error, step))
    # `promt:` is both an unknown key and a missing `prompt`; the first says it all.
    typos = {
        (step.loc[:-1], closest(str(step.loc[-1]), _keys(step.owner)))
        for error, step in kept
        if error["type"] == "extra_forbidden" and step.owner is not None
    }
    merged: dict[tuple[Loc, str], Finding] = {}
    for error, step in kept:
        if error["type"] == "missing" and (step.loc[:-1], str(step.loc[-1])) in typos:
            continue
        finding = _finding(error, step)
        key = (finding.loc, finding.code)
        if key in merged:
            earlier = merged[key]
            finding = dataclasses.replace(
                earlier, message=f"{earlier.message}; or {finding.message.split(': ', 1)[-1]}"
            )
        merged[key] = finding
    return list(merged.values())
