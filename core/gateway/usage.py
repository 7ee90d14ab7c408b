"""Usage reports: a tenant's gateway requests over a time range, grouped and summed.

:func:`usage_report` streams the few columns it needs (``yield_per``) and aggregates in
Python, so SQLite and PostgreSQL share one code path: time buckets are truncated in UTC
here, not with each database's date functions, and percentiles need every value anyway.

* Range: ``since <= created_at < until``; both timezone-aware; default the last 24 hours;
  at most :data:`MAX_RANGE` long.
* Money: picodollars are summed as integers, then converted once to USD rounded to 6
  decimals (half-even), so a sum never carries float error.
* Ratios are rounded to 6 decimals; percentiles use the nearest-rank method.
* Rows are sorted by bucket, then by the group keys in ``group_by`` order (nulls last).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import GatewayRequest
from core.errors import InvalidRequest

__all__ = [
    "DEFAULT_RANGE",
    "MAX_RANGE",
    "Bucket",
    "GroupKey",
    "Percentiles",
    "UsageMetrics",
    "UsageReport",
    "UsageRow",
    "parse_group_by",
    "resolve_range",
    "usage_report",
]

DEFAULT_RANGE = timedelta(hours=24)
MAX_RANGE = timedelta(days=93)
PICO = Decimal(10) ** 12
MICRO = Decimal("0.000001")
_BATCH = 2_000


class GroupKey(enum.StrEnum):
    FEATURE = "feature"
    MODEL = "model"
    TASK = "task"
    STATUS = "status"
    PROMPT = "prompt"  # the registry prompt version, name@version


class Bucket(enum.StrEnum):
    NONE = "none"
    HOUR = "hour"
    DAY = "day"


class Percentiles(BaseModel):
    p50: float
    p95: float


class UsageMetrics(BaseModel):
    requests: int
    errors: int = Field(description="Requests with status `error`.")
    rate_limited: int = Field(description="Requests answered HTTP 429.")
    error_rate: float
    rate_limited_rate: float
    input_tokens: int = Field(description="Uncached input tokens.")
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int = Field(description="5-minute and 1-hour cache writes.")
    cache_hit_ratio: float = Field(
        description="cache_read / (input + cache_read + cache_write); 0 with no prompt tokens."
    )
    response_cache_hits: int
    dedup_hits: int
    escalations: int
    validation_failures: int = Field(
        description="Answers that failed the caller's check (a flow's output schema)."
    )
    retries: int
    cost_usd: float = Field(description="What was paid; exact sum, rounded to 6 decimals.")
    list_cost_usd: float = Field(description="The same models without prompt caching.")
    naive_cost_usd: float = Field(description="The naive model without prompt caching.")
    savings_usd: float = Field(description="naive_cost_usd - cost_usd.")
    latency_ms: Percentiles | None = Field(description="Over total_ms; null with no requests.")
    ttft_ms: Percentiles | None = Field(description="Streams only; null when there are none.")
    queue_ms: Percentiles | None


class _GroupKeys(BaseModel):
    bucket_start: datetime | None = Field(None, description="Only with a bucket (UTC).")
    feature: str | None = Field(None, description="Only when grouped by feature.")
    model: str | None = Field(None, description="Only when grouped by model.")
    task: str | None = Field(None, description="Only when grouped by task.")
    status: str | None = Field(None, description="Only when grouped by status.")
    prompt: str | None = Field(None, description="Only when grouped by prompt (name@version).")


class UsageRow(UsageMetrics, _GroupKeys):
    """One group. Only the requested keys are set; dump with ``exclude_unset=True``."""


class UsageReport(BaseModel):
    since: datetime
    until: datetime
    group_by: list[GroupKey]
    bucket: Bucket
    rows: list[UsageRow]
    totals: UsageMetrics


def parse_group_by(value: str | Sequence[str] | None) -> list[GroupKey]:
    """``"feature,model"`` (or a list of names) as group keys, in order, without repeats."""
    if value is None:
        return []
    names = value.split(",") if isinstance(value, str) else list(value)
    keys: list[GroupKey] = []
    for name in (n.strip() for n in names):
        if not name:
            continue
        try:
            key = GroupKey(name)
        except ValueError:
            allowed = ", ".join(k.value for k in GroupKey)
            raise InvalidRequest(
                f"group_by: unknown key {name[:40]!r}; allowed: {allowed}"
            ) from None
        if key not in keys:
            keys.append(key)
    return keys


def resolve_range(
    since: datetime | None, until: datetime | None, *, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """The UTC range to report; defaults to the :data:`DEFAULT_RANGE` ending at ``until``
    (itself defaulting to now)."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.utcoffset() is None:
            raise InvalidRequest(f"{name}: give a timezone, e.g. 2025-01-02T03:04:05Z or +02:00")
    end = (until or now or datetime.now(UTC)).astimezone(UTC)
    start = since.astimezone(UTC) if since is not None else end - DEFAULT_RANGE
    if end <= start:
        raise InvalidRequest("until must be later than since")
    if end - start > MAX_RANGE:
        raise InvalidRequest(
            f"the range is {(end - start).days} days; at most {MAX_RANGE.days} are allowed: "
            "move since or until closer together, or ask for several ranges",
            max_days=MAX_RANGE.days,
        )
    return start, end


