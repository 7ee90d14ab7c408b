"""The checks a flow must pass beyond its shape: do its parts fit each other and the platform?

A flow can satisfy :class:`~core.flows.spec.FlowSpec` and still never work: the prompt it
names is absent, a slot of the prompt has no input, Claude is asked for a field that is
never written, a writeback reads an output that does not exist, a field is not on the
object. Each such mistake has its own stable code so tools and tests can rely on it.

The checks know nothing of files: each :class:`Finding` names the place in the flow by the
same key path pydantic uses, and :mod:`core.flows.validate` turns that into a line and
column. Output references are found on the JMESPath syntax tree, never in the text, so
``record.output.x`` or a string literal containing ``output.x`` is not mistaken for one.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from connectors.base import ConnectorKind, FieldMeta
from core.flows import expressions
from core.flows.locations import Loc, SourceMap
from core.flows.prompts import PromptRegistry
from core.flows.spec import FlowSpec, ReviewMode, ReviewWhen

Severity = Literal["error", "warning"]
Metadata = Mapping[str, Sequence[FieldMeta]]

# Nodes whose first child is evaluated in the enclosing context and the rest per element
# (or on the left's result), so a root name in them is not the root's.
_LEFT_THEN_INNER = frozenset(
    {"index_expression", "projection", "value_projection", "filter_projection", "pipe"}
)


@dataclass(frozen=True)
class Finding:
    """One problem, placed by key path; ``at_key`` blames the key rather than its value."""

    loc: Loc
    code: str
    message: str
    hint: str
    severity: Severity = "error"
    at_key: bool = False
    position: tuple[int, int] | None = None  # (line, column) when no key path names it


@dataclass(frozen=True)
class OutputRefs:
    """The output fields an expression reads; ``whole`` when it reads ``output`` entire."""

    names: frozenset[str]
    whole: bool


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice ``word`` was probably meant to be: same letters in another case first."""
    options = sorted(set(choices))
    lowered = {option.lower(): option for option in options}
    if word.lower() in lowered:
        return lowered[word.lower()]
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[str], *, listing: str = "") -> str:
    """A hint naming the closest choice, else listing them (``listing`` names the list)."""
    options = sorted(set(choices))
    near = closest(word, options)
    if near is not None:
        return f"did you mean {near!r}?"
    if not options:
        return ""
    shown = ", ".join(options[:20]) + (", ..." if len(options) > 20 else "")
    return f"{listing or 'choices'}: {shown}"


def output_refs(source: str) -> OutputRefs:
    """Which ``output.<field>`` an expression over ``{output, record, ...}`` reads."""
    names: set[str] = set()
    whole = False
    for name in _root_output_reads(expressions.compile_expression(source).parsed, root=True):
        if name is None:
            whole = True
        else:
            names.add(name)
    return OutputRefs(frozenset(names), whole)


def _root_output_reads(node: Mapping[str, Any], *, root: bool) -> Iterator[str | None]:
    """Names read as ``output.<name>`` from the root; None for ``output`` used whole."""
    kind = node.get("type")
    children: list[Mapping[str, Any]] = list(node.get("children", []))
    if kind == "subexpression":
        # `a.b.c` is flat: the head reads the current context, the rest read the head.
        while root and len(children) > 1 and children[0].get("type") == "current":
            children = children[1:]
        head, rest = children[0], children[1:]
        if root and rest and _is_field(head, "output"):
            name = _head_field(rest[0])
            yield name
            return
        yield from _root_output_reads(head, root=root)
        for child in rest:
            yield from _root_output_reads(child, root=False)
    elif kind in _LEFT_THEN_INNER:
        yield from _root_output_reads(children[0], root=root)
        for child in children[1:]:
            yield from _root_output_reads(child, root=False)
    elif kind == "expref":
        for child in children:
            yield from _root_output_reads(child, root=False)
    elif kind == "field" or kind == "current":
        if root and (kind == "current" or node.get("value") == "output"):
            yield None
    else:
        for child in children:
            yield from _root_output_reads(child, root=root)


def _is_field(node: Mapping[str, Any], name: str) -> bool:
    return node.get("type") == "field" and node.get("value") == name


