"""The HTTP contract: auth, version header, error bodies, size limit, models endpoints."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from anthropic import AsyncAnthropic, AuthenticationError, NotFoundError

from core.sandbox.anthropic import AnthropicSandbox
from tests.core.sandbox.anthropic.conftest import KEY, MODEL, raw_http, sdk, user

BODY: dict[str, Any] = {"model": MODEL, "max_tokens": 10, "messages": user("hi")}


def _error(response: httpx.Response, status: int, error_type: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"type", "error", "request_id"}
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert body["request_id"] == response.headers["request-id"]
    assert body["request_id"].startswith("req_")
    message: str = body["error"]["message"]
    return message


async def test_the_api_key_is_required(url: str, sandbox: AnthropicSandbox) -> None:
    async with raw_http(url, {"anthropic-version": "2023-06-01"}) as anonymous:
        _error(await anonymous.post("/v1/messages", json=BODY), 401, "authentication_error")
        wrong = {"x-api-key": "sk-ant-wrong"}
        _error(
            await anonymous.post("/v1/messages", json=BODY, headers=wrong),
            401,
            "authentication_error",
        )
        bearer = {"authorization": f"Bearer {KEY}"}
        assert (await anonymous.post("/v1/messages", json=BODY, headers=bearer)).status_code == 200
    async with sdk(url, "sk-ant-wrong") as client:
        with pytest.raises(AuthenticationError):
            await client.models.list()


async def test_the_version_header_is_required(url: str, sandbox: AnthropicSandbox) -> None:
    async with raw_http(url, {"x-api-key": KEY}) as unversioned:
        message = _error(
            await unversioned.post("/v1/messages", json=BODY), 400, "invalid_request_error"
        )
        assert "anthropic-version" in message


@pytest.mark.parametrize(
    ("body", "status", "error_type", "mentions"),
    [
        ({k: v for k, v in BODY.items() if k != "model"}, 400, "invalid_request_error", "model"),
        (
            {k: v for k, v in BODY.items() if k != "max_tokens"},
            400,
            "invalid_request_error",
            "max_tokens",
        ),
        (
            {k: v for k, v in BODY.items() if k != "messages"},
            400,
            "invalid_request_error",
            "messages",
        ),
        ({**BODY, "max_tokens": 0}, 400, "invalid_request_error", "max_tokens"),
        (
            {**BODY, "messages": [{"role": "robot", "content": "x"}]},
            400,
            "invalid_request_error",
            "role",
        ),
        ({**BODY, "model": "claude-nope"}, 404, "not_found_error", "claude-nope"),
    ],
)
async def test_bad_bodies_get_the_api_error_shape(
    http: httpx.AsyncClient, body: dict[str, Any], status: int, error_type: str, mentions: str
) -> None:
    message = _error(await http.post("/v1/messages", json=body), status, error_type)
    assert mentions in message


async def test_invalid_json_and_unknown_routes(http: httpx.AsyncClient) -> None:
    _error(await http.post("/v1/messages", content=b"{nope"), 400, "invalid_request_error")
    _error(await http.post("/v1/messages", content=b"[1]"), 400, "invalid_request_error")
    _error(await http.get("/v1/unknown"), 404, "not_found_error")
    _error(await http.get("/v1/messages"), 400, "invalid_request_error")  # wrong method


async def test_bodies_over_32_mb_are_too_large(http: httpx.AsyncClient) -> None:
    huge = b'{"model":"x","pad":"' + b"a" * (32 * 1024 * 1024) + b'"}'
    _error(await http.post("/v1/messages", content=huge), 413, "request_too_large")

    async def chunked() -> Any:  # no content-length: counted while read
        for _ in range(33):
            yield b"a" * (1024 * 1024)

    _error(
        await http.post("/v1/messages/count_tokens", content=chunked()), 413, "request_too_large"
    )


async def test_models_list_and_retrieve(client: AsyncAnthropic, catalog: Any) -> None:
    everything = [model async for model in client.models.list(limit=4)]
    assert {model.id for model in everything} == set(catalog.models)
    assert everything == sorted(everything, key=lambda m: m.created_at, reverse=True)
    page = await client.models.list(limit=4)
    assert page.has_more
    assert len(page.data) == 4
    assert page.last_id == page.data[-1].id
    model = await client.models.retrieve(MODEL)
    assert (model.id, model.display_name, model.type) == (MODEL, "Claude Sonnet 5.5", "model")
    assert model.created_at.isoformat().startswith("2026-06-30")
    assert model.line == "sonnet"
    assert model.lifecycle == "active"
    with pytest.raises(NotFoundError):
        await client.models.retrieve("claude-nope")