def _usd(picodollars: int) -> float:
    return float((Decimal(picodollars) / PICO).quantize(MICRO))


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def _nearest_rank(values: list[float]) -> Percentiles | None:
    if not values:
        return None
    ordered = sorted(values)

    def rank(p: int) -> float:
        return ordered[max(1, math.ceil(p * len(ordered) / 100)) - 1]

    return Percentiles(p50=rank(50), p95=rank(95))


@dataclass
class _Tally:
    requests: int = 0
    errors: int = 0
    rate_limited: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    response_cache_hits: int = 0
    dedup_hits: int = 0
    escalations: int = 0
    validation_failures: int = 0
    retries: int = 0
    cost: int = 0
    list_cost: int = 0
    naive_cost: int = 0
    total_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    queue_ms: list[float] = field(default_factory=list)

    def add(self, row: Any) -> None:
        self.requests += 1
        self.errors += row.status == "error"
        self.rate_limited += row.http_status == 429
        self.input_tokens += row.input_tokens
        self.output_tokens += row.output_tokens
        self.cache_read_tokens += row.cache_read_tokens
        self.cache_write_tokens += row.cache_write_5m_tokens + row.cache_write_1h_tokens
        self.response_cache_hits += bool(row.cache_hit)
        self.dedup_hits += bool(row.dedup_hit)
        self.escalations += bool(row.escalated)
        self.validation_failures += bool(row.validation_failed)
        self.retries += row.retries
        self.cost += row.cost_picodollars
        self.list_cost += row.list_cost_picodollars
        self.naive_cost += row.naive_cost_picodollars
        self.total_ms.append(row.total_ms)
        self.queue_ms.append(row.queue_ms)
        if row.ttft_ms is not None:
            self.ttft_ms.append(row.ttft_ms)

    def metrics(self) -> dict[str, Any]:
        prompt = self.input_tokens + self.cache_read_tokens + self.cache_write_tokens
        return {
            "requests": self.requests,
            "errors": self.errors,
            "rate_limited": self.rate_limited,
            "error_rate": _ratio(self.errors, self.requests),
            "rate_limited_rate": _ratio(self.rate_limited, self.requests),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cache_hit_ratio": _ratio(self.cache_read_tokens, prompt),
            "response_cache_hits": self.response_cache_hits,
            "dedup_hits": self.dedup_hits,
            "escalations": self.escalations,
            "validation_failures": self.validation_failures,
            "retries": self.retries,
            "cost_usd": _usd(self.cost),
            "list_cost_usd": _usd(self.list_cost),
            "naive_cost_usd": _usd(self.naive_cost),
            "savings_usd": _usd(self.naive_cost - self.cost),
            "latency_ms": _nearest_rank(self.total_ms),
            "ttft_ms": _nearest_rank(self.ttft_ms),
            "queue_ms": _nearest_rank(self.queue_ms),
        }


