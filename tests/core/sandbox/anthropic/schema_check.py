"""An independent JSON Schema checker for the subset tool schemas use (tests only)."""

from __future__ import annotations

from typing import Any

TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        schema = target
    return schema


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, TYPES[kind])


def errors(schema: dict[str, Any], value: Any, root: dict[str, Any] | None = None) -> list[str]:
    """Every violation found (empty = valid)."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    found: list[str] = []
    if "const" in schema and value != schema["const"]:
        found.append(f"{value!r} != const")
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{value!r} not in enum")
    if "anyOf" in schema and all(errors(s, value, root) for s in schema["anyOf"]):
        found.append("no anyOf branch matches")
    for sub in schema.get("allOf", []):
        found += errors(sub, value, root)
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    if kinds and not any(_type_ok(k, value) for k in kinds):
        return [*found, f"{value!r} is not {kinds}"]
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                found.append(f"missing {name}")
        props = schema.get("properties", {})
        for name, item in value.items():
            if name in props:
                found += errors(props[name], item, root)
            elif schema.get("additionalProperties") is False:
                found.append(f"unexpected {name}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            found.append("too short")
        if len(value) > schema.get("maxLength", len(value)):
            found.append("too long")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            found.append("below minimum")
        if "maximum" in schema and value > schema["maximum"]:
            found.append("above maximum")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            found.append("not above exclusiveMinimum")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            found.append("not below exclusiveMaximum")
        if "multipleOf" in schema and value % schema["multipleOf"]:
            found.append("not a multiple")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            found.append("too few items")
        if len(value) > schema.get("maxItems", len(value)):
            found.append("too many items")
        for item in value:
            found += errors(schema.get("items", {}), item, root)
    return found
