"""What leaves the company for one record: the flow's ``inputs`` allow-list, made into text.

A record may hold hundreds of fields; only those a flow lists under ``inputs`` are read, and
each becomes one prompt variable. For every input, in order:

1. read ``field`` (dotted for related records: ``Account.Name`` is
   ``fields["Account"]["Name"]``; a missing key is null);
2. apply ``transform`` (a JMESPath expression over the value);
3. render to text: strings as they are, anything else as compact JSON, null as ``""``;
4. ``redact``: ``mask`` gives ``[masked]``; ``pseudonymize`` gives ``<input>_<hmac>``, a
   token equal values share (within a tenant's key) so Claude can still see that two
   records name the same person, while the value itself cannot be recovered;
5. ``max_chars``: cut, ending with ``…`` (counted in the limit).

Redaction comes before the cut and replaces the whole value: a pseudonym of a truncated
value would give two long values sharing a prefix the same token. Empty values are neither
redacted (there is nothing to hide) nor sent as anything but ``""``.

The result carries a digest of the values so a job can record what was sent without
storing it, and the inputs marked ``required`` that came out empty (the engine then skips
the job instead of asking Claude about nothing).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectors.base import Record
from core.errors import TerminalError
from core.flows import expressions
from core.flows.spec import FlowSpec, InputSpec, Redaction

MASK = "[masked]"
ELLIPSIS = "…"
PSEUDONYM_HEX = 10
MIN_PSEUDONYM_KEY = 16


class InputError(TerminalError):
    """An input's transform failed on this record's value; the same record fails again."""

    problem_type = "flow-input-invalid"
    title = "A flow input could not be prepared from the record"
    status = 422


@dataclass(frozen=True)
class PromptInputs:
    """The prompt variables for one record, and what the job records about them."""

    values: dict[str, str]  # input name -> text placed in the prompt
    fields_used: tuple[str, ...]  # source field paths read, sorted
    redacted: dict[str, int]  # redaction mode -> number of inputs redacted that way
    truncated: tuple[str, ...]  # input names cut at max_chars
    missing_required: tuple[str, ...]  # required inputs that came out empty
    sha256: str  # digest of the canonical JSON of ``values``


def build_inputs(spec: FlowSpec, record: Record, *, pseudonym_key: bytes) -> PromptInputs:
    """Read, transform, render, redact and cut each input of ``spec`` from ``record``."""
    if len(pseudonym_key) < MIN_PSEUDONYM_KEY and any(
        item.redact is Redaction.PSEUDONYMIZE for item in spec.inputs.values()
    ):
        # With a short or empty key the token is a plain hash: guessable values reverse it.
        raise ValueError(f"pseudonym_key must hold at least {MIN_PSEUDONYM_KEY} bytes")
    values: dict[str, str] = {}
    redacted: Counter[str] = Counter()
    truncated: list[str] = []
    missing: list[str] = []
    for name, item in spec.inputs.items():
        value = _transformed(name, item, read_field(record.fields, item.field))
        empty = is_empty(value)
        text = "" if empty else render(value)
        if item.redact is not None and not empty:
            text = _redact(name, item.redact, text, pseudonym_key)
            redacted[item.redact.value] += 1
        if item.max_chars is not None and len(text) > item.max_chars:
            text = text[: item.max_chars - 1] + ELLIPSIS
            truncated.append(name)
        if item.required and empty:
            missing.append(name)
        values[name] = text
    return PromptInputs(
        values=values,
        fields_used=tuple(sorted({item.field for item in spec.inputs.values()})),
        redacted=dict(redacted),
        truncated=tuple(truncated),
        missing_required=tuple(missing),
        sha256=values_digest(values),
    )


def read_field(fields: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path through nested mappings; null where any step is missing.

    A key spelled with the dots itself (some platforms flatten related fields) wins.
    """
    if path in fields:
        return plain(fields[path])
    current: Any = fields
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    return plain(current)


def is_empty(value: Any) -> bool:
    """Nothing to send: null, blank text, or an empty list or object."""
    if isinstance(value, str):
        return not value.strip()
    return value is None or (isinstance(value, list | dict) and not value)


def render(value: Any) -> str:
    """Text for the prompt: strings unchanged, everything else compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def pseudonym(name: str, text: str, key: bytes) -> str:
    """``<name>_<first hex of HMAC-SHA256(key, text)>``: stable per key, not reversible."""
    digest = hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{name}_{digest[:PSEUDONYM_HEX]}"


def values_digest(values: Mapping[str, str]) -> str:
    """SHA-256 of the canonical JSON of the prompt values (sorted keys, no spaces)."""
    canonical = json.dumps(dict(values), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _transformed(name: str, item: InputSpec, value: Any) -> Any:
    if item.transform is None:
        return value
    try:
        return expressions.evaluate(item.transform, value)
    except expressions.ExpressionError:
        # Not chained, and the reason not quoted: JMESPath's message quotes the value,
        # which is record data that may be exactly what redaction is meant to hide.
        raise InputError(
            f"input {name!r} (field {item.field}): transform {item.transform!r} "
            f"failed on a {json_type(value)} value",
            input=name,
            field=item.field,
        ) from None


def _redact(name: str, mode: Redaction, text: str, key: bytes) -> str:
    if mode is Redaction.MASK:
        return MASK
    return pseudonym(name, text, key)


def json_type(value: Any) -> str:
    """The JSON type name of a value, for messages that must not show the value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object" if isinstance(value, Mapping) else "array"


def plain(value: Any) -> Any:
    """Plain dicts and lists: JMESPath's type checks know no other mappings or sequences."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value
