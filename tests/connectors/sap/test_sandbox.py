"""The SANDBOX speaks SAP's wire format, checked with a plain HTTP client: the CSRF
cycle, the V2 envelope, ETag preconditions, SAP's error JSON and atomic changesets."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from connectors.sap import multipart
from connectors.sap.sandbox import PREFIX, SandboxServer, SapSandbox
from tests.connectors.sap.conftest import PASSWORD, USER

ROOT = f"{PREFIX}/API_SALES_ORDER_SRV"
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@pytest.fixture
async def http(server: SandboxServer) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": AUTH, "Accept": "application/json", "sap-client": "100"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
        yield client


async def _token(http: httpx.AsyncClient) -> str:
    answer = await http.get(f"{ROOT}/", headers={"X-CSRF-Token": "Fetch"})
    assert answer.status_code == 200
    assert "SAP_SESSIONID_SBX_100" in answer.cookies
    return answer.headers["x-csrf-token"]


async def test_modifying_requests_need_the_token_and_the_cookies(
    http: httpx.AsyncClient, system: SapSandbox
) -> None:
    refused = await http.patch(f"{ROOT}/A_SalesOrder('0000000001')", json={})
    assert refused.status_code == 403
    assert refused.headers["x-csrf-token"] == "Required"
    assert "CSRF token validation failed" in refused.text
    token = await _token(http)
    etag = (await http.get(f"{ROOT}/A_SalesOrder('0000000001')")).headers["etag"]
    patched = await http.patch(
        f"{ROOT}/A_SalesOrder('0000000001')",
        json={"DeliveryBlockReason": "01"},
        headers={"X-CSRF-Token": token, "If-Match": etag},
    )
    assert patched.status_code == 204
    assert patched.headers["etag"] != etag
    stale = await http.patch(
        f"{ROOT}/A_SalesOrder('0000000001')",
        json={"DeliveryBlockReason": "02"},
        headers={"X-CSRF-Token": token, "If-Match": etag},
    )
    assert stale.status_code == 412
    missing = await http.patch(
        f"{ROOT}/A_SalesOrder('0000000001')", json={}, headers={"X-CSRF-Token": token}
    )
    assert missing.status_code == 428
    http.cookies.clear()
    cookieless = await http.patch(
        f"{ROOT}/A_SalesOrder('0000000001')", json={}, headers={"X-CSRF-Token": token}
    )
    assert cookieless.status_code == 403


async def test_the_v2_envelope_and_the_error_json(http: httpx.AsyncClient) -> None:
    page = (
        await http.get(f"{ROOT}/A_SalesOrder", params={"$top": "2", "$inlinecount": "allpages"})
    ).json()
    assert page["d"]["__count"] == "3"
    first = page["d"]["results"][0]
    assert first["__metadata"]["type"] == "API_SALES_ORDER_SRV.A_SalesOrderType"
    assert first["__metadata"]["etag"].startswith('W/"datetimeoffset')
    assert first["RequestedDeliveryDate"].startswith("/Date(")
    assert first["to_Item"]["__deferred"]["uri"].endswith("/to_Item")
    missing = await http.get(f"{ROOT}/A_SalesOrder('0000009999')")
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert set(error) == {"code", "message", "innererror"}
    assert error["message"]["lang"] == "en"
    assert error["innererror"]["errordetails"][0]["severity"] == "error"
    metadata = await http.get(f"{ROOT}/$metadata")
    assert metadata.headers["content-type"].startswith("application/xml")
    assert 'sap:updatable="false"' in metadata.text


async def test_a_failing_changeset_is_rolled_back_inside_a_202(
    http: httpx.AsyncClient, system: SapSandbox
) -> None:
    token = await _token(http)
    change = [
        multipart.HttpMessage(
            "PATCH A_SalesOrder('0000000001') HTTP/1.1",
            {"content-type": "application/json", "if-match": "*"},
            json.dumps({"DeliveryBlockReason": "05"}),
        ),
        multipart.HttpMessage(
            "PATCH A_SalesOrder('0000000002') HTTP/1.1",
            {"content-type": "application/json", "if-match": "*"},
            json.dumps({"SoldToParty": "0010100003"}),  # not updatable
        ),
    ]
    read = multipart.HttpMessage("GET A_SalesOrder('0000000003') HTTP/1.1")
    body = multipart.build([change, read], "batch_t")
    answer = await http.post(
        f"{ROOT}/$batch",
        content=body,
        headers={"Content-Type": "multipart/mixed; boundary=batch_t", "X-CSRF-Token": token},
    )
    assert answer.status_code == 202
    parts = multipart.parse(answer.text, answer.headers["content-type"])
    assert isinstance(parts[0], multipart.HttpMessage)  # the failed changeset: one error
    assert parts[0].status == 400
    assert isinstance(parts[1], multipart.HttpMessage)
    assert parts[1].status == 200
    assert (system.record("A_SalesOrder", "0000000001") or {}).get("DeliveryBlockReason") is None
    wrong_type = await http.post(
        f"{ROOT}/$batch",
        content=b"{}",
        headers={"Content-Type": "application/json", "X-CSRF-Token": token},
    )
    assert wrong_type.status_code == 415


async def test_auth_and_client_are_checked(http: httpx.AsyncClient, system: SapSandbox) -> None:
    assert (
        await http.get(f"{ROOT}/A_SalesOrder", headers={"Authorization": "Basic eDp5"})
    ).status_code == 401
    assert (
        await http.get(f"{ROOT}/A_SalesOrder", headers={"sap-client": "200"})
    ).status_code == 401
    system.inject(429, retry_after="2")
    throttled = await http.get(f"{ROOT}/A_SalesOrder")
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "2"
