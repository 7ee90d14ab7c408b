"""SANDBOX — the SAP sandbox's records: typed values, ETags, ``$filter`` / ``$orderby``.

Values are held as Python values (dates as aware datetimes, decimals as strings) and
rendered as OData V2 JSON on the way out (``/Date(ms)/``, ``__metadata`` with the etag).
The ETag of an entity with a change date is ``W/"datetimeoffset'<URL-encoded ISO>'"``, as
S/4HANA's APIs derive it from ``LastChangeDateTime``. ``$filter`` understands what the
connector sends: comparisons (eq ne gt ge lt le) of a property with a string,
``datetimeoffset'…'``/``datetime'…'`` or number literal, joined by and/or, in brackets.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from connectors.sap import wire
from connectors.sap.sandbox_schema import DEC, DT, DTO, EntityDef


class ODataError(Exception):
    """An error answer: HTTP status, SAP message code and text (and error details)."""

    def __init__(
        self, status: int, code: str, message: str, details: Sequence[Mapping[str, str]] = ()
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


@dataclass
class Row:
    values: dict[str, Any]
    version: int = 1


@dataclass
class EntityStore:
    entity: EntityDef
    rows: dict[str, Row] = field(default_factory=dict)
    numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


def key_of(entity: EntityDef, values: Mapping[str, Any]) -> str:
    return "/".join(str(values.get(k) or "") for k in entity.keys)


def to_python(entity: EntityDef, name: str, value: Any) -> Any:
    """A JSON value sent by a client, checked against the property's type."""
    prop = entity.prop(name)
    if prop is None:
        raise ODataError(400, "/IWBEP/CM_MGW_RT/020", f"Property '{name}' is invalid")
    if value is None:
        return None
    if prop.type in (DT, DTO):
        moment = wire.parse_date(value)
        if moment is None:
            raise ODataError(
                400, "/IWBEP/CM_MGW_RT/022", f"Invalid value for property '{name}' (date)"
            )
        return moment
    if prop.type == DEC:
        try:
            return str(Decimal(str(value)))
        except InvalidOperation:
            raise ODataError(
                400, "/IWBEP/CM_MGW_RT/022", f"Invalid value for property '{name}' (decimal)"
            ) from None
    text = str(value)
    if prop.length is not None and len(text) > prop.length:
        raise ODataError(
            400,
            "/IWBEP/CM_MGW_RT/022",
            f"Value of property '{name}' is longer than {prop.length} characters",
        )
    return text


def render_value(entity: EntityDef, name: str, value: Any) -> Any:
    prop = entity.prop(name)
    if isinstance(value, datetime) and prop is not None:
        return wire.format_date(value, offset=prop.type == DTO)
    return value


def etag_of(entity: EntityDef, row: Row) -> str:
    stamp = row.values.get(entity.change_field) if entity.change_field else None
    if isinstance(stamp, datetime):
        return 'W/"' + "datetimeoffset'" + quote(wire.iso(stamp), safe="") + "'\""
    return f"W/\"'{row.version}'\""


# --------------------------------------------------------------------- $filter

_TOKEN = re.compile(
    r"\s*(?:(?P<open>\()|(?P<close>\))|(?P<lit>(?:datetimeoffset|datetime)?'(?:[^']|'')*')"
    r"|(?P<num>-?\d+(?:\.\d+)?)|(?P<word>[A-Za-z_][A-Za-z0-9_/]*))"
)
Predicate = Callable[[Mapping[str, Any]], bool]
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a is not None and b is not None and a > b,
    "ge": lambda a, b: a is not None and b is not None and a >= b,
    "lt": lambda a, b: a is not None and b is not None and a < b,
    "le": lambda a, b: a is not None and b is not None and a <= b,
}


