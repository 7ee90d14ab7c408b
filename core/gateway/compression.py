"""Context compression for reference documents: fewer tokens, same content.

* Plain text: every run of whitespace collapses to its strongest member: a blank line (one
  paragraph break), else a line break, else one space. Indentation is not kept.
* JSON (an object or an array): minified, with keys whose value is ``null``, ``""``, ``[]``
  or ``{}`` dropped recursively (removal can empty a parent, which is then dropped too).

:func:`compress_request` applies this to reference material only: ``document`` blocks with a
text source and long text blocks in the first user turn, plus whitespace-only collapsing of
the system prompt. Tools and later turns are never touched. The body is copied on write and
returned as is when nothing changes. Token counts use :mod:`core.gateway.tokens`.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import orjson

from core.gateway.catalog import ModelInfo
from core.gateway.tokens import content_block_tokens, input_tokens, text_tokens

LONG_TEXT_TOKENS = 1024
_LONG_NUMBER = re.compile(r"[0-9.]{17,}")


def collapse_whitespace(text: str) -> str:
    """Each whitespace run becomes a paragraph break (if it holds 2+ line breaks), a line
    break, or one space. Line by line with ``str.split``: C speed, no per-match callback."""
    out: list[str] = []
    blank = False
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = " ".join(raw.split())
        if not line:
            blank = True
            continue
        if out:
            out.append("\n\n" if blank else "\n")
        out.append(line)
        blank = False
    return "".join(out)


def _prune(value: Any) -> Any:
    if isinstance(value, dict):
        pruned = {key: _prune(item) for key, item in value.items()}
        return {key: item for key, item in pruned.items() if not _is_empty(item)}
    if isinstance(value, list):
        return [_prune(item) for item in value]
    return value


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and not value)


class _Number(str):
    """A JSON number kept as its literal text (the exact path)."""


def _dump_exact(value: Any) -> str:
    if isinstance(value, _Number):
        return str(value)
    if isinstance(value, str | bool) or value is None:
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(_dump_exact(item) for item in value) + "]"
    items = (json.dumps(k, ensure_ascii=False) + ":" + _dump_exact(v) for k, v in value.items())
    return "{" + ",".join(items) + "}"


def _not_json(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not JSON")


def _minified_json(text: str) -> str | None:
    """``text`` minified and pruned if it is a JSON object or array, else ``None``.

    orjson is the fast path, but it reads numbers as 64-bit values: integers past 2**64 and
    decimals of 16 or more significant digits would silently lose precision. Such literals
    (any run of 17+ digits and dots, a superset) take the exact path, which keeps every
    number's literal text.
    """
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return None
    try:
        if _LONG_NUMBER.search(stripped) is None:
            with contextlib.suppress(orjson.JSONDecodeError):  # e.g. 1e400: try the exact path
                return orjson.dumps(_prune(orjson.loads(stripped))).decode()
        exact = json.loads(
            stripped, parse_int=_Number, parse_float=_Number, parse_constant=_not_json
        )
        return _dump_exact(_prune(exact))
    except RecursionError:
        return stripped  # JSON too deep to rewrite safely: leave it as it is
    except ValueError:  # orjson.JSONDecodeError and json.JSONDecodeError included
        return None


def compress_document_text(text: str) -> str:
    """Minified, pruned JSON when ``text`` is a JSON object or array; else collapsed text."""
    minified = _minified_json(text)
    return minified if minified is not None else collapse_whitespace(text)


@dataclass(frozen=True)
class Compressed:
    body: Mapping[str, Any]
    tokens_before: int
    tokens_after: int
    tokens_saved: int


def _system(system: Any, model: ModelInfo) -> tuple[Any, int]:
    """The system prompt with collapsed whitespace, and the tokens saved."""
    if isinstance(system, str):
        new = collapse_whitespace(system)
        return new, text_tokens(system, model) - text_tokens(new, model)
    if not isinstance(system, Sequence) or isinstance(system, bytes):
        return system, 0
    blocks: list[Any] | None = None
    saved = 0
    for i, block in enumerate(system):
        if not (isinstance(block, Mapping) and block.get("type") == "text"):
            continue
        text = str(block.get("text", ""))
        new = collapse_whitespace(text)
        if new != text:
            blocks = blocks if blocks is not None else list(system)
            blocks[i] = {**block, "text": new}
            saved += text_tokens(text, model) - text_tokens(new, model)
    return (blocks if blocks is not None else system), saved


def _document_block(block: Any, model: ModelInfo, min_text_tokens: int) -> Any:
    """The block compressed, or the same object when it is not reference material."""
    if not isinstance(block, Mapping):
        return block
    kind = block.get("type")
    if kind == "document":
        source = block.get("source")
        if isinstance(source, Mapping) and source.get("type") == "text":
            data = str(source.get("data", ""))
            new = compress_document_text(data)
            if new != data:
                return {**block, "source": {**source, "data": new}}
    elif kind == "text" and content_block_tokens(block, model) >= min_text_tokens:
        text = str(block.get("text", ""))
        new = compress_document_text(text)
        if new != text:
            return {**block, "text": new}
    return block


def _first_turn(message: Mapping[str, Any], model: ModelInfo, min_tokens: int) -> tuple[Any, int]:
    """The first user message with its reference material compressed, and tokens saved."""
    content = message.get("content")
    if isinstance(content, str):
        if text_tokens(content, model) < min_tokens:
            return message, 0
        new_text = compress_document_text(content)
        saved = text_tokens(content, model) - text_tokens(new_text, model)
        return ({**message, "content": new_text}, saved) if new_text != content else (message, 0)
    if not isinstance(content, Sequence):
        return message, 0
    blocks: list[Any] | None = None
    saved = 0
    for i, block in enumerate(content):
        new = _document_block(block, model, min_tokens)
        if new is not block:
            blocks = blocks if blocks is not None else list(content)
            blocks[i] = new
            saved += content_block_tokens(block, model) - content_block_tokens(new, model)
    if blocks is None:
        return message, 0
    return {**message, "content": blocks}, saved


def compress_request(
    body: Mapping[str, Any], model: ModelInfo, *, min_text_tokens: int = LONG_TEXT_TOKENS
) -> Compressed:
    """Compress reference material in ``body`` (see the module docstring)."""
    before = input_tokens(body, model)
    new: dict[str, Any] | None = None
    saved = 0
    if "system" in body:
        system, system_saved = _system(body["system"], model)
        if system is not body["system"] and system != body["system"]:
            new = dict(body)
            new["system"] = system
            saved += system_saved
    messages = body.get("messages")
    if isinstance(messages, Sequence) and not isinstance(messages, str):
        for m, message in enumerate(messages):
            if isinstance(message, Mapping) and message.get("role") == "user":
                turn, turn_saved = _first_turn(message, model, min_text_tokens)
                if turn is not message:
                    new = new if new is not None else dict(body)
                    new["messages"] = [*messages[:m], turn, *messages[m + 1 :]]
                    saved += turn_saved
                break
    if new is None:
        return Compressed(body, before, before, 0)
    return Compressed(new, before, before - saved, saved)
