"""The ``webhook`` connector through its factory: verify and parse inbound deliveries, and
fetch / write records against the records sandbox over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from connectors.base import (
    ChangeType,
    ConnectorContext,
    ConnectorKind,
    InboundRequest,
    IngestResult,
    Patch,
    RecordRef,
    WriteStatus,
)
from connectors.webhook import WebhookConnector, WebhookConnectorFactory
from connectors.webhook.sandbox import RecordsSandbox, SandboxServer, signed_delivery
from core.errors import (
    ConnectorTerminalError,
    ConnectorTransientError,
    InvalidRequest,
    PayloadMalformed,
    SignatureInvalid,
)

SECRET = "current-signing-secret-0123"
PREVIOUS = "previous-signing-secret-456"
TOKEN = "tool-api-token"
TOLERANCE = 300
EVENT = {
    "id": "evt-1",
    "object": "ticket",
    "record_id": "T-1",
    "type": "updated",
    "changed_fields": ["status"],
    "occurred_at": "2025-01-02T03:04:05Z",
    "data": {"status": "closed"},
}


def make_connector(
    base_url: str | None = None, *, token: str | None = TOKEN, **secrets: str
) -> WebhookConnector:
    config: dict[str, Any] = {"timeout_seconds": 5}
    if base_url is not None:
        config["base_url"] = base_url
    all_secrets: dict[str, Any] = {"signing_secret": SECRET, **secrets}
    if token is not None:
        all_secrets["api_token"] = token
    return WebhookConnectorFactory().create(
        config, all_secrets, ConnectorContext("con_test", webhook_tolerance_seconds=TOLERANCE)
    )


def inbound(body: bytes, headers: dict[str, str] | None = None) -> InboundRequest:
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    return InboundRequest(method="POST", url="/hooks/con_test", headers=lowered, body=body)


def signed(secret: str = SECRET, timestamp: int | None = None) -> InboundRequest:
    return inbound(*signed_delivery(secret, [EVENT], timestamp=timestamp))


# ---------------------------------------------------------------- verify


def test_a_correctly_signed_delivery_verifies() -> None:
    make_connector().verify(signed())


def test_a_wrong_secret_is_rejected() -> None:
    with pytest.raises(SignatureInvalid, match="does not match"):
        make_connector().verify(signed("somebody-elses-secret-000"))


def test_the_previous_secret_is_accepted_during_a_rotation() -> None:
    rotating = make_connector(previous_signing_secret=PREVIOUS)
    rotating.verify(signed(PREVIOUS))
    rotating.verify(signed(SECRET))
    with pytest.raises(SignatureInvalid):
        make_connector().verify(signed(PREVIOUS))  # not configured → not accepted


@pytest.mark.parametrize("offset", [-(TOLERANCE + 1), TOLERANCE + 1, -3600, 86400])
def test_a_signature_outside_five_minutes_is_rejected(offset: int) -> None:
    with pytest.raises(SignatureInvalid, match="from now"):
        make_connector().verify(signed(timestamp=int(time.time()) + offset))


@pytest.mark.parametrize("offset", [-(TOLERANCE - 30), TOLERANCE - 30])
def test_a_signature_inside_the_window_is_accepted(offset: int) -> None:
    make_connector().verify(signed(timestamp=int(time.time()) + offset))


def test_a_changed_body_is_rejected() -> None:
    request = signed()
    tampered = inbound(request.body.replace(b"closed", b"opened"), dict(request.headers))
    with pytest.raises(SignatureInvalid):
        make_connector().verify(tampered)


def test_a_missing_header_is_rejected() -> None:
    body, _ = signed_delivery(SECRET, [EVENT])
    with pytest.raises(SignatureInvalid, match="missing"):
        make_connector().verify(inbound(body, {"Content-Type": "application/json"}))


@pytest.mark.parametrize(
    "header",
    ["", "garbage", "t=abc,v1=deadbeef", "t=1700000000", "v1=deadbeef", "t=-5,v1=ab", "v1"],
)
def test_a_malformed_header_is_rejected(header: str) -> None:
    body, _ = signed_delivery(SECRET, [EVENT])
    with pytest.raises(SignatureInvalid):
        make_connector().verify(inbound(body, {"Switchyard-Signature": header}))


# ----------------------------------------------------------------- parse


def test_a_valid_body_parses_into_change_events() -> None:
    second = {"id": "evt-2", "object": "ticket", "record_id": "T-2", "type": "deleted"}
    body, headers = signed_delivery(SECRET, [EVENT, second])
    events = make_connector().parse(inbound(body, headers))
    first, other = events
    assert (first.platform_event_id, first.object, first.record_id) == ("evt-1", "ticket", "T-1")
    assert first.change_type is ChangeType.UPDATED
    assert first.changed_fields == ("status",)
    assert first.occurred_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert first.data == {"status": "closed"}
    assert (other.change_type, other.changed_fields, other.occurred_at, other.data) == (
        ChangeType.DELETED,
        (),
        None,
        {},
    )


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"\xff\xfe\x00",
        b'{"events": [}',
        # Python's json accepts these, but they are not JSON and JSONB refuses them.
        b'{"events": [{"id": "e", "object": "t", "record_id": "1", "type": "created",'
        b' "data": {"x": NaN}}]}',
        b'{"events": [], "x": -Infinity}',
        b"[" * 100_000,
    ],
)
def test_malformed_json_is_payload_malformed(body: bytes) -> None:
    with pytest.raises(PayloadMalformed, match="not JSON"):
        make_connector().parse(inbound(body))


@pytest.mark.parametrize(
    ("occurred_at", "expected"),
    [
        ("2025-01-02T03:04:05", datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2025-01-02T05:04:05+02:00", datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ],
)
def test_occurred_at_is_normalised_to_utc(occurred_at: str, expected: datetime) -> None:
    body, headers = signed_delivery(SECRET, [EVENT | {"occurred_at": occurred_at}])
    [event] = make_connector().parse(inbound(body, headers))
    assert event.occurred_at == expected
    assert event.occurred_at is not None
    assert event.occurred_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({}, "events: Field required"),
        ({"events": []}, "events: List should have at least 1 item"),
        ({"events": "x"}, "events: Input should be a valid list"),
        ([EVENT], "body: Input should be"),
        ({"events": [EVENT | {"type": "exploded"}]}, "events.0.type"),
        ({"events": [{k: v for k, v in EVENT.items() if k != "id"}]}, "events.0.id"),
        ({"events": [EVENT | {"object": "../etc"}]}, "events.0.object"),
        ({"events": [EVENT | {"occurred_at": "yesterday"}]}, "events.0.occurred_at"),
        ({"events": [EVENT | {"surprise": 1}]}, "events.0.surprise"),
        ({"events": [EVENT], "extra": True}, "extra: Extra inputs are not permitted"),
    ],
)
def test_schema_errors_are_invalid_requests_naming_the_reason(payload: Any, reason: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        make_connector().parse(inbound(json.dumps(payload).encode()))
    assert reason in caught.value.detail
    assert caught.value.extensions["errors"]


def test_the_connector_is_crm_push_only_and_uses_the_default_ack() -> None:
    connector = make_connector()
    assert connector.kind is ConnectorKind.CRM
    assert connector.ack(IngestResult(accepted=1, duplicates=0, jobs=[1])) is None


async def test_polling_is_not_supported_and_fields_are_not_described() -> None:
    connector = make_connector()
    with pytest.raises(NotImplementedError):
        await connector.poll(None)
    assert await connector.describe("ticket") == []


# ------------------------------------------------------ fetch and write


@pytest.fixture
def tool() -> RecordsSandbox:
    return RecordsSandbox(
        {"ticket": {"T-1": {"subject": "Printer", "status": "open", "priority": "low"}}},
        token=TOKEN,
    )


@pytest.fixture
def server(tool: RecordsSandbox) -> Iterator[SandboxServer]:
    with SandboxServer(tool.app) as running:
        yield running


@pytest.fixture
async def connector(server: SandboxServer) -> AsyncIterator[WebhookConnector]:
    built = make_connector(server.url)
    yield built
    await built.aclose()


async def test_fetch_returns_the_fields_and_the_etag(
    connector: WebhookConnector, tool: RecordsSandbox
) -> None:
    record = await connector.fetch(RecordRef("ticket", "T-1"))
    assert (record.object, record.record_id) == ("ticket", "T-1")
    assert dict(record.fields) == {"subject": "Printer", "status": "open", "priority": "low"}
    assert record.version == tool.etag("ticket", "T-1")
    narrowed = await connector.fetch(RecordRef("ticket", "T-1"), ["status", "missing"])
    assert dict(narrowed.fields) == {"status": "open"}


async def test_a_write_at_the_current_version_is_applied(
    connector: WebhookConnector, tool: RecordsSandbox
) -> None:
    record = await connector.fetch(RecordRef("ticket", "T-1"))
    result = await connector.write(
        Patch("ticket", "T-1", {"priority": "high"}, expected_version=record.version), "job-1"
    )
    assert result.status is WriteStatus.WRITTEN
    assert result.version == tool.etag("ticket", "T-1") != record.version
    assert tool.get("ticket", "T-1") == {"subject": "Printer", "status": "open", "priority": "high"}


async def test_a_write_after_someone_else_changed_the_record_is_a_conflict(
    connector: WebhookConnector, tool: RecordsSandbox
) -> None:
    record = await connector.fetch(RecordRef("ticket", "T-1"))
    tool.put("ticket", "T-1", {"subject": "Printer", "status": "closed", "priority": "low"})
    result = await connector.write(
        Patch("ticket", "T-1", {"priority": "high"}, expected_version=record.version), "job-2"
    )
    assert result.status is WriteStatus.CONFLICT
    assert tool.get("ticket", "T-1") == {
        "subject": "Printer",
        "status": "closed",
        "priority": "low",
    }
    assert tool.applied == []


async def test_the_same_idempotency_key_is_not_applied_twice(
    connector: WebhookConnector, tool: RecordsSandbox
) -> None:
    record = await connector.fetch(RecordRef("ticket", "T-1"))
    patch = Patch("ticket", "T-1", {"priority": "high"}, expected_version=record.version)
    first = await connector.write(patch, "job-7")
    # A retried job sends the same key: the answer repeats, the change does not (and the
    # now-stale If-Match does not turn the retry into a conflict).
    again = await connector.write(patch, "job-7")
    assert first.status is again.status is WriteStatus.WRITTEN
    assert again.version == first.version
    assert tool.applied == [("ticket", "T-1", "job-7")]
    other = await connector.write(Patch("ticket", "T-1", {"priority": "low"}), "job-8")
    assert other.status is WriteStatus.WRITTEN
    assert len(tool.applied) == 2


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
async def test_server_errors_and_throttling_are_transient(
    connector: WebhookConnector, tool: RecordsSandbox, status: int
) -> None:
    tool.fail_next(status, retry_after=7)
    with pytest.raises(ConnectorTransientError) as caught:
        await connector.fetch(RecordRef("ticket", "T-1"))
    assert caught.value.retry_after == 7
    tool.fail_next(status)
    with pytest.raises(ConnectorTransientError):
        await connector.write(Patch("ticket", "T-1", {"status": "x"}), "job-9")
    assert tool.applied == []
    assert (await connector.fetch(RecordRef("ticket", "T-1"))).fields["status"] == "open"


async def test_an_absent_record_is_terminal(connector: WebhookConnector) -> None:
    with pytest.raises(ConnectorTerminalError, match="HTTP 404") as caught:
        await connector.fetch(RecordRef("ticket", "T-404"))
    assert caught.value.extensions["status_code"] == 404
    with pytest.raises(ConnectorTerminalError, match="HTTP 404"):
        await connector.write(Patch("ticket", "T-404", {"status": "x"}), "job-10")


async def test_a_wrong_api_token_is_terminal(server: SandboxServer) -> None:
    connector = make_connector(server.url, token="not-the-token")
    try:
        with pytest.raises(ConnectorTerminalError, match="HTTP 401"):
            await connector.fetch(RecordRef("ticket", "T-1"))
    finally:
        await connector.aclose()


async def test_connection_refused_is_transient() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago refuses connections
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connector = make_connector(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(ConnectorTransientError, match="ConnectError"):
            await connector.fetch(RecordRef("ticket", "T-1"))
        with pytest.raises(ConnectorTransientError):
            await connector.write(Patch("ticket", "T-1", {}), "job-11")
    finally:
        await connector.aclose()


async def test_a_base_url_that_answers_html_is_terminal() -> None:
    async def html(request: Request) -> Response:
        return HTMLResponse("<html>login page</html>")

    with SandboxServer(Starlette(routes=[Route("/{path:path}", html)])) as server:
        connector = make_connector(server.url)
        try:
            with pytest.raises(ConnectorTerminalError, match="expected a JSON object"):
                await connector.fetch(RecordRef("ticket", "T-1"))
        finally:
            await connector.aclose()


async def test_without_base_url_records_cannot_be_reached() -> None:
    connector = make_connector()
    with pytest.raises(ConnectorTerminalError, match="base_url"):
        await connector.fetch(RecordRef("ticket", "T-1"))
    with pytest.raises(ConnectorTerminalError, match="base_url"):
        await connector.write(Patch("ticket", "T-1", {}), "job-12")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            b'{"events":[{"id":"e\\u0000","object":"ticket","record_id":"1","type":"created"}]}',
            "NUL",
        ),
        (
            b'{"events":[{"id":"e1","object":"ticket","record_id":"1","type":"created",'
            b'"data":{"n":1e400}}]}',
            "out of range",
        ),
        (
            b'{"events":[{"id":"e1","object":"ticket","record_id":"1","type":"created",'
            b'"data":{"note":"a\\u0000b"}}]}',
            "NUL",
        ),
    ],
)
def test_values_postgresql_cannot_store_are_refused_on_every_backend(
    body: bytes, reason: str
) -> None:
    from connectors.webhook import webhooks

    request = InboundRequest("POST", "http://t/hooks/c", {}, body)
    with pytest.raises((InvalidRequest, PayloadMalformed), match=reason):
        webhooks.parse(request)