def _head_field(node: Mapping[str, Any]) -> str | None:
    """The first name ``node`` reads (``tags`` in ``tags[0]``), None if it starts otherwise."""
    if node.get("type") == "field":
        value = node.get("value")
        return value if isinstance(value, str) else None
    if node.get("type") in _LEFT_THEN_INNER | {"subexpression", "flatten"}:
        children = node.get("children") or []
        return _head_field(children[0]) if children else None
    return None


def _exact_output_field(source: str) -> str | None:
    """``f`` when the expression is exactly ``output.f``: the value passes through as is."""
    parsed = expressions.compile_expression(source).parsed
    children = parsed.get("children", [])
    if parsed.get("type") == "subexpression" and len(children) == 2:
        head, field = children
        if _is_field(head, "output") and field.get("type") == "field":
            value = field.get("value")
            return value if isinstance(value, str) else None
    return None


def duplicate_key_findings(source_map: SourceMap) -> list[Finding]:
    """Keys written twice in one mapping: YAML keeps the last silently, we must not."""
    return [
        Finding(
            (),
            "duplicate-key",
            f"key {dup.key!r} is written twice (first on line {dup.first_line})",
            "remove one of them: YAML keeps only the last, silently",
            position=(dup.line, dup.column),
        )
        for dup in source_map.duplicate_keys()
    ]


def semantic_findings(
    spec: FlowSpec,
    prompts: PromptRegistry,
    *,
    metadata: Metadata | None = None,
    target_metadata: Metadata | None = None,
    target_kind: ConnectorKind | None = None,
    allow_unreviewed_erp_writes: bool = False,
) -> list[Finding]:
    """Every semantic problem of a flow that already has the right shape.

    Without ``target_metadata``, a writeback to the source's own connection is checked
    against ``metadata``: one connection describes both objects.
    """
    findings = [*_prompt_findings(spec, prompts), *_output_findings(spec)]
    if metadata is not None:
        findings += _source_field_findings(spec, metadata)
    same_connection = spec.writeback is not None and spec.writeback.connection is None
    targets = target_metadata
    if targets is None and same_connection:
        targets = metadata
    if targets is not None:
        findings += _writeback_field_findings(spec, targets)
    if (
        target_kind is ConnectorKind.ERP
        and spec.writeback is not None
        and spec.review is ReviewMode.NEVER
        and not allow_unreviewed_erp_writes
    ):
        findings.append(
            Finding(
                ("review",),
                "review-required",
                "this flow writes to an ERP without review (review: never)",
                "remove `review: never` (ERP writes are reviewed by default), or set the "
                "connection's allow_unreviewed_writes",
            )
        )
    return findings


def _prompt_findings(spec: FlowSpec, prompts: PromptRegistry) -> list[Finding]:
    prompt = prompts.get(spec.prompt)
    if prompt is None:
        return [_missing_prompt(spec, prompts)]
    findings: list[Finding] = []
    unused = set(spec.inputs) - prompt.slots
    for slot in sorted(prompt.slots - set(spec.inputs)):
        near = did_you_mean(slot, unused) if unused else ""
        findings.append(
            Finding(
                ("prompt",),
                "prompt-slot-unfilled",
                f"prompt {prompt.ref} has a slot {{{{ {slot} }}}} that no input fills",
                f"add inputs.{slot} (the source field it shows), or remove the slot from "
                f"{prompt.path}" + (f"; {near}" if near.startswith("did") else ""),
            )
        )
    for name in spec.inputs:
        if name not in prompt.slots:
            findings.append(
                Finding(
                    ("inputs", name),
                    "input-unused",
                    f"input {name!r} fills no slot of prompt {prompt.ref}, so it is never sent",
                    f"remove the input (fewer fields leave the company), or add "
                    f"{{{{ {name} }}}} to {prompt.path}",
                    severity="warning",
                    at_key=True,
                )
            )
    return findings


def _missing_prompt(spec: FlowSpec, prompts: PromptRegistry) -> Finding:
    name = spec.prompt_name
    versions = prompts.versions(name)
    if versions:
        hint = f"prompt {name} has " + ", ".join(f"{name}@{v}" for v in versions)
    else:
        names = {ref.split("@", 1)[0] for ref in prompts.refs()}
        hint = did_you_mean(name, names, listing="prompts") or (
            "no prompts exist yet: add mappings/prompts/<name>/<version>.yaml"
        )
    return Finding(("prompt",), "prompt-missing", f"prompt {spec.prompt} does not exist", hint)


