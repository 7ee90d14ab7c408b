"""The made-up tool inputs: valid for many schema shapes, broken on request."""

from __future__ import annotations

import random
from typing import Any

import pytest

from core.sandbox.anthropic.schemagen import break_input, generate
from tests.core.sandbox.anthropic.schema_check import errors

SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {}},
    {
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date-time"},
            "email": {"type": "string", "format": "email"},
            "code": {"type": "string", "minLength": 30, "maxLength": 31},
            "tiny": {"type": "string", "maxLength": 2},
            "count": {"type": "integer", "exclusiveMinimum": 5, "exclusiveMaximum": 7},
            "even": {"type": "integer", "minimum": 1, "maximum": 9, "multipleOf": 2},
            "ratio": {"type": "number", "minimum": 0.25, "maximum": 0.5},
            "maybe": {"type": ["string", "null"]},
            "fixed": {"const": "v1"},
            "level": {"enum": [1, 2, 3]},
        },
        "required": ["when", "email", "code", "tiny", "count", "even", "ratio", "maybe", "fixed"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "$defs": {
            "line": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
                "required": ["sku", "qty"],
            }
        },
        "properties": {
            "lines": {
                "type": "array",
                "items": {"$ref": "#/$defs/line"},
                "minItems": 2,
                "maxItems": 4,
            },
            "matrix": {"type": "array", "items": {"type": "array", "items": {"type": "boolean"}}},
            "choice": {"anyOf": [{"type": "string", "enum": ["a"]}, {"type": "integer"}]},
            "merged": {
                "allOf": [
                    {"properties": {"x": {"type": "integer"}}, "required": ["x"]},
                    {"properties": {"y": {"type": "string"}}, "required": ["y"]},
                ]
            },
        },
        "required": ["lines", "matrix", "choice", "merged"],
    },
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_generated_values_are_valid(schema: dict[str, Any]) -> None:
    for seed in range(40):
        value = generate(schema, random.Random(seed))
        assert errors(schema, value) == [], (seed, value)
    assert generate(schema, random.Random(3)) == generate(schema, random.Random(3))


def test_broken_inputs_are_invalid() -> None:
    required = SCHEMAS[1]
    assert errors(required, break_input(required, generate(required, random.Random(0))))
    enum_only: dict[str, Any] = {"type": "object", "properties": {"tier": {"enum": ["a", "b"]}}}
    assert errors(enum_only, break_input(enum_only, {"tier": "a"}))
    typed: dict[str, Any] = {"type": "object", "properties": {"n": {"type": "integer"}}}
    assert errors(typed, break_input(typed, {"n": 1}))
    closed: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
    assert errors(closed, break_input(closed, {}))
