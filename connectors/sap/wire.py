"""OData V2 values on the wire: ``/Date(ms)/`` dates, literals, key predicates.

V2 JSON writes ``Edm.DateTime`` as ``"/Date(<epoch ms>)/"`` and ``Edm.DateTimeOffset`` as
``"/Date(<epoch ms>+0000)/"``; decimals travel as strings. Records read through the
connector carry dates as ISO 8601 text (``YYYY-MM-DD`` for a date at midnight) and values
written are converted back by their ``$metadata`` type.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

_DATE = re.compile(r"^/Date\((-?\d+)(?:([+-])(\d{4}))?\)/$")
NUMERIC = {"Edm.Int16", "Edm.Int32", "Edm.Int64", "Edm.Byte", "Edm.SByte"}


def parse_date(value: Any) -> datetime | None:
    """``/Date(ms)/`` (or ISO 8601 text) as an aware UTC datetime; None if it is neither."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    found = _DATE.match(value)
    if found:
        return datetime.fromtimestamp(int(found.group(1)) / 1000, UTC)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def epoch_ms(moment: datetime) -> int:
    return int((moment - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(milliseconds=1))


def format_date(value: Any, *, offset: bool = False) -> str:
    """A date, datetime or ISO text as ``/Date(ms)/`` (``+0000`` for DateTimeOffset)."""
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    moment = parse_date(value)
    if moment is None:
        raise ValueError(f"not a date: {str(value)[:40]!r}")
    return f"/Date({epoch_ms(moment)}{'+0000' if offset else ''})/"


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z``."""
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def datetimeoffset_literal(moment: datetime) -> str:
    return f"datetimeoffset'{iso(moment)}'"


def string_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def key_predicate(keys: Sequence[str], record_id: str) -> str:
    """``('4711')`` for one key; ``(A='1',B='2')`` for a record id ``1/2``."""
    parts = record_id.split("/") if len(keys) > 1 else [record_id]
    if len(parts) != len(keys) or not all(parts):
        raise ValueError(f"record id {record_id!r} does not fit the keys {', '.join(keys)}")
    if len(keys) == 1:
        return f"({quote(string_literal(parts[0]), safe=chr(39))})"
    pairs = ",".join(
        f"{k}={quote(string_literal(v), safe=chr(39))}" for k, v in zip(keys, parts, strict=True)
    )
    return f"({pairs})"


def record_id(row: Mapping[str, Any], keys: Sequence[str]) -> str:
    return "/".join(str(row.get(key) or "") for key in keys)


def from_wire(value: Any, edm_type: str) -> Any:
    """A value as SAP sent it, made plain: dates to ISO text, the rest unchanged."""
    if edm_type in ("Edm.DateTime", "Edm.DateTimeOffset") and isinstance(value, str):
        moment = parse_date(value)
        if moment is None:
            return value
        if edm_type == "Edm.DateTime" and moment.time() == datetime.min.time():
            return moment.date().isoformat()
        return iso(moment)
    return value


def to_wire(value: Any, edm_type: str) -> Any:
    """A value as V2 JSON expects it for ``edm_type`` (dates, decimals as strings)."""
    if value is None:
        return None
    if edm_type in ("Edm.DateTime", "Edm.DateTimeOffset"):
        if value == "":
            return None
        return format_date(value, offset=edm_type == "Edm.DateTimeOffset")
    if edm_type in ("Edm.Decimal", "Edm.Double", "Edm.Single"):
        if isinstance(value, bool):
            raise ValueError("a number was expected, not a boolean")
        try:
            return str(Decimal(str(value))) if edm_type == "Edm.Decimal" else value
        except InvalidOperation:
            raise ValueError(f"not a number: {str(value)[:40]!r}") from None
    if edm_type in NUMERIC and isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if edm_type == "Edm.String" and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def etag_of(row: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> str | None:
    meta = row.get("__metadata")
    if isinstance(meta, Mapping) and meta.get("etag"):
        return str(meta["etag"])
    return (headers or {}).get("etag")


def same_value(current: Any, wanted: Any, edm_type: str) -> bool:
    """Equal as SAP stores them: decimals by value ("20.000" is 20), the rest exactly."""
    if edm_type == "Edm.Decimal" and current is not None and wanted is not None:
        try:
            return Decimal(str(current)) == Decimal(str(wanted))
        except InvalidOperation:
            return False
    return bool(current == wanted)


def envelope(body: Any) -> dict[str, Any]:
    inner = body.get("d") if isinstance(body, Mapping) else None
    return dict(inner) if isinstance(inner, Mapping) else {}


def sap_messages(header: str | None) -> str:
    """The ``sap-message`` header of a 2xx answer (success/warning messages, JSON: code,
    message, severity, details) as one line, for a write's detail; "" if absent."""
    if not header:
        return ""
    try:
        parsed = json.loads(header)
    except ValueError:
        return header[:500]
    items = [parsed, *(parsed.get("details") or [])] if isinstance(parsed, dict) else []
    return "; ".join(
        f"{m.get('severity', '')} {m.get('code', '')}: {m.get('message', '')}".strip()
        for m in items
        if isinstance(m, dict) and m.get("message")
    )[:1000]