_COLUMNS = (
    GatewayRequest.created_at,
    GatewayRequest.feature,
    GatewayRequest.model,
    GatewayRequest.task,
    GatewayRequest.status,
    GatewayRequest.http_status,
    GatewayRequest.input_tokens,
    GatewayRequest.output_tokens,
    GatewayRequest.cache_read_tokens,
    GatewayRequest.cache_write_5m_tokens,
    GatewayRequest.cache_write_1h_tokens,
    GatewayRequest.cache_hit,
    GatewayRequest.dedup_hit,
    GatewayRequest.escalated,
    GatewayRequest.validation_failed,
    GatewayRequest.prompt_ref.label("prompt"),
    GatewayRequest.retries,
    GatewayRequest.cost_picodollars,
    GatewayRequest.list_cost_picodollars,
    GatewayRequest.naive_cost_picodollars,
    GatewayRequest.total_ms,
    GatewayRequest.queue_ms,
    GatewayRequest.ttft_ms,
)

_GroupId = tuple[datetime | None, tuple[str | None, ...]]


def _bucket_start(at: datetime, bucket: Bucket) -> datetime | None:
    at = at.astimezone(UTC)
    if bucket is Bucket.HOUR:
        return at.replace(minute=0, second=0, microsecond=0)
    if bucket is Bucket.DAY:
        return at.replace(hour=0, minute=0, second=0, microsecond=0)
    return None


def _sort_key(group: _GroupId) -> tuple[Any, ...]:
    start, keys = group
    return (start or datetime.min, *((value is None, value or "") for value in keys))


def _row(group: _GroupId, tally: _Tally, group_by: Iterable[GroupKey], bucket: Bucket) -> UsageRow:
    start, values = group
    keys: dict[str, Any] = dict(zip((key.value for key in group_by), values, strict=True))
    if bucket is not Bucket.NONE:
        keys["bucket_start"] = start
    return UsageRow(**keys, **tally.metrics())


async def usage_report(
    session: AsyncSession,
    tenant_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    group_by: str | Sequence[str] | None = None,
    bucket: Bucket | str = Bucket.NONE,
    now: datetime | None = None,
    prompt: str | None = None,
) -> UsageReport:
    """One tenant's usage in ``[since, until)``, grouped by ``group_by`` keys and ``bucket``;
    with ``prompt``, only calls that used a version of that registry prompt.

    Raises :class:`~core.errors.InvalidRequest` for a naive or inverted or too long range,
    an unknown group key or bucket.
    """
    keys = parse_group_by(group_by)
    try:
        bucket = Bucket(bucket)
    except ValueError:
        allowed = ", ".join(b.value for b in Bucket)
        raise InvalidRequest(f"bucket: unknown {str(bucket)[:40]!r}; allowed: {allowed}") from None
    start, end = resolve_range(since, until, now=now)
    statement = select(*_COLUMNS).where(
        GatewayRequest.tenant_id == tenant_id,
        GatewayRequest.created_at >= start,
        GatewayRequest.created_at < end,
    )
    if prompt is not None:
        statement = statement.where(
            GatewayRequest.prompt_ref.startswith(f"{prompt}@", autoescape=True)
        )
    groups: dict[_GroupId, _Tally] = {}
    totals = _Tally()
    result = await session.stream(statement.execution_options(yield_per=_BATCH))
    async for row in result:
        group = (_bucket_start(row.created_at, bucket), tuple(getattr(row, k.value) for k in keys))
        tally = groups.get(group)
        if tally is None:
            tally = groups[group] = _Tally()
        tally.add(row)
        totals.add(row)
    rows = [_row(group, groups[group], keys, bucket) for group in sorted(groups, key=_sort_key)]
    return UsageReport(
        since=start,
        until=end,
        group_by=keys,
        bucket=bucket,
        rows=rows,
        totals=UsageMetrics(**totals.metrics()),
    )
