"""The Connector protocol and the canonical types every platform package speaks.

Core imports this module and :mod:`connectors.registry`, never a platform package. A
platform package implements :class:`ConnectorFactory` (registered under the
``switchyard.connectors`` entry-point group) whose ``create`` returns a :class:`Connector`
bound to one connection's config and secrets.

Inbound work is synchronous and pure (verify, parse, ack): it runs in the request before
anything is stored. Everything that talks to the platform is async.
"""

from __future__ import annotations

import asyncio
import enum
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ConnectorKind(enum.StrEnum):
    CRM = "crm"  # writes go straight back
    ERP = "erp"  # writes wait for a reviewer unless the connection allows otherwise


class ChangeType(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


def _storable(value: Any, where: str) -> None:
    """Refuse what SQLite stores but PostgreSQL rejects at commit (a NUL character in text,
    a non-finite number in JSONB): such an event would be accepted on one backend and fail
    forever on the other."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{where}: contains a NUL character")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} is not a finite number")
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key, where)
            _storable(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _storable(item, f"{where}[{index}]")


class ChangeEvent(BaseModel):
    """One platform change, as every connector reports it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="after")
    def _only_storable_values(self) -> ChangeEvent:
        for name in ("platform_event_id", "object", "record_id", "changed_fields", "data"):
            _storable(getattr(self, name), name)
        return self

    platform_event_id: str = Field(min_length=1, max_length=255)
    object: str = Field(min_length=1, max_length=200)
    record_id: str = Field(min_length=1, max_length=255)
    change_type: ChangeType
    changed_fields: tuple[str, ...] = ()
    occurred_at: datetime | None = None
    data: dict[str, Any] = Field(default_factory=dict)


def changed_by(who: object) -> dict[str, str]:
    """The ``ChangeEvent.data`` entry naming who made a change — the platform's user id, or
    an email — when the platform says: the review queue keeps it, and that person cannot
    approve a write the change caused (four eyes). Empty when unknown."""
    return {"changed_by": who.strip()} if isinstance(who, str) and who.strip() else {}


@dataclass(frozen=True)
class InboundRequest:
    """A webhook delivery as received: raw bytes, so signatures can be checked exactly."""

    method: str
    url: str
    headers: Mapping[str, str]  # lower-cased names
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    jobs: Sequence[int]


@dataclass(frozen=True)
class Ack:
    """The exact response a platform expects once its events are stored."""

    status_code: int
    body: bytes
    media_type: str


@dataclass(frozen=True)
class RecordRef:
    object: str
    record_id: str


@dataclass(frozen=True)
class Record:
    object: str
    record_id: str
    fields: Mapping[str, Any]
    version: str | None = None  # ETag / LastModifiedDate, for optimistic concurrency


@dataclass(frozen=True)
class Patch:
    """Fields to write on one record; ``record_id`` None asks for a new record (a create).

    A connector that cannot create raises ``ConnectorTerminalError``; one that can makes
    the create idempotent with the idempotency key it is given (a retried job must not
    make a second record) and answers the new id in ``WriteResult.record_id``.
    """

    object: str
    record_id: str | None
    fields: Mapping[str, Any]
    expected_version: str | None = None

    @property
    def is_create(self) -> bool:
        return self.record_id is None


class WriteStatus(enum.StrEnum):
    WRITTEN = "written"
    CONFLICT = "conflict"  # the record changed since it was read


@dataclass(frozen=True)
class WriteResult:
    status: WriteStatus
    record_id: str
    version: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class FieldMeta:
    name: str
    type: str
    label: str = ""
    updateable: bool = True
    required: bool = False
    picklist_values: tuple[str, ...] = ()


@dataclass(frozen=True)
class PollResult:
    events: Sequence[ChangeEvent]
    cursor: Mapping[str, Any] | None  # stored in the same transaction as the events
    more: bool = False  # another page is ready now


class StateStore(Protocol):
    """Durable state of one connection, encrypted at rest and shared by every process.

    For what a connector learns while it runs and must not lose or fork between workers:
    OAuth tokens that rotate (a refresh token used once is gone), the identity it writes
    as. ``lock`` serialises one kind of work across every process (one token refresh at a
    time, so concurrent jobs do not stampede a token endpoint); it raises
    ``ConnectorTransientError`` if the lock stays busy, and a holder that dies releases
    it when its lease runs out.
    """

    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def put(self, key: str, value: Mapping[str, Any]) -> None: ...

    def lock(self, name: str) -> AbstractAsyncContextManager[None]: ...


class MemoryStateStore:
    """A process-local :class:`StateStore`: for a connector built without core's database
    state (a dry run, a script), and for tests. Values are copied in and out, as the
    database store's are."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, Any]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, key: str) -> dict[str, Any] | None:
        value = self.values.get(key)
        return dict(value) if value is not None else None

    async def put(self, key: str, value: Mapping[str, Any]) -> None:
        self.values[key] = dict(value)

    @asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        async with self._locks.setdefault(name, asyncio.Lock()):
            yield


@dataclass(frozen=True)
class ConnectorContext:
    """What core tells a connector about its surroundings."""

    connection_id: str
    webhook_tolerance_seconds: int = 300
    http_timeout_seconds: float = 30.0
    state: StateStore | None = None
    # The URL the platform calls for this connection's webhooks (SWITCHYARD_PUBLIC_URL +
    # /hooks/{id}), for signatures that cover the URL; None: use the URL as received.
    public_hook_url: str | None = None


@runtime_checkable
class Connector(Protocol):
    """One connection's view of its platform."""

    kind: ConnectorKind

    def verify(self, request: InboundRequest) -> None:
        """Raise ``SignatureInvalid`` unless the request is authentic."""

    def parse(self, request: InboundRequest) -> list[ChangeEvent]:
        """Raise ``PayloadMalformed`` (with the reason) for a body that cannot be read."""

    def ack(self, result: IngestResult) -> Ack | None:
        """The platform's required answer, or None for Switchyard's JSON 202."""

    async def poll(self, cursor: Mapping[str, Any] | None) -> PollResult:
        """Changes since ``cursor``; raise ``NotImplementedError`` if the platform pushes only."""

    async def fetch(self, ref: RecordRef, fields: Sequence[str] | None = None) -> Record: ...

    async def write(self, patch: Patch, idempotency_key: str) -> WriteResult: ...

    async def describe(self, object_name: str) -> list[FieldMeta]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class DemoSandbox(Protocol):
    """A running local stand-in for a platform, started by ``switchyard serve --demo``."""

    label: str  # shown to people, always says it is a sandbox
    config: Mapping[str, Any]  # connection config pointing at the sandbox
    secrets: Mapping[str, Any]

    async def activity(self, hook_url: str) -> None:
        """Make changes in the sandbox and deliver them to ``hook_url`` until cancelled."""

    async def aclose(self) -> None: ...


@runtime_checkable
class DemoCapable(Protocol):
    """Optional factory extra: a connector whose package ships a demo sandbox."""

    async def start_demo_sandbox(self) -> DemoSandbox: ...


class ConnectorFactory(Protocol):
    """Registered per platform; validates config and secrets and builds connectors."""

    name: ClassVar[str]
    kind: ClassVar[ConnectorKind]
    config_model: ClassVar[type[BaseModel]]
    secrets_model: ClassVar[type[BaseModel]]
    supports_polling: ClassVar[bool]
    # Config fields holding URLs the server will call: core refuses private targets.
    outbound_url_fields: ClassVar[tuple[str, ...]]

    def create(
        self, config: Mapping[str, Any], secrets: Mapping[str, Any], context: ConnectorContext
    ) -> Connector: ...
