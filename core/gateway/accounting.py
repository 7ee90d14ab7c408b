"""Accounting: the usage the API reports, and what it cost.

Costs always come from reported usage, never from estimates. Prices are dollars per million
tokens from the catalogue's effective-dated entries (``models.yaml``); all arithmetic is
``Decimal`` and nothing is rounded here (round only for display).

Usage arithmetic follows the API contract:

* ``input_tokens`` is uncached input only; the prompt is input + cache writes + cache reads;
* a ``cache_creation`` object splits cache writes into 5-minute and 1-hour entries; writes
  reported without that breakdown are counted as 5-minute writes;
* in a stream, usage is cumulative: :meth:`Usage.merge` takes each field's latest value and
  never sums.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson

from core.gateway.catalog import ModelInfo, Rates

MILLION = Decimal(1_000_000)
ZERO = Decimal(0)


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _first(*values: int | None) -> int:
    for value in values:
        if value is not None:
            return value
    return 0


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0

    @classmethod
    def from_api(cls, data: Mapping[str, Any] | None) -> Usage:
        """Read an API ``usage`` object; missing or null fields count as zero."""
        return cls().merge(data or {})

    @property
    def prompt_tokens(self) -> int:
        """Every prompt token, cached or not (the length the long-prompt tier looks at)."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    def merge(self, later: Mapping[str, Any] | None) -> Usage:
        """This usage updated by a later, cumulative report: latest non-null value wins."""
        if not later:
            return self
        breakdown = later.get("cache_creation")
        if not isinstance(breakdown, Mapping):
            breakdown = {}
        write_5m = _first(_count(breakdown.get("ephemeral_5m_input_tokens")), self.cache_write_5m)
        write_1h = _first(_count(breakdown.get("ephemeral_1h_input_tokens")), self.cache_write_1h)
        creation = _first(
            _count(later.get("cache_creation_input_tokens")), self.cache_creation_input_tokens
        )
        # Writes the breakdown does not attribute are 5-minute writes; a breakdown larger
        # than the total wins (inconsistent input: bill the larger figure).
        if write_5m + write_1h < creation:
            write_5m = creation - write_1h
        creation = write_5m + write_1h
        return Usage(
            input_tokens=_first(_count(later.get("input_tokens")), self.input_tokens),
            output_tokens=_first(_count(later.get("output_tokens")), self.output_tokens),
            cache_read_input_tokens=_first(
                _count(later.get("cache_read_input_tokens")), self.cache_read_input_tokens
            ),
            cache_creation_input_tokens=creation,
            cache_write_5m=write_5m,
            cache_write_1h=write_1h,
        )

    def to_api(self) -> dict[str, Any]:
        """The API's ``usage`` shape (for synthesised responses)."""
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_write_5m,
                "ephemeral_1h_input_tokens": self.cache_write_1h,
            },
            "output_tokens": self.output_tokens,
        }


def merge_usage_objects(earlier: Mapping[str, Any], later: Mapping[str, Any]) -> dict[str, Any]:
    """Raw API usage objects merged as :meth:`Usage.merge` does (latest non-null value per
    field, nested objects field by field), keeping fields this module does not model."""
    merged = dict(earlier)
    for key, value in later.items():
        if value is None:
            continue
        previous = merged.get(key)
        if isinstance(value, Mapping) and isinstance(previous, Mapping):
            merged[key] = {**previous, **{k: v for k, v in value.items() if v is not None}}
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True)
class Cost:
    """US dollars, unrounded."""

    total: Decimal
    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    long_prompt: bool = False


def _rates(model: ModelInfo, prompt_tokens: int, at: datetime | date) -> tuple[Rates, bool]:
    entry = model.prices_at(at)
    tier = entry.long_prompt
    if tier is not None and prompt_tokens > tier.threshold_tokens:
        return tier, True
    return entry, False


def cost(
    model: ModelInfo,
    usage: Usage,
    *,
    at: datetime | date,
    batch: bool = False,
    batch_discount: Decimal | None = None,
) -> Cost:
    """What ``usage`` cost on ``model`` at the prices in force at ``at``.

    Above a long-prompt threshold (prompt = input + cache writes + cache reads) the long tier
    prices every token of the request, output included. A batch request multiplies every
    component by ``batch_discount`` (the catalogue's ``batch_discount``, required then).
    """
    if batch and batch_discount is None:
        raise ValueError("a batch cost needs the catalogue's batch_discount")
    rates, long_prompt = _rates(model, usage.prompt_tokens, at)
    factor = batch_discount if batch and batch_discount is not None else Decimal(1)

    def price(tokens: int, per_million: Decimal) -> Decimal:
        return Decimal(tokens) * per_million * factor / MILLION

    parts = {
        "input": price(usage.input_tokens, rates.input),
        "output": price(usage.output_tokens, rates.output),
        "cache_write_5m": price(usage.cache_write_5m, rates.cache_write_5m),
        "cache_write_1h": price(usage.cache_write_1h, rates.cache_write_1h),
        "cache_read": price(usage.cache_read_input_tokens, rates.cache_read),
    }
    return Cost(total=sum(parts.values(), ZERO), long_prompt=long_prompt, **parts)


def naive_cost(usage: Usage, naive_model: ModelInfo, *, at: datetime | date) -> Decimal:
    """The same call on ``naive_model`` at list price without caching (for savings reports):
    every prompt token as plain input, plus the output; long-prompt rules apply."""
    plain = Usage(input_tokens=usage.prompt_tokens, output_tokens=usage.output_tokens)
    return cost(naive_model, plain, at=at).total


PICO = Decimal(10) ** 12


def picodollars(amount: Decimal) -> int:
    """USD as whole picodollars (1e-12), the integer unit call records and budgets sum."""
    return int((amount * PICO).to_integral_value())


def usage_of_body(body: bytes) -> Usage:
    """The usage of a Messages API answer's JSON body; empty usage if it has none."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Usage()
    return Usage.from_api(message.get("usage") if isinstance(message, dict) else None)