def _tokens(text: str) -> list[tuple[str, str]]:
    found, position = [], 0
    while position < len(text.rstrip()):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise ODataError(
                400, "/IWBEP/CM_MGW_RT/004", f"Invalid filter near {text[position:]!r}"
            )
        kind = match.lastgroup or ""
        found.append((kind, match.group(kind)))
        position = match.end()
    return found


def _literal(raw: str) -> Any:
    if raw.startswith(("datetimeoffset'", "datetime'")):
        moment = wire.parse_date(raw.split("'", 1)[1][:-1])
        if moment is None:
            raise ODataError(400, "/IWBEP/CM_MGW_RT/004", f"Invalid date literal {raw}")
        return moment
    return raw[1:-1].replace("''", "'")


class _Parser:
    def __init__(self, entity: EntityDef, text: str) -> None:
        self.entity, self.tokens, self.at = entity, _tokens(text), 0

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _take(self) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise ODataError(400, "/IWBEP/CM_MGW_RT/004", "Incomplete $filter")
        self.at += 1
        return token

    def parse(self) -> Predicate:
        predicate = self._or()
        if self._peek() is not None:
            raise ODataError(400, "/IWBEP/CM_MGW_RT/004", "Unexpected text in $filter")
        return predicate

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._peek() == ("word", "or"):
            self._take()
            parts.append(self._and())
        return lambda row: any(p(row) for p in parts)

    def _and(self) -> Predicate:
        parts = [self._factor()]
        while self._peek() == ("word", "and"):
            self._take()
            parts.append(self._factor())
        return lambda row: all(p(row) for p in parts)

    def _factor(self) -> Predicate:
        kind, value = self._take()
        if kind == "open":
            inner = self._or()
            if self._take()[0] != "close":
                raise ODataError(400, "/IWBEP/CM_MGW_RT/004", "Missing ')' in $filter")
            return inner
        if kind != "word" or self.entity.prop(value) is None:
            raise ODataError(400, "/IWBEP/CM_MGW_RT/004", f"Invalid property {value} in $filter")
        name = value
        _, op = self._take()
        if op not in _OPS:
            raise ODataError(400, "/IWBEP/CM_MGW_RT/004", f"Unsupported operator {op}")
        lit_kind, raw = self._take()
        operand = _literal(raw) if lit_kind == "lit" else Decimal(raw)
        compare = _OPS[op]
        if isinstance(operand, Decimal):
            return lambda row: compare(_decimal(row.get(name)), operand)
        return lambda row: compare(row.get(name), operand)


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except InvalidOperation:
        return None


def matcher(entity: EntityDef, text: str | None) -> Predicate:
    return _Parser(entity, text).parse() if text else (lambda row: True)


def sort_key(entity: EntityDef, orderby: str | None) -> Callable[[Row], Any]:
    fields: list[tuple[str, bool]] = []
    for part in (orderby or "").split(","):
        words = part.split()
        if not words:
            continue
        if entity.prop(words[0]) is None:
            raise ODataError(
                400, "/IWBEP/CM_MGW_RT/004", f"Invalid property {words[0]} in $orderby"
            )
        fields.append((words[0], len(words) > 1 and words[1].lower() == "desc"))
    descending = bool(fields) and all(desc for _, desc in fields)
    if any(desc for _, desc in fields) and not descending:
        raise ODataError(400, "/IWBEP/CM_MGW_RT/004", "The sandbox sorts all asc or all desc")
    fields += [(k, descending) for k in entity.keys if k not in {f for f, _ in fields}]

    def key(row: Row) -> Any:
        values: list[Any] = []
        for name, _ in fields:
            value = row.values.get(name)
            values.append((value is not None, value if value is not None else ""))
        return _Reversed(tuple(values)) if descending else tuple(values)

    return key


def now_utc() -> datetime:
    return datetime.now(UTC)


class _Reversed:
    """Sorts in the opposite order of the tuple it wraps."""

    def __init__(self, value: tuple[Any, ...]) -> None:
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return bool(other.value < self.value)
