"""Claude's answer: the forced tool, schema validation with readable errors, one repair turn."""

from __future__ import annotations

import copy
import itertools
import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.flows import answers
from core.flows.answers import (
    MAX_ERRORS,
    AnswerCheck,
    extract_answer,
    repair_messages,
    tool_choice_for,
    tool_for,
)
from core.flows.spec import OutputSpec
from core.sandbox.anthropic.schemagen import break_input, generate
from tests.core.flows.strategies import answers_for, output_specs

OUTPUT = OutputSpec.model_validate(
    {
        "fields": {
            "rating": {"type": "string", "enum": ["Hot", "Cold"]},
            "score": {"type": "integer", "minimum": 0, "maximum": 100},
            "tags": {"type": "array", "items": "string", "required": False},
        }
    }
)
ORIGINAL = [{"role": "user", "content": "Qualify this lead: Acme, 500 employees."}]


def reply(*blocks: dict[str, Any], stop_reason: str = "tool_use") -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": list(blocks),
        "stop_reason": stop_reason,
    }


def call(value: Any, *, name: str = "record_result", id_: str = "toolu_01A") -> dict[str, Any]:
    return {"type": "tool_use", "id": id_, "name": name, "input": value}


def check_api_shape(messages: Sequence[Mapping[str, Any]]) -> None:
    """The Messages API's rules for a conversation, as far as a repair turn touches them."""
    assert messages
    assert messages[0]["role"] == "user"
    for before, after in itertools.pairwise(messages):
        assert {before["role"], after["role"]} == {"user", "assistant"}, "roles must alternate"
    for index, message in enumerate(messages):
        content = message["content"]
        assert content, "no turn may be empty"
        if isinstance(content, str):
            continue
        calls = [b["id"] for b in content if b["type"] == "tool_use"]
        if calls:
            assert message["role"] == "assistant"
            following = messages[index + 1]["content"]
            results = [b for b in following if b["type"] == "tool_result"]
            assert following[: len(results)] == results, "tool results come first"
            assert sorted(r["tool_use_id"] for r in results) == sorted(calls)
            for result in results:
                assert isinstance(result["is_error"], bool)
                assert isinstance(result["content"], str)
                assert result["content"]
        for block in content:
            if block["type"] == "tool_result":
                previous = messages[index - 1]["content"]
                assert block["tool_use_id"] in [b.get("id") for b in previous]


def test_the_tool_and_tool_choice_come_from_the_output_spec() -> None:
    tool = tool_for(OUTPUT)
    assert tool == {
        "name": "record_result",
        "description": "Record the result for this record.",
        "input_schema": OUTPUT.json_schema(),
    }
    assert tool_choice_for(OUTPUT) == {"type": "tool", "name": "record_result"}
    named = OutputSpec.model_validate({"tool_name": "save", "fields": {"a": {"type": "boolean"}}})
    assert tool_for(named)["name"] == "save"
    assert tool_choice_for(named) == {"type": "tool", "name": "save"}


def test_a_valid_call_is_the_answer() -> None:
    value = {"rating": "Hot", "score": 80, "tags": ["b2b"]}
    message = reply({"type": "text", "text": "Recording."}, call(value))
    check = extract_answer(message, OUTPUT)
    assert check.ok
    assert check.answer == value
    assert check.errors == []
    assert check.tool_use_id == "toolu_01A"


def test_errors_name_the_path_and_say_what_is_wrong() -> None:
    value = {"rating": "Warm", "score": "high", "tags": ["ok", 7], "extra": 1}
    check = extract_answer(reply(call(value)), OUTPUT)
    assert not check.ok
    assert check.answer is None
    assert check.tool_use_id == "toolu_01A"
    assert check.errors == [
        "input: Additional properties are not allowed ('extra' was unexpected)",
        "input.rating: 'Warm' is not one of ['Hot', 'Cold']",
        "input.score: 'high' is not of type 'integer'",
        "input.tags[1]: 7 is not of type 'string'",
    ]


def test_missing_required_fields_and_bounds() -> None:
    check = extract_answer(reply(call({"score": 101})), OUTPUT)
    assert check.errors == [
        "input: 'rating' is a required property",
        "input.score: 101 is greater than the maximum of 100.0",
    ]


def test_at_most_ten_errors_and_long_values_are_shortened() -> None:
    spec = OutputSpec.model_validate({"fields": {"tags": {"type": "array", "items": "integer"}}})
    check = extract_answer(reply(call({"tags": ["x" * 1000] * 25})), spec)
    assert len(check.errors) == MAX_ERRORS
    assert check.errors[-1] == "… and 16 more errors"
    assert all(len(error) < 250 for error in check.errors)
    assert check.errors[0].startswith("input.tags[0]: 'xxx")
    assert check.errors[1].startswith("input.tags[1]: ")


