"""Context compression of reference documents, measured in tokens."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from core.gateway.catalog import Catalog, ModelInfo
from core.gateway.compression import compress_document_text, compress_request
from core.gateway.tokens import input_tokens


@pytest.fixture(scope="module")
def sonnet() -> ModelInfo:
    return Catalog.load().get("claude-sonnet-5-5")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a  b\t\tc", "a b c"),
        ("line one   \n   line two", "line one\nline two"),
        ("para one\n\n\n\n   para two", "para one\n\npara two"),
        ("para one\r\n\r\npara two\r\nnext", "para one\n\npara two\nnext"),
        ("  \n  padded  \n\n", "padded"),
        ("\u00a0non-breaking\u2003spaces", "non-breaking spaces"),
        ("already tidy", "already tidy"),
        ("", ""),
        ("{not json at all   }", "{not json at all }"),
    ],
)
def test_whitespace_collapses_but_paragraphs_stay(raw: str, expected: str) -> None:
    assert compress_document_text(raw) == expected


def test_json_is_minified_and_empty_values_dropped_recursively() -> None:
    raw = """
    {
        "id": 7,
        "name": "Acme",
        "fax": null,
        "notes": "",
        "tags": [],
        "extra": {},
        "owner": {"email": null, "phone": "", "team": {"lead": null}},
        "lines": [1, {"sku": "A", "note": null}, {"gone": []}, null, ""],
        "zero": 0,
        "flag": false,
        "text": "  keeps   inner   spaces  "
    }
    """
    assert orjson.loads(compress_document_text(raw)) == {
        "id": 7,
        "name": "Acme",
        "lines": [1, {"sku": "A"}, {}, None, ""],
        "zero": 0,
        "flag": False,
        "text": "  keeps   inner   spaces  ",
    }
    # Minified: no whitespace outside strings.
    assert compress_document_text('[ {"a" : 1 , "b" : null} ]') == '[{"a":1}]'


def test_numbers_keep_their_exact_literal() -> None:
    # Past 64 bits or 15 significant digits a float would lose precision: the literal stays.
    raw = r"""{"big": 123456789012345678901234567890, "x": null,
              "money": 12345678901234567.89, "rate": 1.50, "note": "a   b \u00e9 \"q\"",
              "list": [1e400, -0.0000000000000000001, {"n": null}]}"""
    assert compress_document_text(raw) == (
        '{"big":123456789012345678901234567890,"money":12345678901234567.89,"rate":1.50,'
        '"note":"a   b \u00e9 \\"q\\"","list":[1e400,-0.0000000000000000001,{}]}'
    )
    assert compress_document_text('{"huge": 1e400,  "x": ""}') == '{"huge":1e400}'
    # Ordinary numbers take the fast path and keep their value.
    assert compress_document_text('{"id": 9007199254740993, "f": 0.1}') == (
        '{"id":9007199254740993,"f":0.1}'
    )


def test_json_nested_too_deep_to_rewrite_is_left_as_it_is() -> None:
    deep = "[" * 5000 + "]" * 5000
    assert compress_document_text(f"  {deep}  ") == deep


def _document(data: str, source_type: str = "text") -> dict[str, Any]:
    return {"type": "document", "source": {"type": source_type, "data": data}, "title": "t"}


PADDED = "word   " * 2000  # 14000 characters, about 4667 tokens
CRM_JSON = orjson.dumps(
    {"records": [{"id": i, "name": f"n{i}", "fax": None, "tags": []} for i in range(200)]},
    option=orjson.OPT_INDENT_2,
).decode()


def request() -> dict[str, Any]:
    return {
        "model": "claude-sonnet-5-5",
        "max_tokens": 100,
        "tools": [{"name": "t", "description": "spaced    out", "input_schema": {}}],
        "system": [
            {"type": "text", "text": "You   are\n\n\n\nhelpful.", "cache_control": {"type": "x"}}
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    _document(CRM_JSON),
                    _document("QUJD   REVG", source_type="base64"),
                    {"type": "text", "text": PADDED},
                    {"type": "text", "text": "short   question?"},
                ],
            },
            {"role": "assistant", "content": "ok   then"},
            {"role": "user", "content": [_document(CRM_JSON), {"type": "text", "text": PADDED}]},
        ],
    }


def test_compresses_first_turn_documents_and_system_whitespace(sonnet: ModelInfo) -> None:
    body = request()
    before = copy.deepcopy(body)
    result = compress_request(body, sonnet)
    new = result.body
    first = new["messages"][0]["content"]
    assert (
        first[0]["source"]["data"]
        == orjson.dumps({"records": [{"id": i, "name": f"n{i}"} for i in range(200)]}).decode()
    )
    assert first[0]["title"] == "t"
    assert first[1] is body["messages"][0]["content"][1]  # not a text source
    assert first[2]["text"] == ("word " * 2000).strip()
    assert first[3] is body["messages"][0]["content"][3]  # short: not reference material
    assert new["system"] == [
        {"type": "text", "text": "You are\n\nhelpful.", "cache_control": {"type": "x"}}
    ]
    # Tools and later turns are never touched; the caller's body is unchanged.
    assert new["tools"] is body["tools"]
    assert new["messages"][1] is body["messages"][1]
    assert new["messages"][2] is body["messages"][2]
    assert body == before
    # Token accounting is consistent with the shared estimator.
    assert result.tokens_before == input_tokens(body, sonnet)
    assert result.tokens_after == input_tokens(new, sonnet)
    assert result.tokens_saved == result.tokens_before - result.tokens_after
    assert result.tokens_saved > 3000


def test_the_long_text_threshold_is_tunable(sonnet: ModelInfo) -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a   b"}]}]}
    assert compress_request(body, sonnet).body is body
    result = compress_request(body, sonnet, min_text_tokens=1)
    assert result.body["messages"][0]["content"][0]["text"] == "a b"
    assert result.tokens_saved == 1


def test_a_string_system_prompt_and_string_first_turn(sonnet: ModelInfo) -> None:
    body = {
        "system": "Be   brief.\n\n\n\nAlways.",
        "messages": [{"role": "user", "content": PADDED}],
    }
    result = compress_request(body, sonnet)
    assert result.body["system"] == "Be brief.\n\nAlways."
    assert result.body["messages"][0]["content"] == ("word " * 2000).strip()
    assert result.tokens_after == input_tokens(result.body, sonnet)
    assert body["system"] == "Be   brief.\n\n\n\nAlways."


def test_nothing_to_compress_returns_the_same_object(sonnet: ModelInfo) -> None:
    body = {
        "system": "Tidy.",
        "tools": [{"name": "t", "description": "a    b", "input_schema": {}}],
        "messages": [
            {"role": "user", "content": [_document("tidy text"), {"type": "text", "text": "Hi"}]},
            {"role": "user", "content": [_document("untidy    later   turn")]},
        ],
    }
    result = compress_request(body, sonnet)
    assert result.body is body
    assert result.tokens_saved == 0
    assert result.tokens_before == result.tokens_after == input_tokens(body, sonnet)
    assert compress_request({}, sonnet).body == {}
