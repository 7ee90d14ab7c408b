"""Prompt inputs: only the allow-listed fields leave, transformed, redacted and cut."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.base import Record
from core.errors import TerminalError, is_transient
from core.flows.inputs import MASK, InputError, PromptInputs, build_inputs, read_field
from core.flows.spec import FlowSpec

KEY = b"tenant-1-pseudonym-key-0123456789"
OTHER_KEY = b"tenant-2-pseudonym-key-9876543210"


def flow(inputs: dict[str, Any]) -> FlowSpec:
    return FlowSpec.model_validate(
        {
            "source": {"connector": "salesforce", "object": "Lead"},
            "inputs": inputs,
            "task": "classify",
            "prompt": "lead_qualification@1",
            "output": {"fields": {"rating": {"type": "string"}}},
        }
    )


def lead(**fields: Any) -> Record:
    return Record("Lead", "00Q1", fields)


def build(inputs: dict[str, Any], record: Record, key: bytes = KEY) -> PromptInputs:
    return build_inputs(flow(inputs), record, pseudonym_key=key)


def test_only_listed_fields_leave_even_when_the_record_has_more() -> None:
    record = lead(Company="Acme", SSN__c="123-45-6789", Email="a@acme.test", Phone="555")
    result = build({"company": {"field": "Company"}}, record)
    assert result.values == {"company": "Acme"}
    assert result.fields_used == ("Company",)
    sent = json.dumps(result.values)
    assert "123-45-6789" not in sent
    assert "a@acme.test" not in sent


def test_nested_paths_read_related_records_and_missing_keys_are_empty() -> None:
    record = lead(Account={"Name": "Acme", "Owner": {"Email": "o@acme.test"}}, Title=None)
    result = build(
        {
            "account": {"field": "Account.Name"},
            "owner": {"field": "Account.Owner.Email"},
            "industry": {"field": "Account.Industry"},
            "deep": {"field": "Title.Missing"},
        },
        record,
    )
    assert result.values == {
        "account": "Acme",
        "owner": "o@acme.test",
        "industry": "",
        "deep": "",
    }
    assert result.fields_used == (
        "Account.Industry",
        "Account.Name",
        "Account.Owner.Email",
        "Title.Missing",
    )


def test_a_key_spelled_with_dots_is_read_as_is() -> None:
    record = lead(**{"Account.Name": "Flat Ltd"})
    assert build({"account": {"field": "Account.Name"}}, record).values == {"account": "Flat Ltd"}


def test_values_render_as_text_or_compact_json() -> None:
    record = lead(S="x y", N=5, F=2.5, B=True, L=[1, "a"], D={"k": [1]}, Z=None)
    names = {"s": "S", "n": "N", "f": "F", "b": "B", "lst": "L", "d": "D", "z": "Z"}
    result = build({name: {"field": field} for name, field in names.items()}, record)
    assert result.values == {
        "s": "x y",
        "n": "5",
        "f": "2.5",
        "b": "true",
        "lst": '[1,"a"]',
        "d": '{"k":[1]}',
        "z": "",
    }


def test_transform_applies_to_the_value_before_rendering() -> None:
    record = lead(Company="  acme  ", Score=7)
    result = build(
        {
            "company": {"field": "Company", "transform": "upper(trim(@))"},
            "band": {"field": "Score", "transform": 'lookup(@, `{"7": "high"}`, \'low\')'},
        },
        record,
    )
    assert result.values == {"company": "ACME", "band": "high"}


def test_a_failing_transform_names_the_input_without_quoting_the_value() -> None:
    record = lead(Phone=5551234)
    with pytest.raises(InputError) as caught:
        build({"phone": {"field": "Phone", "transform": "upper(@)"}}, record)
    error = caught.value
    assert isinstance(error, TerminalError)
    assert not is_transient(error)
    assert error.problem_type == "flow-input-invalid"
    assert error.title
    assert "'phone'" in error.detail
    assert "number" in error.detail
    assert "5551234" not in error.detail
    assert error.extensions == {"input": "phone", "field": "Phone"}


def test_max_chars_cuts_and_marks_the_text_within_the_limit() -> None:
    record = lead(Description="abcdefghij", Short="abc")
    result = build(
        {
            "description": {"field": "Description", "max_chars": 5},
            "short": {"field": "Short", "max_chars": 3},
        },
        record,
    )
    assert result.values == {"description": "abcd…", "short": "abc"}
    assert result.truncated == ("description",)


def test_mask_replaces_the_value_and_counts_it() -> None:
    record = lead(Email="a@acme.test", Phone="555", Fax=None)
    result = build(
        {
            "email": {"field": "Email", "redact": "mask"},
            "phone": {"field": "Phone", "redact": "mask"},
            "fax": {"field": "Fax", "redact": "mask"},
        },
        record,
    )
    assert result.values == {"email": MASK, "phone": MASK, "fax": ""}
    assert result.redacted == {"mask": 2}


def test_pseudonyms_are_stable_per_key_and_differ_across_keys() -> None:
    inputs = {"email": {"field": "Email", "redact": "pseudonymize"}}
    first = build(inputs, lead(Email="a@acme.test")).values["email"]
    again = build(inputs, lead(Email="a@acme.test")).values["email"]
    other_value = build(inputs, lead(Email="b@acme.test")).values["email"]
    other_tenant = build(inputs, lead(Email="a@acme.test"), OTHER_KEY).values["email"]
    assert first == again
    assert first.startswith("email_")
    assert len(first) == len("email_") + 10
    assert "acme" not in first
    assert other_value != first
    assert other_tenant != first


def test_pseudonym_is_the_hmac_of_the_whole_value_even_when_cut() -> None:
    inputs = {"note": {"field": "Note", "redact": "pseudonymize", "max_chars": 200}}
    a = build(inputs, lead(Note="x" * 300 + "a")).values["note"]
    b = build(inputs, lead(Note="x" * 300 + "b")).values["note"]
    assert a != b  # a prefix-based pseudonym would make these equal


def test_pseudonymizing_needs_a_real_key() -> None:
    with pytest.raises(ValueError, match="pseudonym_key"):
        build({"email": {"field": "Email", "redact": "pseudonymize"}}, lead(Email="a"), b"")
    # No pseudonymized input: no key needed.
    assert build({"company": {"field": "Company"}}, lead(Company="Acme"), b"").values


def test_empty_values_are_never_redacted() -> None:
    record = lead(Email="", Phone="   ", Tags=[])
    result = build(
        {
            "email": {"field": "Email", "redact": "pseudonymize"},
            "phone": {"field": "Phone", "redact": "mask"},
            "tags": {"field": "Tags", "redact": "mask"},
        },
        record,
    )
    assert result.values == {"email": "", "phone": "", "tags": ""}
    assert result.redacted == {}


def test_required_inputs_that_are_empty_are_reported() -> None:
    record = lead(Company="Acme", Email="  ", Score=0, Flag=False)
    result = build(
        {
            "company": {"field": "Company", "required": True},
            "email": {"field": "Email", "required": True},
            "missing": {"field": "Nope", "required": True},
            "optional": {"field": "Nope2"},
            "score": {"field": "Score", "required": True},
            "flag": {"field": "Flag", "required": True},
        },
        record,
    )
    assert result.missing_required == ("email", "missing")


def test_digest_is_of_the_canonical_values_only() -> None:
    result = build({"company": {"field": "Company"}, "city": {"field": "City"}}, lead(Company="Ä"))
    canonical = json.dumps({"city": "", "company": "Ä"}, separators=(",", ":"), ensure_ascii=False)
    assert result.sha256 == hashlib.sha256(canonical.encode()).hexdigest()
    changed = build({"company": {"field": "Company"}, "city": {"field": "City"}}, lead(Company="B"))
    assert changed.sha256 != result.sha256


def test_read_field_stops_at_non_mappings() -> None:
    assert read_field({"A": "text"}, "A.B") is None
    assert read_field({"A": [{"B": 1}]}, "A.B") is None
    assert read_field({"A": {"B": (1, 2)}}, "A.B") == [1, 2]


field_names = st.from_regex(r"[A-Z][A-Za-z]{0,8}", fullmatch=True)
scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=30)


@settings(max_examples=200, deadline=None)
@given(
    fields=st.dictionaries(field_names, scalars, max_size=8),
    listed=st.lists(field_names, min_size=1, max_size=4, unique=True),
    max_chars=st.none() | st.integers(min_value=1, max_value=20),
)
def test_values_hold_exactly_the_inputs_and_respect_max_chars(
    fields: dict[str, Any], listed: list[str], max_chars: int | None
) -> None:
    inputs = {f"in_{i}": {"field": name, "max_chars": max_chars} for i, name in enumerate(listed)}
    result = build(inputs, lead(**fields))
    assert set(result.values) == set(inputs)
    assert result.fields_used == tuple(sorted(listed))
    for name, spec in inputs.items():
        text = result.values[name]
        if max_chars is not None:
            assert len(text) <= max_chars
        if name not in result.truncated:
            assert text == expected_text(fields.get(str(spec["field"])))


def expected_text(value: Any) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        return ""
    return value if isinstance(value, str) else json.dumps(value)
