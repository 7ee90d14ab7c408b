"""Values for a JSON Schema, made up deterministically by the SANDBOX's "model".

:func:`generate` returns a value valid against the subset of JSON Schema tool definitions
use: ``type`` (one or a list), ``enum``/``const``, objects (``properties``, ``required``;
optional properties included by coin flip), strings (``minLength``/``maxLength``, a few
``format``s), numbers and integers (``minimum``/``maximum``, exclusive bounds,
``multipleOf`` for integers), booleans, null, arrays (``items``, ``minItems``/``maxItems``),
``anyOf``/``oneOf`` (first branch), ``allOf`` (merged) and local ``$ref``s. ``pattern`` is
not honoured. :func:`break_input` makes a tool input that violates its schema.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

WORDS = (
    "account", "renewal", "invoice", "priority", "customer", "billing", "contract",
    "escalate", "refund", "shipping", "region", "support", "update", "pending", "review",
    "order", "status", "ticket", "urgent", "standard",
)  # fmt: skip
MAX_DEPTH = 8


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    seen = 0
    while "$ref" in schema and seen < MAX_DEPTH:
        ref = str(schema["$ref"])
        target: Any = root
        if not ref.startswith("#"):
            return {}
        for part in (p for p in ref[1:].split("/") if p):
            target = target.get(part.replace("~1", "/").replace("~0", "~"), {})
        schema = target if isinstance(target, Mapping) else {}
        seen += 1
    return schema


def _type_of(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def _string(schema: Mapping[str, Any], rng: random.Random) -> str:
    fmt = schema.get("format")
    if fmt == "date-time":
        text = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T12:00:00Z"
    elif fmt == "date":
        text = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    elif fmt == "email":
        text = f"{rng.choice(WORDS)}@example.com"
    elif fmt == "uuid":
        text = "%08x-%04x-4%03x-8%03x-%012x" % (  # noqa: UP031
            rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(12),
            rng.getrandbits(12), rng.getrandbits(48),
        )  # fmt: skip
    elif fmt == "uri":
        text = f"https://example.com/{rng.choice(WORDS)}"
    else:
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
    low = int(schema.get("minLength", 0))
    high = int(schema.get("maxLength", max(low, len(text))))
    while len(text) < low:
        text += " " + rng.choice(WORDS)
    return text[: max(low, min(high, len(text)))]


def _bound(schema: Mapping[str, Any], key: str) -> float | None:
    value = schema.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _number(schema: Mapping[str, Any], rng: random.Random, integer: bool) -> int | float:
    step = 1.0 if integer else 1e-6
    lows = [_bound(schema, "minimum")]
    highs = [_bound(schema, "maximum")]
    ex_low, ex_high = _bound(schema, "exclusiveMinimum"), _bound(schema, "exclusiveMaximum")
    lows.append(None if ex_low is None else ex_low + step)
    highs.append(None if ex_high is None else ex_high - step)
    low = max((v for v in lows if v is not None), default=None)
    high = min((v for v in highs if v is not None), default=None)
    if low is None:
        low = 0.0 if high is None else high - 100
    if high is None:
        high = low + 100
    if not integer:
        return min(high, max(low, round(rng.uniform(low, high), 4))) if low < high else low
    lo, hi = math.ceil(low), math.floor(high)
    multiple = schema.get("multipleOf")
    if isinstance(multiple, int) and multiple > 0:
        first, last = math.ceil(lo / multiple), math.floor(hi / multiple)
        return rng.randint(first, max(first, last)) * multiple
    return rng.randint(lo, max(lo, hi))


def generate(
    schema: Mapping[str, Any],
    rng: random.Random,
    root: Mapping[str, Any] | None = None,
    depth: int = 0,
) -> Any:
    """A value valid against ``schema`` (within the supported subset)."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return rng.choice(schema["enum"])
    for combinator in ("anyOf", "oneOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            return generate(options[0], rng, root, depth + 1)
    parts = schema.get("allOf")
    if isinstance(parts, list) and parts:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in parts:
            for key, value in _resolve(part, root).items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required":
                    merged["required"] = [*merged.get("required", []), *value]
                else:
                    merged.setdefault(key, value)
        return generate(merged, rng, root, depth + 1)
    kind = _type_of(schema)
    if kind == "object":
        return _object(schema, rng, root, depth)
    if kind == "array":
        items = schema.get("items", {})
        low = int(schema.get("minItems", 1 if depth < MAX_DEPTH else 0))
        high = int(schema.get("maxItems", max(low, 3)))
        count = rng.randint(low, max(low, min(high, low + 3))) if depth < MAX_DEPTH else low
        return [generate(items, rng, root, depth + 1) for _ in range(count)]
    if kind == "string":
        return _string(schema, rng)
    if kind in ("integer", "number"):
        return _number(schema, rng, kind == "integer")
    if kind == "boolean":
        return rng.random() < 0.5
    return None


def _object(
    schema: Mapping[str, Any], rng: random.Random, root: Mapping[str, Any], depth: int
) -> dict[str, Any]:
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    value: dict[str, Any] = {}
    for name, sub in properties.items():
        if name in required or (depth < MAX_DEPTH and rng.random() < 0.5):
            value[name] = generate(sub, rng, root, depth + 1)
    for name in required - value.keys():
        value[name] = "value"  # required without a property schema: anything goes
    return value


def break_input(schema: Mapping[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    """``value`` changed so it violates ``schema``: a required field dropped, an enum value
    replaced, a type swapped, or (last resort) an unexpected field added."""
    broken = dict(value)
    required = [name for name in schema.get("required") or () if name in broken]
    if required:
        del broken[required[0]]
        return broken
    properties = schema.get("properties") or {}
    for name, sub in properties.items():
        sub = _resolve(sub, schema)
        if isinstance(sub.get("enum"), list):
            broken[name] = "__sandbox_not_in_enum__"
            return broken
    for name, sub in properties.items():
        kind = _type_of(_resolve(sub, schema))
        broken[name] = 12345 if kind == "string" else "__sandbox_wrong_type__"
        return broken
    broken["__sandbox_unexpected__"] = True
    return broken
