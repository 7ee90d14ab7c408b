"""Claude's structured answer: the tool it must call, checking what it sent, one repair.

A flow's ``output`` becomes one tool (``record_result`` by default) whose ``input_schema``
is the output's JSON Schema, and ``tool_choice`` forces Claude to call it. The answer is
that call's ``input``, validated here against the same schema with a Draft 2020-12
validator before anything is written: the API does not promise the input matches.

When it does not, the engine may ask once more. :func:`repair_messages` builds that
request the way the Messages API expects a failed tool call to be reported: the assistant
turn as returned, then a ``tool_result`` with ``is_error`` listing what was wrong.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from core.flows.spec import OutputSpec

MAX_ERRORS = 10
MAX_MESSAGE_CHARS = 200


@dataclass(frozen=True)
class AnswerCheck:
    """The validated answer, or why there is none."""

    answer: dict[str, Any] | None  # the tool input, only when it is valid
    errors: list[str] = field(default_factory=list)  # "path: message", at most MAX_ERRORS
    tool_use_id: str | None = None  # the tool_use block checked, if there was one
    tool_name: str = "record_result"  # the tool the answer had to call

    @property
    def ok(self) -> bool:
        return self.answer is not None and not self.errors


def tool_for(output: OutputSpec) -> dict[str, Any]:
    """The Messages API tool definition Claude fills with its answer."""
    return {
        "name": output.tool_name,
        "description": output.description,
        "input_schema": output.json_schema(),
    }


def tool_choice_for(output: OutputSpec) -> dict[str, Any]:
    """Force the call: an answer in prose could not be validated or written back."""
    return {"type": "tool", "name": output.tool_name}


def extract_answer(message: Mapping[str, Any], output: OutputSpec) -> AnswerCheck:
    """Find the call to the output's tool in ``message`` and validate its input."""
    block = next(
        (
            item
            for item in _blocks(message)
            if item.get("type") == "tool_use" and item.get("name") == output.tool_name
        ),
        None,
    )
    if block is None:
        reason = f"the answer did not call {output.tool_name}"
        if message.get("stop_reason") == "max_tokens":
            reason += " (it stopped at max_tokens)"
        return AnswerCheck(answer=None, errors=[reason], tool_name=output.tool_name)
    tool_use_id = str(block["id"]) if block.get("id") is not None else None
    value = block.get("input")
    errors = schema_errors(_validator(_schema_key(output)), value)
    valid = not errors and isinstance(value, dict)  # the schema's type is object
    return AnswerCheck(
        answer=value if valid else None,
        errors=errors,
        tool_use_id=tool_use_id,
        tool_name=output.tool_name,
    )


def schema_errors(validator: Draft202012Validator, value: Any) -> list[str]:
    """Readable ``path: message`` lines, in path order, at most :data:`MAX_ERRORS`."""
    found = sorted(validator.iter_errors(value), key=_order)
    lines = [f"{_path(error)}: {_shorten(error.message)}" for error in found]
    if len(lines) > MAX_ERRORS:
        lines = [*lines[: MAX_ERRORS - 1], f"… and {len(lines) - MAX_ERRORS + 1} more errors"]
    return lines


def repair_messages(
    original_messages: Sequence[Mapping[str, Any]],
    message: Mapping[str, Any],
    check: AnswerCheck,
) -> list[dict[str, Any]]:
    """The ``messages`` for one repair attempt after a failed :func:`extract_answer`.

    The assistant turn goes back unchanged (the API requires every ``tool_use`` in it to be
    answered by a ``tool_result`` in the next user turn, tool results first). An assistant
    turn with no content cannot be sent back; the request to call the tool then joins the
    last user turn, so roles still alternate.
    """
    if check.ok:
        raise ValueError("the answer is valid: there is nothing to repair")
    messages = [copy.deepcopy(dict(turn)) for turn in original_messages]
    assistant = [copy.deepcopy(dict(block)) for block in _blocks(message)]
    results = [_tool_result(block, check) for block in assistant if block.get("type") == "tool_use"]
    if check.tool_use_id is None:
        listed = "\n".join(f"- {error}" for error in check.errors)
        text = f"{listed}\nAnswer by calling the {check.tool_name} tool; do not answer in text."
        results.append({"type": "text", "text": text})
    if assistant:
        return [
            *messages,
            {"role": "assistant", "content": assistant},
            {"role": "user", "content": results},
        ]
    if messages and messages[-1].get("role") == "user":
        last = messages[-1]
        content = last.get("content")
        earlier = (
            [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
        )
        return [*messages[:-1], {**last, "content": [*earlier, *results]}]
    return [*messages, {"role": "user", "content": results}]


def _tool_result(block: Mapping[str, Any], check: AnswerCheck) -> dict[str, Any]:
    if block.get("id") == check.tool_use_id:
        listed = "\n".join(f"- {error}" for error in check.errors)
        text = (
            f"The input does not match the tool's schema:\n{listed}\n"
            f"Call {check.tool_name} again with a corrected input."
        )
    else:
        text = f"Not used. Call {check.tool_name} once, with the whole answer."
    return {
        "type": "tool_result",
        "tool_use_id": block.get("id"),
        "is_error": True,
        "content": text,
    }


def _blocks(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [block for block in content if isinstance(block, Mapping)]


def _schema_key(output: OutputSpec) -> str:
    return json.dumps(output.json_schema(), sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Draft202012Validator:
    """Built once per schema (keyed by its canonical JSON: an ``OutputSpec`` holds a dict
    and so is not hashable)."""
    schema = json.loads(schema_json)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _path(error: ValidationError) -> str:
    text = "input"
    for part in error.absolute_path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _order(error: ValidationError) -> tuple[list[str], str]:
    parts = [f"{part:012d}" if isinstance(part, int) else str(part) for part in error.absolute_path]
    return parts, error.message


def _shorten(text: str) -> str:
    """Messages quote the offending value, which may be a whole paragraph."""
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return text[: MAX_MESSAGE_CHARS - 1] + "…"