def _output_readers(spec: FlowSpec) -> list[tuple[Loc, str]]:
    """Expressions evaluated over ``{output, ...}``; transforms see only their value (@)."""
    readers: list[tuple[Loc, str]] = []
    if spec.writeback is not None:
        for target, field in spec.writeback.fields.items():
            readers.append((("writeback", "fields", target, "from"), field.from_))
        if spec.writeback.record_id is not None:
            readers.append((("writeback", "record_id"), spec.writeback.record_id))
    if isinstance(spec.review, ReviewWhen):
        readers.append((("review", "when"), spec.review.when))
    return readers


def _output_findings(spec: FlowSpec) -> list[Finding]:
    fields = spec.output.fields
    findings: list[Finding] = []
    read: set[str] = set()
    whole = False
    for loc, source in _output_readers(spec):
        refs = output_refs(source)
        whole = whole or refs.whole
        read |= refs.names
        for name in sorted(refs.names - set(fields)):
            findings.append(
                Finding(
                    loc,
                    "writeback-output-unknown",
                    f"{source!r} reads output.{name}, which the output does not define",
                    did_you_mean(name, fields, listing="output fields"),
                )
            )
    # Without a writeback the whole result goes to the job and its callbacks: all used.
    if spec.writeback is None or whole:
        return findings
    for name in fields:
        if name not in read:
            findings.append(
                Finding(
                    ("output", "fields", name),
                    "output-never-used",
                    f"output field {name!r} is asked of Claude but never used",
                    f"write it somewhere (writeback.fields.<field>.from: output.{name}), "
                    "reference it in review.when, or remove it",
                    at_key=True,
                )
            )
    return findings


def _source_field_findings(spec: FlowSpec, metadata: Metadata) -> list[Finding]:
    obj = spec.source.object
    described = metadata.get(obj)
    if described is None:
        return []
    known = {meta.name for meta in described}
    findings: list[Finding] = []
    places: list[tuple[Loc, str]] = [
        (("inputs", name, "field"), spec_input.field.split(".", 1)[0])
        for name, spec_input in spec.inputs.items()
    ]
    places += [(("source", "when_changed", i), f) for i, f in enumerate(spec.source.when_changed)]
    for loc, field in places:
        if field not in known:
            findings.append(
                Finding(
                    loc,
                    "field-unknown",
                    f"{obj} has no field {field!r}",
                    did_you_mean(field, known, listing=f"{obj} fields"),
                )
            )
    return findings


def _writeback_field_findings(spec: FlowSpec, targets: Metadata) -> list[Finding]:
    assert spec.writeback is not None
    obj = spec.writeback.object or spec.source.object
    described = targets.get(obj)
    if described is None:
        return []
    by_name = {meta.name: meta for meta in described}
    findings: list[Finding] = []
    for target, field in spec.writeback.fields.items():
        meta = by_name.get(target)
        loc: Loc = ("writeback", "fields", target)
        if meta is None:
            findings.append(
                Finding(
                    loc,
                    "writeback-field-unknown",
                    f"{obj} has no field {target!r} to write",
                    did_you_mean(target, by_name, listing=f"{obj} fields"),
                    at_key=True,
                )
            )
        elif not meta.updateable:
            findings.append(
                Finding(
                    loc,
                    "writeback-read-only",
                    f"{obj}.{target} is read-only: the platform refuses writes to it",
                    "write to an updateable field instead, or remove this one",
                    at_key=True,
                )
            )
        elif field.transform is None and meta.picklist_values:
            findings += _enum_mismatch(spec, obj, target, field.from_, meta)
    return findings


def _enum_mismatch(
    spec: FlowSpec, obj: str, target: str, source: str, meta: FieldMeta
) -> list[Finding]:
    name = _exact_output_field(source)
    output = spec.output.fields.get(name) if name is not None else None
    if output is None or output.enum is None:
        return []
    missing = [value for value in output.enum if str(value) not in meta.picklist_values]
    if not missing:
        return []
    return [
        Finding(
            ("writeback", "fields", target, "from"),
            "enum-mismatch",
            f"output.{name} may be {', '.join(map(repr, missing))}, which {obj}.{target} "
            "does not accept",
            f"{obj}.{target} accepts {', '.join(meta.picklist_values)}: change "
            f"output.fields.{name}.enum to match, or map the values with a transform "
            "(lookup(@, `{...}`, null))",
        )
    ]
