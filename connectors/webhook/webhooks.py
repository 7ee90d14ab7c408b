"""Inbound side of the webhook connector: signature check and body parsing.

Body: ``{"events": [{"id", "object", "record_id", "type", "changed_fields", "occurred_at",
"data"}]}``, signed with the same ``Switchyard-Signature`` scheme as our callbacks.
``occurred_at`` without a UTC offset is read as UTC. ``NaN``/``Infinity`` are refused: they
are not JSON, and PostgreSQL's JSONB would reject them only at insert time.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from connectors.base import ChangeEvent, ChangeType, InboundRequest
from core import signing
from core.errors import InvalidRequest, PayloadMalformed

MAX_EVENTS_PER_DELIVERY = 500


class _InboundEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=255)
    object: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.-]+$")
    record_id: str = Field(min_length=1, max_length=255)
    type: Literal["created", "updated", "deleted"]
    changed_fields: list[str] = Field(default_factory=list, max_length=1000)
    occurred_at: datetime | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # Stored in a UTC column, which refuses naive datetimes.
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class _Delivery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[_InboundEvent] = Field(min_length=1, max_length=MAX_EVENTS_PER_DELIVERY)


def verify(request: InboundRequest, secrets: list[str], tolerance_seconds: int) -> None:
    signing.verify(
        secrets,
        request.header(signing.HEADER),
        request.body,
        tolerance_seconds=tolerance_seconds,
    )


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf, which JSONB cannot store
        raise ValueError(f"{text} is out of range for a JSON number")
    return value


def parse(request: InboundRequest) -> list[ChangeEvent]:
    try:
        raw = json.loads(request.body, parse_constant=_no_constants, parse_float=_finite)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise PayloadMalformed(f"body is not JSON: {exc}") from None
    except RecursionError:
        raise PayloadMalformed("body is not JSON: nested too deeply") from None
    try:
        delivery = _Delivery.model_validate(raw)
        return [
            ChangeEvent(
                platform_event_id=event.id,
                object=event.object,
                record_id=event.record_id,
                change_type=ChangeType(event.type),
                changed_fields=tuple(event.changed_fields),
                occurred_at=event.occurred_at,
                data=event.data,
            )
            for event in delivery.events
        ]
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise InvalidRequest("; ".join(problems[:20]), errors=problems[:20]) from None
