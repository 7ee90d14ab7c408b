"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

# Autoincrementing 64-bit ids; SQLite only autoincrements an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
JsonType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """Opaque public id such as ``con_3f9c…`` (prefix says what the object is)."""
    return f"{prefix}_{secrets.token_hex(10)}"


def new_ordered_id(prefix: str) -> str:
    """An id like :func:`new_id` (same prefix and length) whose first 11 hex digits are the
    time in milliseconds, so ids made later sort later. For rows written at a high rate:
    their index entries go to the end of each index instead of a random page of it, so a
    commit touches a few pages rather than a page a row, however large the table grows."""
    millis = time.time_ns() // 1_000_000
    return f"{prefix}_{millis:011x}{secrets.randbits(36):09x}"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    SQLite has no time zones: values are stored as naive UTC text, which also sorts and
    compares correctly in SQL, and come back tagged as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
