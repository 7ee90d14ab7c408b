"""Per-class actions: defaults, blocking (classes and places, never values), merging."""

from __future__ import annotations

import pydantic
import pytest

from core.errors import TerminalError
from core.gateway.redaction import RedactionBlocked, RedactionPolicy, apply

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


def test_defaults_block_credentials_and_redact_the_rest() -> None:
    policy = RedactionPolicy()
    assert policy.classes("block") == ("private_key", "bearer_token", "url_password", "api_key")
    assert policy.action("email") == "redact"
    assert policy.classes("allow") == ()


def test_block_names_classes_and_places_not_values() -> None:
    body = {
        "system": f"key {AWS_KEY}",
        "messages": [
            {"role": "user", "content": "hi jane@acme.com"},
            {"role": "user", "content": [{"type": "text", "text": f"again {AWS_KEY}"}]},
            {"role": "user", "content": "postgres://a:hunter22@db/x"},
        ],
    }
    with pytest.raises(RedactionBlocked) as caught:
        apply(RedactionPolicy(), body)
    error = caught.value
    assert isinstance(error, TerminalError)
    assert (error.problem_type, error.status) == ("data-blocked", 422)
    assert error.title
    assert "api_key in system, message 1" in error.detail
    assert "url_password in message 2" in error.detail
    assert AWS_KEY not in error.detail
    assert "hunter22" not in error.detail
    assert error.extensions["classes"] == ["api_key", "url_password"]


def test_apply_redacts_and_returns_the_redactor() -> None:
    body = {"messages": [{"role": "user", "content": "mail jane@acme.com from 10.1.2.3"}]}
    policy = RedactionPolicy(actions={"ip_address": "allow"})
    new_body, redactor = apply(policy, body)
    assert new_body["messages"][0]["content"] == "mail <EMAIL_1> from 10.1.2.3"
    assert redactor.counts() == {"email": 1}
    assert redactor.restore("<EMAIL_1>") == "jane@acme.com"


def test_allowing_a_credential_lets_it_through() -> None:
    body = {"messages": [{"role": "user", "content": f"key {AWS_KEY}"}]}
    policy = RedactionPolicy(actions={"api_key": "redact"})
    new_body, _ = apply(policy, body)
    assert new_body["messages"][0]["content"] == "key <API_KEY_1>"


def test_merged_overrides_per_class_and_region() -> None:
    tenant = RedactionPolicy(actions={"email": "allow", "phone": "block"}, region="DE")
    flow = RedactionPolicy(actions={"email": "redact", "api_key": "redact"})
    merged = tenant.merged(flow)
    assert merged.action("email") == "redact"
    assert merged.action("phone") == "block"
    assert merged.action("api_key") == "redact"
    assert merged.action("private_key") == "block"
    assert merged.region == "DE"  # not set by the flow
    assert tenant.merged(RedactionPolicy(region="FR")).region == "FR"


def test_policy_is_frozen_and_validated() -> None:
    policy = RedactionPolicy()
    with pytest.raises(pydantic.ValidationError):
        policy.region = "DE"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="unknown data classes"):
        RedactionPolicy(actions={"passport": "block"})
    with pytest.raises(pydantic.ValidationError):
        RedactionPolicy.model_validate({"actions": {"email": "hide"}})
