"""The write plan: values from the answer, checked against the target, minus what is there."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.base import FieldMeta, Patch, Record
from core.errors import TerminalError, is_transient
from core.flows.answers import extract_answer
from core.flows.patches import PatchError, PatchPlan, build_patch, same_value
from core.flows.spec import OutputSpec, WritebackSpec
from tests.core.flows.strategies import answers_for, output_specs

RECORD = Record("Lead", "00Q1", {"Rating": "Cold", "AccountId": "001A", "Score__c": 5})
METADATA = [
    FieldMeta("Rating", "picklist", picklist_values=("Hot", "Warm", "Cold")),
    FieldMeta("Score__c", "double"),
    FieldMeta("Summary__c", "textarea"),
    FieldMeta("Tags__c", "multipicklist", picklist_values=("a", "b")),
    FieldMeta("CreatedDate", "datetime", updateable=False),
]


def writeback(fields: dict[str, Any], **extra: Any) -> WritebackSpec:
    return WritebackSpec.model_validate({"fields": fields, **extra})


def plan(
    spec: WritebackSpec,
    output: dict[str, Any],
    *,
    record: Record = RECORD,
    target_fields: list[FieldMeta] | None = None,
    current: dict[str, Any] | None = None,
) -> PatchPlan:
    return build_patch(
        spec,
        output=output,
        record=record,
        default_object=record.object,
        target_fields=target_fields,
        current=current,
    )


def test_values_come_from_the_output_and_the_record_through_transforms() -> None:
    spec = writeback(
        {
            "Rating": {"from": "output.rating", "transform": 'lookup(@, `{"hot": "Hot"}`, @)'},
            "Summary__c": {"from": "output.summary", "transform": "truncate(@, `5`)"},
            "Parent__c": {"from": "record.AccountId"},
        }
    )
    result = plan(spec, {"rating": "hot", "summary": "A long summary"})
    assert result.object == "Lead"
    assert result.record_id == "00Q1"
    assert result.fields == {"Rating": "Hot", "Summary__c": "A lon", "Parent__c": "001A"}
    assert not result.empty
    assert result.to_patch("v7") == Patch("Lead", "00Q1", result.fields, "v7")


def test_nulls_are_skipped_unless_asked_to_clear() -> None:
    spec = writeback(
        {
            "Rating": {"from": "output.rating"},
            "Summary__c": {"from": "output.summary", "skip_if_null": False},
            "Other__c": {"from": "output.other", "transform": "coalesce(@, 'none')"},
        }
    )
    result = plan(spec, {})
    assert result.fields == {"Summary__c": None, "Other__c": "none"}
    assert result.skipped_null == ("Rating",)


def test_the_target_can_be_another_object_and_record() -> None:
    spec = writeback(
        {"Name": {"from": "output.name"}}, object="Account", record_id="record.AccountId"
    )
    result = plan(spec, {"name": "Acme"})
    assert (result.object, result.record_id) == ("Account", "001A")
    numeric = writeback({"Name": {"from": "output.name"}}, record_id="output.id")
    assert plan(numeric, {"name": "x", "id": 42}).record_id == "42"


@pytest.mark.parametrize("found", [None, "", True, 1.5, ["001A"]])
def test_a_record_id_expression_that_finds_no_id_fails_instead_of_writing_the_source(
    found: Any,
) -> None:
    spec = writeback({"Name": {"from": "output.name"}}, record_id="output.id")
    with pytest.raises(PatchError, match="record_id"):
        plan(spec, {"name": "x", "id": found})


def test_unknown_and_read_only_fields_fail_even_when_the_value_is_null() -> None:
    with pytest.raises(PatchError, match="'Nope__c' does not exist") as caught:
        plan(writeback({"Nope__c": {"from": "output.x"}}), {}, target_fields=METADATA)
    assert caught.value.problem_type == "flow-writeback-invalid"
    assert isinstance(caught.value, TerminalError)
    assert not is_transient(caught.value)
    with pytest.raises(PatchError, match="'CreatedDate' is read-only"):
        plan(
            writeback({"CreatedDate": {"from": "output.x"}}), {"x": "2024"}, target_fields=METADATA
        )
    # Without metadata nothing is checked: the platform decides.
    assert plan(writeback({"Nope__c": {"from": "output.x"}}), {"x": 1}).fields == {"Nope__c": 1}


def test_picklist_values_must_be_allowed() -> None:
    spec = writeback({"Rating": {"from": "output.rating"}, "Tags__c": {"from": "output.tags"}})
    ok = plan(spec, {"rating": "Warm", "tags": ["a", "b"]}, target_fields=METADATA)
    assert ok.fields == {"Rating": "Warm", "Tags__c": ["a", "b"]}
    with pytest.raises(PatchError) as caught:
        plan(spec, {"rating": "Tepid"}, target_fields=METADATA)
    assert (
        caught.value.detail
        == "writeback field 'Rating': 'Tepid' is not one of ['Hot', 'Warm', 'Cold']"
    )
    assert caught.value.extensions == {"field": "Rating", "allowed": ["Hot", "Warm", "Cold"]}
    with pytest.raises(PatchError, match="'c' is not one of"):
        plan(spec, {"rating": "Hot", "tags": ["a", "c"]}, target_fields=METADATA)


def test_values_equal_to_the_current_ones_are_dropped() -> None:
    spec = writeback(
        {
            "Rating": {"from": "output.rating"},
            "Score__c": {"from": "output.score"},
            "Summary__c": {"from": "output.summary", "skip_if_null": False},
            "Flag__c": {"from": "output.flag"},
            "New__c": {"from": "output.new", "skip_if_null": False},
        }
    )
    current = {"Rating": "Hot", "Score__c": 5.0, "Summary__c": None, "Flag__c": 1}
    output = {"rating": "Hot", "score": 5, "flag": True}
    result = plan(spec, output, current=current)
    assert result.unchanged == ("Rating", "Score__c", "Summary__c")
    # True is not 1, and a field missing from ``current`` is unknown, so written.
    assert result.fields == {"Flag__c": True, "New__c": None}
    assert result.before == {"Flag__c": 1, "New__c": None}


def test_an_answer_that_changes_nothing_is_an_empty_plan() -> None:
    spec = writeback({"Rating": {"from": "output.rating"}, "Score__c": {"from": "output.score"}})
    result = plan(spec, {"rating": "Cold"}, current=dict(RECORD.fields))
    assert result.empty
    assert result.fields == {}
    assert result.unchanged == ("Rating",)
    assert result.skipped_null == ("Score__c",)


def test_a_failing_expression_names_the_field_without_quoting_the_value() -> None:
    spec = writeback({"Summary__c": {"from": "output.summary", "transform": "upper(@)"}})
    with pytest.raises(PatchError) as caught:
        plan(spec, {"summary": 987654321})
    assert "'Summary__c'" in caught.value.detail
    assert "number" in caught.value.detail
    assert "987654321" not in caught.value.detail


def test_same_value_compares_as_the_platform_stores() -> None:
    assert same_value(5, 5.0)
    assert same_value("a", "a")
    assert same_value(None, None)
    assert same_value([1, {"a": 2.0}], (1.0, {"a": 2}))
    assert not same_value(True, 1)
    assert not same_value(0, False)
    assert not same_value("5", 5)
    assert not same_value("a", "a ")
    assert not same_value(None, "")
    assert not same_value({"a": 1}, {"a": 1, "b": None})
    assert not same_value([1], [1, 1])


# Output -> patch, for any answer that fits any output spec.


def current_values(value: Any) -> st.SearchStrategy[Any]:
    """What the target may hold: the same value (ints as floats too), null, or anything."""
    same = [st.just(value)]
    if isinstance(value, int) and not isinstance(value, bool):
        same.append(st.just(float(value)))
    anything = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
    return st.one_of(*same, anything)


@st.composite
def cases(draw: st.DrawFn) -> tuple[OutputSpec, WritebackSpec, dict[str, Any], dict[str, Any]]:
    output_spec = draw(output_specs)
    output = draw(answers_for(output_spec))
    fields = {
        f"T_{name}": {"from": f"output.{name}", "skip_if_null": draw(st.booleans())}
        for name in output_spec.fields
    }
    spec = writeback(fields)
    current: dict[str, Any] = {}
    for name in output_spec.fields:
        if draw(st.booleans()):
            current[f"T_{name}"] = draw(current_values(output.get(name)))
    return output_spec, spec, output, current


@settings(max_examples=200, deadline=None)
@given(case=cases())
def test_every_mapped_value_is_written_unless_already_there(
    case: tuple[OutputSpec, WritebackSpec, dict[str, Any], dict[str, Any]],
) -> None:
    output_spec, spec, output, current = case
    message = {
        "content": [{"type": "tool_use", "id": "t", "name": "record_result", "input": output}]
    }
    assert extract_answer(message, output_spec).ok  # the generated answer fits its schema
    result = plan(spec, output, current=current)
    assert set(result.fields) <= set(spec.fields)
    parts = [*result.fields, *result.unchanged, *result.skipped_null]
    assert sorted(parts) == sorted(spec.fields)  # each field lands in exactly one place
    for name in output_spec.fields:
        target, value = f"T_{name}", output.get(name)
        if value is None:
            continue
        if target in current and same_value(current[target], value):
            assert target in result.unchanged
        else:
            assert result.fields[target] == value
    assert result.before == {name: current.get(name) for name in result.fields}


@settings(max_examples=200, deadline=None)
@given(case=cases())
def test_applying_the_plan_then_planning_again_writes_nothing(
    case: tuple[OutputSpec, WritebackSpec, dict[str, Any], dict[str, Any]],
) -> None:
    _, spec, output, current = case
    first = plan(spec, output, current=current)
    applied = {**current, **first.fields}
    second = plan(spec, output, current=applied)
    assert second.empty
    assert set(second.unchanged) == set(first.fields) | set(first.unchanged)


def test_a_create_has_no_record_id_and_every_field_is_a_change() -> None:
    spec = writeback(
        {"Subject": {"from": "output.title"}, "Status": {"from": "'New'"}},
        action="create",
        object="Task",
    )
    source = Record("Lead", "L-1", {"Subject": "same text", "Status": "New"})
    plan = build_patch(
        spec,
        output={"title": "same text"},
        record=source,
        default_object="Lead",
        current={"Subject": "same text", "Status": "New"},
    )
    assert (plan.object, plan.record_id) == ("Task", None)
    assert plan.fields == {"Subject": "same text", "Status": "New"}  # nothing is "unchanged"
    assert plan.to_patch(None).is_create


def test_a_create_may_not_name_a_record_id() -> None:
    with pytest.raises(ValueError, match="a create has no record_id"):
        writeback({"Subject": {"from": "output.title"}}, action="create", record_id="record.Id")
