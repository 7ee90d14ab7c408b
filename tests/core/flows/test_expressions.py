"""Switchyard's JMESPath functions, by their documented properties."""

from __future__ import annotations

import contextlib
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.flows.expressions import ExpressionError, compile_expression, evaluate, truthy

SETTINGS = settings(max_examples=200, deadline=None)
json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@SETTINGS
@given(text=st.text(), n=st.integers(-5, 50))
def test_truncate_is_a_prefix_no_longer_than_n(text: str, n: int) -> None:
    result = evaluate("truncate(s, n)", {"s": text, "n": n})
    assert len(result) <= max(n, 0)
    assert text.startswith(result)
    assert result == text or len(result) == max(n, 0)  # as long as allowed


@SETTINGS
@given(text=st.text())
def test_upper_and_lower_are_idempotent(text: str) -> None:
    upper = evaluate("upper(s)", {"s": text})
    lower = evaluate("lower(s)", {"s": text})
    assert evaluate("upper(upper(s))", {"s": text}) == upper
    assert evaluate("lower(lower(s))", {"s": text}) == lower
    assert upper == text.upper()
    assert lower == text.lower()


@SETTINGS
@given(units=st.integers(-(10**12), 10**12), scale=st.integers(0, 6), digits=st.integers(-3, 6))
def test_round_is_decimal_half_away_from_zero(units: int, scale: int, digits: int) -> None:
    # The value is units / 10**scale, exact in decimal; the expected result is worked out
    # in integers, independently of the decimal module the implementation uses.
    value: float | int = float(Decimal(units).scaleb(-scale)) if scale else units
    drop = max(scale - digits, 0)
    quotient, rest = divmod(abs(units), 10**drop)
    if drop and 2 * rest >= 10**drop:
        quotient += 1
    kept = Decimal(quotient if units >= 0 else -quotient).scaleb(drop - scale)
    expected = int(kept) if digits <= 0 else float(kept)
    result = evaluate("round(v, d)", {"v": value, "d": digits})
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("value", "digits", "expected"),
    [
        (2.5, 0, 3),
        (-2.5, 0, -3),
        (0.125, 2, 0.13),
        (2.675, 2, 2.68),
        (1250, -2, 1300),
        (1.0, 1, 1.0),
    ],
)
def test_round_rounds_as_people_do(value: float, digits: int, expected: float) -> None:
    assert evaluate("round(v, d)", {"v": value, "d": digits}) == expected


def test_round_of_a_huge_number_is_an_expression_error_at_worst() -> None:
    # quantize beyond the decimal context's 28 digits raises InvalidOperation
    with contextlib.suppress(ExpressionError):
        evaluate("round(v, `2`)", {"v": 1e30})


@SETTINGS
@given(
    table=st.dictionaries(st.text(max_size=5), json_values, max_size=5),
    value=st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=5),
    default=json_values,
    pick_a_key=st.booleans(),
)
def test_lookup_gives_the_table_value_or_the_default(
    table: dict[str, Any], value: Any, default: Any, pick_a_key: bool
) -> None:
    if pick_a_key and table:
        value = next(iter(table))
    key = None if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    expected = default if key is None else table.get(key, default)
    assert evaluate("lookup(v, t, d)", {"v": value, "t": table, "d": default}) == expected


def test_lookup_reads_numbers_and_booleans_as_their_json_text() -> None:
    table = {"1": "one", "true": "yes"}
    assert evaluate("lookup(v, t, 'none')", {"v": 1, "t": table}) == "one"
    assert evaluate("lookup(v, t, 'none')", {"v": True, "t": table}) == "yes"
    assert evaluate("lookup(v, t, 'none')", {"v": None, "t": table}) == "none"


@SETTINGS
@given(values=st.lists(st.sampled_from([None, ""]) | json_values, min_size=1, max_size=6))
def test_coalesce_gives_the_first_value_neither_null_nor_empty(values: list[Any]) -> None:
    arguments = ", ".join(f"v[{i}]" for i in range(len(values)))
    expected = next((v for v in values if v is not None and v != ""), None)
    assert evaluate(f"coalesce({arguments})", {"v": values}) == expected


@pytest.mark.parametrize(
    "expression",
    [
        "truncate(missing, `3`)",
        "upper(missing)",
        "lower(missing)",
        "trim(missing)",
        "replace(missing, 'a', 'b')",
        "round(missing, `2`)",
        "coalesce(missing, '')",
        "upper(trim(record.Account.Name))",
    ],
)
def test_null_propagates_instead_of_failing(expression: str) -> None:
    assert evaluate(expression, {"record": {}}) is None


@SETTINGS
@given(text=st.text())
def test_trim_and_replace_match_python(text: str) -> None:
    assert evaluate("trim(s)", {"s": text}) == text.strip()
    assert evaluate("replace(s, 'a', 'b')", {"s": text}) == text.replace("a", "b")


def test_misuse_and_bad_syntax_raise_expression_errors() -> None:
    with pytest.raises(ExpressionError, match="failed"):
        evaluate("upper(@)", 5)
    with pytest.raises(ExpressionError, match="invalid expression"):
        compile_expression("output.[")
    with pytest.raises(ExpressionError):
        evaluate("now_iso()", {})  # deliberately absent: expressions are deterministic


@SETTINGS
@given(value=json_values)
def test_truthy_follows_jmespath(value: Any) -> None:
    assert truthy(value) == bool(evaluate("v && `true`", {"v": value}))


@pytest.mark.parametrize("zero", [0, 0.0])
def test_zero_is_true_as_in_jmespath(zero: float) -> None:
    assert evaluate("v && `true`", {"v": zero}) is True
    assert truthy(zero)
