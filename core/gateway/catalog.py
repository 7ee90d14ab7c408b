"""The model catalogue: prices with effective dates, cache minimums, default limits, latency.

Loaded from ``models.yaml`` beside this module (or a file named in settings). The gateway's
price table and the Anthropic sandbox's model list both come from here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.errors import SwitchyardError

DEFAULT_CATALOG = Path(__file__).with_name("models.yaml")


class UnknownModel(SwitchyardError):
    problem_type = "unknown-model"
    title = "Unknown model"
    status = 404  # as the Anthropic API answers an unknown model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rates(_Strict):
    """Dollars per million tokens for one price band."""

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal


class LongPromptRates(Rates):
    threshold_tokens: int = Field(gt=0)


class PriceEntry(Rates):
    valid_from: date = Field(alias="from")
    long_prompt: LongPromptRates | None = None


class RateLimits(_Strict):
    rpm: int = Field(gt=0)
    input_tpm: int = Field(gt=0)
    output_tpm: int = Field(gt=0)


class Latency(_Strict):
    ttft_ms: float = Field(ge=0)
    ttft_ms_per_1k_input: float = Field(ge=0)
    output_tokens_per_second: float = Field(gt=0)


class ModelInfo(_Strict):
    id: str
    display_name: str
    created_at: date
    family: str
    legacy: bool = False
    min_cacheable_tokens: int = Field(gt=0)
    chars_per_token: float = Field(gt=0)
    limits: RateLimits
    latency: Latency
    prices: tuple[PriceEntry, ...] = Field(min_length=1)

    @field_validator("prices")
    @classmethod
    def _ascending(cls, prices: tuple[PriceEntry, ...]) -> tuple[PriceEntry, ...]:
        dates = [entry.valid_from for entry in prices]
        if dates != sorted(dates) or len(set(dates)) != len(dates):
            raise ValueError("price entries must have distinct, ascending `from` dates")
        return prices

    def prices_at(self, when: datetime | date) -> PriceEntry:
        """The price entry in force at ``when`` (a UTC instant or a date)."""
        day = when.astimezone(UTC).date() if isinstance(when, datetime) else when
        current: PriceEntry | None = None
        for entry in self.prices:
            if entry.valid_from <= day:
                current = entry
        # Before the first entry the model had no public price; the earliest one is the best
        # available answer and keeps historical re-costing total.
        return current or self.prices[0]


@dataclass(frozen=True)
class Catalog:
    models: Mapping[str, ModelInfo]
    batch_discount: Decimal

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        source = path or DEFAULT_CATALOG
        raw: dict[str, Any] = yaml.safe_load(source.read_text(encoding="utf-8"))
        models = {
            model_id: ModelInfo.model_validate({"id": model_id, **spec})
            for model_id, spec in raw["models"].items()
        }
        return cls(models=models, batch_discount=Decimal(str(raw.get("batch_discount", 1))))

    def get(self, model_id: str) -> ModelInfo:
        try:
            return self.models[model_id]
        except KeyError:
            raise UnknownModel(f"model {model_id!r} is not in the catalogue") from None

    def find(self, model_id: str) -> ModelInfo | None:
        return self.models.get(model_id)

    def __iter__(self) -> Iterator[ModelInfo]:
        return iter(self.models.values())
