"""Hypothesis strategies shared by the flow tests: output specs and answers that fit them."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

from core.flows.spec import OutputField, OutputSpec, OutputType

names = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
short_text = st.text(max_size=12)
ELEMENTS = [OutputType.STRING, OutputType.INTEGER, OutputType.NUMBER, OutputType.BOOLEAN]


@st.composite
def output_fields(draw: st.DrawFn) -> OutputField:
    kind = draw(st.sampled_from(list(OutputType)))
    spec: dict[str, Any] = {"type": kind, "required": draw(st.booleans())}
    if kind is OutputType.STRING:
        if draw(st.booleans()):
            spec["enum"] = draw(st.lists(short_text, min_size=1, max_size=4, unique=True))
        else:
            low = draw(st.none() | st.integers(0, 5))
            high = draw(st.none() | st.integers(max(1, low or 0), 30))
            spec |= {"min_length": low, "max_length": high}
    elif kind in (OutputType.INTEGER, OutputType.NUMBER):
        low = draw(st.none() | st.integers(-1000, 1000))
        high = draw(st.none() | st.integers(low if low is not None else -1000, 1000))
        spec |= {"minimum": low, "maximum": high}
    elif kind is OutputType.ARRAY:
        spec |= {
            "items": draw(st.sampled_from(ELEMENTS)),
            "max_items": draw(st.none() | st.integers(1, 5)),
        }
    return OutputField.model_validate(spec)


output_specs = st.builds(
    OutputSpec,
    fields=st.dictionaries(names, output_fields(), min_size=1, max_size=6),
)


def element_values(kind: OutputType) -> st.SearchStrategy[Any]:
    return {
        OutputType.STRING: short_text,
        OutputType.INTEGER: st.integers(-(10**6), 10**6),
        OutputType.NUMBER: st.floats(-1e6, 1e6, allow_nan=False) | st.integers(-(10**6), 10**6),
        OutputType.BOOLEAN: st.booleans(),
    }[kind]


def values_for(field: OutputField) -> st.SearchStrategy[Any]:
    """Values valid against ``field.json_schema()``."""
    if field.enum is not None:
        return st.sampled_from(field.enum)
    if field.type is OutputType.STRING:
        return st.text(min_size=field.min_length or 0, max_size=field.max_length or 20)
    if field.type is OutputType.INTEGER:
        low = None if field.minimum is None else math.ceil(field.minimum)
        high = None if field.maximum is None else math.floor(field.maximum)
        return st.integers(low, high)
    if field.type is OutputType.NUMBER:
        return st.floats(field.minimum, field.maximum, allow_nan=False, allow_infinity=False)
    if field.type is OutputType.BOOLEAN:
        return st.booleans()
    assert field.items is not None
    return st.lists(element_values(field.items), max_size=field.max_items or 4)


def answers_for(spec: OutputSpec) -> st.SearchStrategy[dict[str, Any]]:
    """Tool inputs valid against ``spec.json_schema()``: optional fields may be absent."""
    required = {name: values_for(f) for name, f in spec.fields.items() if f.required}
    optional = {name: values_for(f) for name, f in spec.fields.items() if not f.required}
    return st.fixed_dictionaries(required, optional=optional)