def test_no_tool_call_is_an_error() -> None:
    text_only = reply({"type": "text", "text": "It is a hot lead."}, stop_reason="end_turn")
    check = extract_answer(text_only, OUTPUT)
    assert not check.ok
    assert check.errors == ["the answer did not call record_result"]
    assert check.tool_use_id is None
    cut = extract_answer(reply({"type": "text", "text": "It is"}, stop_reason="max_tokens"), OUTPUT)
    assert cut.errors == ["the answer did not call record_result (it stopped at max_tokens)"]
    other = extract_answer(reply(call({"rating": "Hot"}, name="other_tool")), OUTPUT)
    assert other.errors == ["the answer did not call record_result"]
    assert extract_answer({"content": None}, OUTPUT).errors


def test_the_validator_is_built_once_per_schema() -> None:
    spec = OutputSpec.model_validate({"fields": {"cache_probe": {"type": "number"}}})
    before = answers._validator.cache_info()
    for _ in range(3):
        extract_answer(reply(call({"cache_probe": 1})), spec)
        extract_answer(reply(call({"cache_probe": 1})), spec.model_copy())
    after = answers._validator.cache_info()
    assert after.misses - before.misses == 1
    assert after.hits - before.hits == 5


def test_repair_answers_the_tool_use_with_the_errors() -> None:
    message = reply({"type": "text", "text": "Here."}, call({"rating": "Warm", "score": 5}))
    original = copy.deepcopy(message)
    check = extract_answer(message, OUTPUT)
    messages = repair_messages(ORIGINAL, message, check)
    check_api_shape(messages)
    assert messages[0] == ORIGINAL[0]
    assert messages[1] == {"role": "assistant", "content": message["content"]}
    result = messages[2]["content"][0]
    assert result["type"] == "tool_result"
    assert result["tool_use_id"] == "toolu_01A"
    assert result["is_error"] is True
    assert "input.rating: 'Warm' is not one of ['Hot', 'Cold']" in result["content"]
    assert "record_result again" in result["content"]
    assert len(messages) == 3
    assert message == original  # the answer is not modified
    messages[1]["content"][0]["text"] = "changed"
    assert message == original  # nor shared with the new request


def test_repair_without_a_tool_call_asks_for_one_in_text() -> None:
    message = reply({"type": "text", "text": "Hot lead."}, stop_reason="end_turn")
    check = extract_answer(message, OUTPUT)
    messages = repair_messages(ORIGINAL, message, check)
    check_api_shape(messages)
    assert messages[1] == {"role": "assistant", "content": message["content"]}
    [block] = messages[2]["content"]
    assert block["type"] == "text"
    assert "calling the record_result tool" in block["text"]


def test_repair_answers_every_tool_use_in_the_turn() -> None:
    message = reply(call({"x": 1}, name="other", id_="toolu_01B"), call({"rating": 1}))
    messages = repair_messages(ORIGINAL, message, extract_answer(message, OUTPUT))
    check_api_shape(messages)
    ids = [b["tool_use_id"] for b in messages[2]["content"]]
    assert ids == ["toolu_01B", "toolu_01A"]


def test_repair_after_an_empty_answer_keeps_roles_alternating() -> None:
    message = reply(stop_reason="max_tokens")
    messages = repair_messages(ORIGINAL, message, extract_answer(message, OUTPUT))
    check_api_shape(messages)
    assert len(messages) == 1
    first, second = messages[0]["content"]
    assert first == {"type": "text", "text": ORIGINAL[0]["content"]}
    assert "record_result" in second["text"]


def test_a_valid_answer_needs_no_repair() -> None:
    message = reply(call({"rating": "Hot", "score": 1}))
    with pytest.raises(ValueError, match="nothing to repair"):
        repair_messages(ORIGINAL, message, extract_answer(message, OUTPUT))
    assert AnswerCheck(answer={"a": 1}).ok
    assert not AnswerCheck(answer=None, errors=["x"]).ok


@settings(max_examples=200, deadline=None)
@given(spec=output_specs, data=st.data())
def test_answers_that_fit_the_schema_pass_and_broken_ones_fail(
    spec: OutputSpec, data: st.DataObject
) -> None:
    value = data.draw(answers_for(spec))
    assert extract_answer(reply(call(value)), spec).ok
    # The sandbox's own generator is an independent source of valid and invalid inputs.
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    made = generate(spec.json_schema(), rng)
    assert extract_answer(reply(call(made)), spec).ok
    broken = extract_answer(reply(call(break_input(spec.json_schema(), made))), spec)
    assert not broken.ok
    assert 1 <= len(broken.errors) <= MAX_ERRORS
    assert all(error.startswith("input") and ": " in error for error in broken.errors)
    check_api_shape(repair_messages(ORIGINAL, reply(call(made)), broken))
