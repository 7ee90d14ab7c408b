"""SANDBOX: the SOQL subset the Salesforce sandbox understands.

``SELECT <fields> FROM <Object> [WHERE <condition>] [ORDER BY <field> [ASC|DESC], …]
[LIMIT <n>]``, where a condition combines ``<field> <op> <literal>`` with AND, OR, NOT and
parentheses; ops ``= != < <= > >=``; literals are 'quoted strings' (backslash escapes),
numbers, true/false/null and dateTime literals (``YYYY-MM-DDThh:mm:ssZ`` or ``±hh:mm``).
Enough for the connector's polling query and for tests; anything else is a
``MALFORMED_QUERY``, as Salesforce would answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_TOKEN = re.compile(
    r"\s*(?:(?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))"
    r"|(?P<num>-?\d+(?:\.\d+)?)|(?P<str>'(?:\\.|[^'\\])*')|(?P<op><=|>=|!=|<>|[=<>(),])"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"
)

Row = Mapping[str, Any]
Predicate = Callable[[Row], bool]


class SoqlError(ValueError):
    """The query is outside the subset (Salesforce: 400 MALFORMED_QUERY)."""


@dataclass(frozen=True)
class Query:
    fields: list[str]
    object: str
    where: Predicate
    order: list[tuple[str, bool]]  # (field, descending)
    limit: int | None


def as_datetime(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _tokens(text: str) -> list[tuple[str, str]]:
    found, position = [], 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise SoqlError(f"unexpected token at {text[position : position + 20]!r}")
        kind = match.lastgroup or ""
        found.append((kind, match.group(kind)))
        position = match.end()
    return found


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0

    def peek(self) -> str:
        return self.tokens[self.at][1] if self.at < len(self.tokens) else ""

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.at >= len(self.tokens):
            raise SoqlError("unexpected end of query")
        token = self.tokens[self.at]
        if expected is not None and token[1].upper() != expected:
            raise SoqlError(f"expected {expected}, found {token[1]!r}")
        self.at += 1
        return token

    def keyword(self, word: str) -> bool:
        if self.peek().upper() == word:
            self.at += 1
            return True
        return False

    def query(self) -> Query:
        self.take("SELECT")
        fields = [self.take()[1]]
        while self.keyword(","):
            fields.append(self.take()[1])
        self.take("FROM")
        object_name = self.take()[1]
        where: Predicate = lambda row: True  # noqa: E731
        if self.keyword("WHERE"):
            where = self.disjunction()
        order: list[tuple[str, bool]] = []
        if self.keyword("ORDER"):
            self.take("BY")
            while True:
                name = self.take()[1]
                descending = self.keyword("DESC")
                if not descending:
                    self.keyword("ASC")
                order.append((name, descending))
                if not self.keyword(","):
                    break
        limit = int(self.take()[1]) if self.keyword("LIMIT") else None
        if self.at != len(self.tokens):
            raise SoqlError(f"unexpected {self.peek()!r}")
        return Query(fields, object_name, where, order, limit)

    def disjunction(self) -> Predicate:
        parts = [self.conjunction()]
        while self.keyword("OR"):
            parts.append(self.conjunction())
        return lambda row: any(p(row) for p in parts)

    def conjunction(self) -> Predicate:
        parts = [self.negation()]
        while self.keyword("AND"):
            parts.append(self.negation())
        return lambda row: all(p(row) for p in parts)

    def negation(self) -> Predicate:
        if self.keyword("NOT"):
            inner = self.negation()
            return lambda row: not inner(row)
        if self.keyword("("):
            inner = self.disjunction()
            self.take(")")
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        field = self.take()[1]
        op = self.take()[1]
        kind, raw = self.take()
        literal: Any
        if kind == "dt":
            literal = as_datetime(raw)
        elif kind == "num":
            literal = float(raw)
        elif kind == "str":
            literal = re.sub(r"\\(.)", r"\1", raw[1:-1])
        elif raw.lower() in ("true", "false"):
            literal = raw.lower() == "true"
        elif raw.lower() == "null":
            literal = None
        else:
            raise SoqlError(f"unsupported literal {raw!r}")
        return _compare(field, op, literal)


def _compare(field: str, op: str, literal: Any) -> Predicate:
    def check(row: Row) -> bool:
        value = row.get(field)
        if literal is None or value is None:
            equal = value is None and literal is None
            return equal if op == "=" else (not equal if op in ("!=", "<>") else False)
        if isinstance(literal, datetime):
            value = as_datetime(str(value))
        elif isinstance(literal, float):
            value = float(value)
        ops: dict[str, Callable[[Any, Any], bool]] = {
            "=": lambda a, b: a == b,
            "!=": lambda a, b: a != b,
            "<>": lambda a, b: a != b,
            "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b,
            ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b,
        }
        if op not in ops:
            raise SoqlError(f"unsupported operator {op!r}")
        return ops[op](value, literal)

    return check


def parse(text: str) -> Query:
    return _Parser(text).query()


def sort_key(row: Row, field: str) -> tuple[int, Any]:
    value = row.get(field)
    if value is None:
        return (0, "")
    if isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}T", value):
        return (1, as_datetime(value).isoformat())
    return (1, value)
