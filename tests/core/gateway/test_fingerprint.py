"""Fingerprints: what counts toward a request's identity, tenants never colliding, and
which requests may use the response cache."""

from __future__ import annotations

from typing import Any

import pytest

from core.gateway.fingerprint import cacheable, request_fingerprint

BODY: dict[str, Any] = {
    "model": "claude-haiku-5-5",
    "max_tokens": 256,
    "temperature": 0,
    "system": [{"type": "text", "text": "Classify.", "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": "Is this a lead?"}],
}
HEADERS = {"anthropic-version": "2023-06-01"}


def fingerprint(
    body: dict[str, Any] = BODY, tenant: str = "t1", headers: dict[str, str] | None = None
) -> str:
    return request_fingerprint(tenant, body, headers={**HEADERS, **(headers or {})})


def test_a_fingerprint_is_a_stable_sha256_whatever_the_key_order() -> None:
    reordered = dict(reversed(list(BODY.items())))
    reordered["system"] = [dict(reversed(list(BODY["system"][0].items())))]
    assert fingerprint() == fingerprint(reordered)
    assert len(fingerprint()) == 64
    int(fingerprint(), 16)


def test_identical_requests_from_two_tenants_never_collide() -> None:
    assert fingerprint(tenant="t1") != fingerprint(tenant="t2")
    # Not fooled by moving text between the tenant id and the body.
    assert request_fingerprint("t1", {"a": 1}) != request_fingerprint("t", {"1a": 1})


def test_stream_and_metadata_do_not_change_the_fingerprint() -> None:
    noisy = {**BODY, "stream": True, "metadata": {"user_id": "u-42"}}
    assert fingerprint(noisy) == fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        {"model": "claude-sonnet-5-5"},
        {"max_tokens": 257},
        {"temperature": 0.5},
        {"messages": [{"role": "user", "content": "Is this a customer?"}]},
        {"system": [{"type": "text", "text": "Classify."}]},  # cache_control counts too
        {"tools": []},
    ],
)
def test_any_other_body_change_changes_the_fingerprint(change: dict[str, Any]) -> None:
    assert fingerprint({**BODY, **change}) != fingerprint()


def test_version_and_beta_headers_count_other_headers_do_not() -> None:
    base = fingerprint()
    assert fingerprint(headers={"anthropic-version": "2024-01-01"}) != base
    with_beta = fingerprint(headers={"anthropic-beta": "b1,b2"})
    assert with_beta != base
    # Names are case-insensitive and the beta list is a set.
    assert (
        request_fingerprint(
            "t1", BODY, headers={"Anthropic-Version": "2023-06-01", "ANTHROPIC-BETA": " b2, b1 "}
        )
        == with_beta
    )
    assert fingerprint(headers={"x-api-key": "secret", "user-agent": "sdk"}) == base


def test_temperature_zero_without_server_tools_is_cacheable() -> None:
    assert cacheable(BODY)
    assert cacheable({**BODY, "temperature": 0.0})
    client_tool = {"name": "lookup", "input_schema": {"type": "object"}}
    assert cacheable({**BODY, "tools": [client_tool, {**client_tool, "type": "custom"}]})


@pytest.mark.parametrize(
    "body",
    [
        {k: v for k, v in BODY.items() if k != "temperature"},  # the default is 1
        {**BODY, "temperature": 0.2},
        {**BODY, "temperature": False},
        {**BODY, "temperature": "0"},
        {**BODY, "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
        {**BODY, "tools": "not a list"},
    ],
)
def test_other_requests_are_cacheable_only_by_opt_in(body: dict[str, Any]) -> None:
    assert not cacheable(body)
    assert cacheable(body, opt_in=True)
