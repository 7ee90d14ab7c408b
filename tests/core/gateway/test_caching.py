"""Cache breakpoint placement: respect the caller, mark the long prefixes, copy on write."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from core.gateway.caching import count_breakpoints, place_breakpoints
from core.gateway.catalog import Catalog, ModelInfo

MARK = {"type": "ephemeral"}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture(scope="module")
def sonnet(catalog: Catalog) -> ModelInfo:
    model = catalog.get("claude-sonnet-5-5")
    assert (model.min_cacheable_tokens, model.chars_per_token) == (1024, 3.0)
    return model


def text(tokens: int, letter: str = "x") -> str:
    """About ``tokens`` tokens at 3 characters per token."""
    return letter * (tokens * 3)


def document(tokens: int) -> dict[str, Any]:
    source = {"type": "text", "media_type": "text/plain", "data": text(tokens, "d")}
    return {"type": "document", "source": source, "title": "contract"}


def tool(name: str, tokens: int) -> dict[str, Any]:
    return {
        "name": name,
        "description": text(tokens, "t"),
        "input_schema": {"type": "object", "properties": {}},
        "x_unknown": {"kept": True},
    }


def request() -> dict[str, Any]:
    return {
        "model": "claude-sonnet-5-5",
        "max_tokens": 512,
        "metadata": {"user_id": "u-1"},
        "x_future_field": [1, 2],
        "tools": [tool("lookup", 10), tool("search", 1100)],
        "system": text(800, "s"),
        "messages": [
            {"role": "user", "content": [document(3000), {"type": "text", "text": "Summarise."}]},
            {"role": "assistant", "content": "Done."},
            {"role": "user", "content": [document(3000), {"type": "text", "text": "Again."}]},
        ],
    }


def test_marks_last_tool_system_and_first_turn_documents(sonnet: ModelInfo) -> None:
    body = request()
    before = copy.deepcopy(body)
    result = place_breakpoints(body, sonnet)
    assert result.reason == "placed"
    assert result.placed == (("tools", 1), ("system", 0), ("messages", 0, 0))
    new = result.body
    assert new["tools"][1]["cache_control"] == MARK
    assert "cache_control" not in new["tools"][0]
    # A string system prompt becomes one text block that carries the breakpoint.
    assert new["system"] == [{"type": "text", "text": body["system"], "cache_control": MARK}]
    assert new["messages"][0]["content"][0]["cache_control"] == MARK
    assert "cache_control" not in new["messages"][0]["content"][1]
    assert "cache_control" not in new["messages"][2]["content"][0]  # later turns: never
    assert count_breakpoints(new) == 3
    # Every other field survives, unknown ones included.
    for key in ("model", "max_tokens", "metadata", "x_future_field"):
        assert new[key] == body[key]
    assert new["tools"][1]["x_unknown"] == {"kept": True}
    assert new["messages"][0]["content"][0]["title"] == "contract"
    # The caller's body is untouched; unchanged parts are shared, not copied.
    assert body == before
    assert new is not body
    assert new["tools"][0] is body["tools"][0]
    assert new["messages"][1] is body["messages"][1]
    assert new["messages"][2] is body["messages"][2]
    assert new["messages"][0]["content"][1] is body["messages"][0]["content"][1]
    assert new["metadata"] is body["metadata"]


@pytest.mark.parametrize(
    "mark",
    [
        lambda body: body["tools"][0].__setitem__("cache_control", {"type": "ephemeral"}),
        lambda body: body.__setitem__(
            "system",
            [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        ),
        lambda body: body["messages"][2]["content"][1].__setitem__(
            "cache_control", {"type": "ephemeral", "scope": "org"}
        ),
        lambda body: body.__setitem__("cache_control", {"type": "ephemeral"}),
        lambda body: body["messages"][2]["content"].append(
            {
                "type": "tool_result",
                "tool_use_id": "t1",
                "content": [{"type": "text", "text": "r", "cache_control": {"type": "ephemeral"}}],
            }
        ),
    ],
    ids=["tool", "system-1h", "later-turn-scope", "automatic", "nested-tool-result"],
)
def test_any_caller_choice_means_no_change(sonnet: ModelInfo, mark: Any) -> None:
    body = request()
    mark(body)
    before = copy.deepcopy(body)
    result = place_breakpoints(body, sonnet)
    assert result.body is body
    assert result.placed == ()
    assert result.reason == "caller-set"
    assert body == before


def test_nothing_below_the_model_minimum(catalog: Catalog) -> None:
    haiku = catalog.get("claude-haiku-5-5")  # minimum 2048
    body = {
        "tools": [tool("lookup", 300)],
        "system": text(900),
        "messages": [{"role": "user", "content": [document(700)]}],
    }
    result = place_breakpoints(body, haiku)
    assert (result.body, result.placed, result.reason) == (body, (), "below-minimum")
    assert result.body is body


def test_the_minimum_counts_the_cumulative_prefix(sonnet: ModelInfo) -> None:
    body = {
        "tools": [tool("lookup", 400)],  # alone below 1024
        "system": [{"type": "text", "text": "a"}, {"type": "text", "text": text(700)}],
        "messages": [{"role": "user", "content": "Hello"}],
    }
    result = place_breakpoints(body, sonnet)
    assert result.placed == (("system", 1),)
    assert result.body["system"][0] is body["system"][0]
    assert result.body["tools"] is body["tools"]


def test_keeps_the_later_candidates_when_there_are_too_many(sonnet: ModelInfo) -> None:
    body = {
        "tools": [tool("search", 1100)],
        "system": [{"type": "text", "text": text(100)}],
        "messages": [{"role": "user", "content": [document(500) for _ in range(4)]}],
    }
    result = place_breakpoints(body, sonnet)
    assert result.placed == tuple(("messages", 0, c) for c in range(4))
    assert result.reason == "placed; kept the last 4 of 6 candidates"
    assert count_breakpoints(result.body) == 4
    assert result.body["tools"] is body["tools"]
    assert result.body["system"] is body["system"]
    # With a single slot the longest prefix wins.
    assert place_breakpoints(body, sonnet, max_breakpoints=1).placed == (("messages", 0, 3),)
    assert place_breakpoints(body, sonnet, max_breakpoints=0).reason == "disabled"


def test_long_text_blocks_count_as_reference_documents(sonnet: ModelInfo) -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": text(1500)},
                    {"type": "text", "text": text(1023)},
                    {"type": "image", "source": {"type": "base64", "data": "AAAA"}},
                ],
            }
        ]
    }
    assert place_breakpoints(body, sonnet).placed == (("messages", 0, 0),)
    lower = place_breakpoints(body, sonnet, document_min_tokens=500)
    assert lower.placed == (("messages", 0, 0), ("messages", 0, 1))


def test_a_long_string_first_turn_becomes_a_marked_text_block(sonnet: ModelInfo) -> None:
    body = {"messages": [{"role": "user", "content": text(2000)}]}
    result = place_breakpoints(body, sonnet)
    assert result.placed == (("messages", 0, 0),)
    block = {"type": "text", "text": body["messages"][0]["content"], "cache_control": MARK}
    assert result.body["messages"] == [{"role": "user", "content": [block]}]
    assert isinstance(body["messages"][0]["content"], str)


def test_no_candidates_leaves_the_body_alone(sonnet: ModelInfo) -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}
    result = place_breakpoints(body, sonnet)
    assert (result.body, result.placed, result.reason) == (body, (), "no-candidates")
    assert place_breakpoints({}, sonnet).reason == "no-candidates"


def test_count_breakpoints() -> None:
    assert count_breakpoints({}) == 0
    assert count_breakpoints(request()) == 0
    body = request()
    body["cache_control"] = {"type": "ephemeral"}
    body["tools"][1]["cache_control"] = {"type": "ephemeral"}
    body["messages"][0]["content"][0]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    assert count_breakpoints(body) == 3
