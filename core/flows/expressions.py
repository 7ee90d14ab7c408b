"""The expression language of flow files: JMESPath plus a few documented functions.

Conditions, field paths and transforms in flow files are JMESPath (https://jmespath.org):
a small, well-specified query language with no way to call Python, loop forever or touch
anything but the data it is given. Switchyard adds these functions (all pure):

* ``truncate(s, n)`` — at most ``n`` characters;
* ``upper(s)``, ``lower(s)``, ``trim(s)``;
* ``replace(s, old, new)``;
* ``round(n, digits)`` — half away from zero, as people round;
* ``lookup(value, table, default)`` — ``table[value]`` (values as strings), else ``default``;
* ``coalesce(a, b, ...)`` — the first argument that is neither null nor ``""``;
* ``now_iso()`` is deliberately absent: an expression must give the same answer twice.

Null propagates: a string function given null returns null, so a missing field never
raises. Everything else (types, comparisons, ``&&``, ``||``, literals in backticks) is plain
JMESPath.
"""

from __future__ import annotations

import decimal
import functools
from typing import Any

import jmespath
from jmespath import exceptions as jmespath_errors
from jmespath import functions
from jmespath.parser import ParsedResult


class ExpressionError(ValueError):
    """An expression that does not parse, or fails while evaluating."""


ANY_TYPE = ["string", "number", "boolean", "null", "array", "object"]


class _Functions(functions.Functions):
    @functions.signature({"types": ["string", "null"]}, {"types": ["number"]})
    def _func_truncate(self, value: str | None, length: float) -> str | None:
        return None if value is None else value[: max(0, int(length))]

    @functions.signature({"types": ["string", "null"]})
    def _func_upper(self, value: str | None) -> str | None:
        return None if value is None else value.upper()

    @functions.signature({"types": ["string", "null"]})
    def _func_lower(self, value: str | None) -> str | None:
        return None if value is None else value.lower()

    @functions.signature({"types": ["string", "null"]})
    def _func_trim(self, value: str | None) -> str | None:
        return None if value is None else value.strip()

    @functions.signature(
        {"types": ["string", "null"]}, {"types": ["string"]}, {"types": ["string"]}
    )
    def _func_replace(self, value: str | None, old: str, new: str) -> str | None:
        return None if value is None else value.replace(old, new)

    @functions.signature({"types": ["number", "null"]}, {"types": ["number"]})
    def _func_round(self, value: float | None, digits: float) -> float | int | None:
        if value is None:
            return None
        places = int(digits)
        quantum = decimal.Decimal(1).scaleb(-places)
        rounded = decimal.Decimal(str(value)).quantize(quantum, rounding=decimal.ROUND_HALF_UP)
        return int(rounded) if places <= 0 else float(rounded)

    @functions.signature({"types": ANY_TYPE}, {"types": ["object"]}, {"types": ANY_TYPE})
    def _func_lookup(self, value: Any, table: dict[str, Any], default: Any) -> Any:
        if value is None:
            return default
        key = str(value).lower() if isinstance(value, bool) else str(value)
        return table.get(key, default)

    @functions.signature({"types": ANY_TYPE, "variadic": True})
    def _func_coalesce(self, *values: Any) -> Any:
        for value in values:
            if value is not None and value != "":
                return value
        return None


_OPTIONS = jmespath.Options(custom_functions=_Functions())


@functools.lru_cache(maxsize=4096)
def compile_expression(source: str) -> ParsedResult:
    """Parse once (cached); raise :class:`ExpressionError` with the parser's reason."""
    try:
        return jmespath.compile(source)
    except jmespath_errors.JMESPathError as exc:
        raise ExpressionError(f"invalid expression {source!r}: {_reason(exc)}") from None


def evaluate(source: str, data: Any) -> Any:
    """Evaluate ``source`` over ``data``; a function misuse raises :class:`ExpressionError`."""
    try:
        return compile_expression(source).search(data, options=_OPTIONS)
    except jmespath_errors.JMESPathError as exc:
        raise ExpressionError(f"expression {source!r} failed: {_reason(exc)}") from None
    except (decimal.InvalidOperation, OverflowError) as exc:  # round() of a huge number
        raise ExpressionError(f"expression {source!r} failed: {type(exc).__name__}") from None


def truthy(value: Any) -> bool:
    """JMESPath's truth: false, null, empty string, list and object are false; every
    number is true (0 too: ``0 == False`` in Python, so compare by identity)."""
    return not (value is None or value is False or value in ("", [], {}))


def _reason(exc: Exception) -> str:
    return " ".join(str(exc).split())
