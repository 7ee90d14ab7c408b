"""From a validated answer to the write: the flow's ``writeback`` as a plan.

Each writeback field takes a value over ``{output, record}`` (``from``, then ``transform``).
The plan is checked against the target's field metadata when the connector gave it, so a
flow naming a field that does not exist, is read-only, or a picklist value the platform
does not allow fails here, as a terminal error, instead of as a platform 400 after
review. Values equal to what the record already holds are dropped: rerunning a flow over
an unchanged answer writes nothing, and a reviewer sees only real changes (``before`` is
what they replace).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.base import FieldMeta, Patch, Record
from core.errors import TerminalError
from core.flows import expressions
from core.flows.inputs import json_type, plain
from core.flows.spec import WritebackAction, WritebackSpec

MAX_VALUE_CHARS = 80


class PatchError(TerminalError):
    """The writeback cannot be made from this answer; asking again gives the same plan."""

    problem_type = "flow-writeback-invalid"
    title = "The flow's writeback does not fit the target record"
    status = 422


@dataclass(frozen=True)
class PatchPlan:
    """What the write would change on one record, and what it leaves alone."""

    object: str
    record_id: str | None  # None: a new record (writeback action create)
    fields: dict[str, Any]  # target field -> new value
    unchanged: tuple[str, ...] = ()  # equal to the current value: not written
    skipped_null: tuple[str, ...] = ()  # null with skip_if_null: left alone
    before: dict[str, Any] = field(default_factory=dict)  # current values; None if unknown

    @property
    def empty(self) -> bool:
        return not self.fields

    def to_patch(self, expected_version: str | None) -> Patch:
        return Patch(self.object, self.record_id, dict(self.fields), expected_version)


def build_patch(
    writeback: WritebackSpec,
    *,
    output: Mapping[str, Any],
    record: Record,
    default_object: str,
    target_fields: Sequence[FieldMeta] | None = None,
    current: Mapping[str, Any] | None = None,
) -> PatchPlan:
    """Plan the write of ``output`` to the writeback's target record.

    ``current`` holds the target's present values when known (the source record's fields
    when it is the target); a field absent from it counts as changed, since an unknown
    value may differ.
    """
    data = {"output": plain(output), "record": plain(record.fields)}
    metadata = None if target_fields is None else {meta.name: meta for meta in target_fields}
    # A new record holds nothing yet: every field is a change.
    known = (current or {}) if writeback.action is WritebackAction.UPDATE else {}
    fields: dict[str, Any] = {}
    unchanged: list[str] = []
    skipped: list[str] = []
    for name, spec in writeback.fields.items():
        if metadata is not None:
            _check_writable(name, metadata)
        value = _evaluate(spec.from_, data, name)
        if spec.transform is not None:
            value = _evaluate(spec.transform, value, name, f"a {json_type(value)} value")
        if value is None and spec.skip_if_null:
            skipped.append(name)
        elif name in known and same_value(known[name], value):
            unchanged.append(name)
        else:
            if metadata is not None:
                _check_picklist(name, value, metadata[name])
            fields[name] = value
    return PatchPlan(
        object=writeback.object or default_object,
        record_id=_record_id(writeback, data, record),
        fields=fields,
        unchanged=tuple(unchanged),
        skipped_null=tuple(skipped),
        before={name: known.get(name) for name in fields},
    )


def same_value(old: Any, new: Any) -> bool:
    """Equal as the platform would store them: ``5 == 5.0``, but ``True`` is not ``1``,
    and text is compared exactly. Different types are different (a needless write of an
    equal value is harmless; a skipped write of a new one is not)."""
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool) and old == new
    if isinstance(old, int | float) and isinstance(new, int | float):
        return old == new
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return old.keys() == new.keys() and all(same_value(old[k], new[k]) for k in old)
    if isinstance(old, list | tuple) and isinstance(new, list | tuple):
        return len(old) == len(new) and all(map(same_value, old, new))
    return type(old) is type(new) and bool(old == new)


def _evaluate(source: str, data: Any, name: str, over: str = "{output, record}") -> Any:
    try:
        return expressions.evaluate(source, data)
    except expressions.ExpressionError:
        # The parser's reason quotes the value: answer and record data stay out of errors.
        raise PatchError(
            f"writeback field {name!r}: {source!r} failed over {over}", field=name
        ) from None


def _record_id(writeback: WritebackSpec, data: Mapping[str, Any], record: Record) -> str | None:
    """The target's id (None for a create); an expression that finds none fails rather
    than fall back to the source record, which would write to the wrong record."""
    if writeback.action is WritebackAction.CREATE:
        return None
    if writeback.record_id is None:
        return record.record_id
    value = _evaluate(writeback.record_id, data, "record_id")
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise PatchError(
            f"record_id {writeback.record_id!r} gave a {json_type(value)} value, not an id",
            field="record_id",
        )
    return str(value)


def check_fields(fields: Mapping[str, Any], target_fields: Sequence[FieldMeta] | None) -> None:
    """Each field exists on the target, is writable and, for a picklist, holds an allowed
    value (a reviewer's edit is checked like the flow's own patch); without metadata from
    the connector nothing can be checked."""
    if not target_fields:
        return
    metadata = {meta.name: meta for meta in target_fields}
    for name, value in fields.items():
        _check_writable(name, metadata)
        _check_picklist(name, value, metadata[name])


def _check_writable(name: str, metadata: Mapping[str, FieldMeta]) -> None:
    meta = metadata.get(name)
    if meta is None:
        raise PatchError(f"writeback field {name!r} does not exist on the target", field=name)
    if not meta.updateable:
        raise PatchError(f"writeback field {name!r} is read-only on the target", field=name)


def _check_picklist(name: str, value: Any, meta: FieldMeta) -> None:
    allowed = meta.picklist_values
    if not allowed or value is None:
        return
    for item in value if isinstance(value, list) else [value]:
        if (item if isinstance(item, str) else str(item)) not in allowed:
            raise PatchError(
                f"writeback field {name!r}: {_shown(item)} is not one of {list(allowed)}",
                field=name,
                allowed=list(allowed),
            )


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"
