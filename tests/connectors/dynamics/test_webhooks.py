"""Dataverse webhooks: each registration kind authenticates (a wrong or missing key is
refused before anything is parsed), RemoteExecutionContext bodies become events with
stable ids and the changed columns, and our own write-backs are dropped."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from connectors.base import ChangeType, ConnectorContext, InboundRequest
from connectors.dynamics import DynamicsConnector, DynamicsConnectorFactory
from connectors.dynamics.sandbox import APP_USER, CLIENT_ID, HUMAN_USER, DataverseSandbox
from core.errors import PayloadMalformed, SignatureInvalid
from tests.connectors.dynamics.conftest import SECRETS, WEBHOOK_SECRET

HOOK = "https://switchyard.test/hooks/con_dv"
AUTH_KINDS = [
    ({"kind": "header", "name": "x-switchyard-key"}, "header"),
    ({"kind": "webhookkey"}, "webhookkey"),
    ({"kind": "querystring", "name": "token"}, "querystring"),
]


def _connector(auth: dict[str, Any], **config: Any) -> DynamicsConnector:
    return DynamicsConnectorFactory().create(
        {
            "environment_url": "https://contoso.crm4.dynamics.com",
            "tenant_id": "contoso.onmicrosoft.com",
            "webhook_auth": auth,
            "application_user_id": APP_USER,
            "user_emails": {HUMAN_USER: "dana@contoso.example"},
            **config,
        },
        SECRETS,
        ConnectorContext("con_dv"),
    )


class Catcher:
    """An httpx transport that keeps what the SANDBOX sent."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(202)


def _inbound(request: httpx.Request) -> InboundRequest:
    return InboundRequest(
        method=request.method,
        url=str(request.url),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=request.content,
        query=dict(request.url.params),
    )


async def _sent(sandbox: DataverseSandbox, kind: str, name: str) -> list[InboundRequest]:
    catcher = Catcher()
    sandbox.register_webhook(HOOK, kind=kind, name=name, key=WEBHOOK_SECRET)
    account = sandbox.ids("account")[0]
    sandbox.change("account", account, {"description": "Planning a second plant."})
    async with httpx.AsyncClient(transport=httpx.MockTransport(catcher)) as client:
        await sandbox.deliver(client)
    return [_inbound(r) for r in catcher.requests]


@pytest.mark.parametrize(("auth", "kind"), AUTH_KINDS)
async def test_each_registration_kind_is_accepted_and_parsed(
    auth: dict[str, Any], kind: str
) -> None:
    sandbox = DataverseSandbox()
    connector = _connector(auth)
    [request] = await _sent(sandbox, kind, auth.get("name", "code"))
    connector.verify(request)
    [event] = connector.parse(request)
    assert event.object == "account"
    assert event.change_type is ChangeType.UPDATED
    assert event.changed_fields == ("description",)
    assert event.data["changed_by"] == "dana@contoso.example"
    assert event.data["message"] == "Update"
    assert connector.parse(request)[0].platform_event_id == event.platform_event_id
    await connector.aclose()


@pytest.mark.parametrize(("auth", "kind"), AUTH_KINDS)
async def test_a_wrong_or_missing_key_is_refused(auth: dict[str, Any], kind: str) -> None:
    connector = _connector(auth)
    [request] = await _sent(DataverseSandbox(), kind, auth.get("name", "code"))
    forged_headers = {
        k: ("wrong-key" if v == WEBHOOK_SECRET else v) for k, v in request.headers.items()
    }
    forged_query = {
        k: ("wrong-key" if v == WEBHOOK_SECRET else v) for k, v in request.query.items()
    }
    forged = InboundRequest("POST", HOOK, forged_headers, request.body, forged_query)
    with pytest.raises(SignatureInvalid, match="does not match"):
        connector.verify(forged)
    bare_headers = {k: v for k, v in request.headers.items() if v != WEBHOOK_SECRET}
    bare = InboundRequest("POST", HOOK, bare_headers, request.body, {})
    with pytest.raises(SignatureInvalid, match="missing"):
        connector.verify(bare)
    await connector.aclose()


def _context(**overrides: Any) -> bytes:
    body = {
        "MessageName": "Create",
        "PrimaryEntityName": "incident",
        "PrimaryEntityId": "0F8FAD5B-D9CB-469F-A165-70867728950E",
        "InitiatingUserId": HUMAN_USER,
        "UserId": HUMAN_USER,
        "OperationId": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "CorrelationId": "11111111-2222-4333-8444-555555555555",
        "Depth": 1,
        "OperationCreatedOn": "/Date(1733580000000)/",
        "InputParameters": [
            {"key": "Target", "value": {"Attributes": [{"key": "title", "value": "Help"}]}}
        ],
        **overrides,
    }
    return json.dumps(body).encode()


def _request(body: bytes) -> InboundRequest:
    return InboundRequest("POST", HOOK, {"x-switchyard-key": WEBHOOK_SECRET}, body)


def test_creates_deletes_and_redeliveries_map_to_stable_events() -> None:
    connector = _connector(AUTH_KINDS[0][0])
    [created] = connector.parse(_request(_context()))
    assert created.change_type is ChangeType.CREATED
    assert created.record_id == "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert created.occurred_at is not None
    assert created.occurred_at.year == 2024
    assert created.platform_event_id == connector.parse(_request(_context()))[0].platform_event_id
    [deleted] = connector.parse(_request(_context(MessageName="Delete")))
    assert deleted.change_type is ChangeType.DELETED
    assert deleted.platform_event_id != created.platform_event_id
    assert connector.parse(_request(_context(MessageName="Associate"))) == []


def test_our_own_application_user_and_app_are_dropped() -> None:
    connector = _connector(AUTH_KINDS[0][0])
    assert connector.parse(_request(_context(InitiatingUserId=APP_USER))) == []
    assert connector.parse(_request(_context(InitiatingUserApplicationId=CLIENT_ID))) == []


def test_a_body_that_is_not_a_context_is_malformed() -> None:
    connector = _connector(AUTH_KINDS[0][0])
    with pytest.raises(PayloadMalformed):
        connector.parse(_request(b"[1, 2]"))
    with pytest.raises(PayloadMalformed, match="MessageName"):
        connector.parse(_request(b"{}"))
