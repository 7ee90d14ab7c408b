"""OData ``$batch`` bodies (multipart/mixed), both ways: the client builds a batch of one
changeset and reads the answer; the SANDBOX reads the batch and builds the answer.

A request part is ``application/http`` with ``Content-Transfer-Encoding: binary`` and a
``Content-ID``; its body is an HTTP/1.1 request (request line, headers, blank line, JSON).
A changeset is atomic: when one operation fails the platform rolls all of them back and
answers the changeset with that one error response instead of one response per operation.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

CRLF = "\r\n"


@dataclass(frozen=True)
class Operation:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    content_id: str = ""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: str
    content_id: str = ""

    def json(self) -> Any:
        return json.loads(self.body) if self.body.strip() else None


def boundary_of(content_type: str) -> str:
    for part in content_type.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "boundary":
            return value.strip('"')
    raise ValueError("multipart content type without a boundary")


def _parts(body: str, boundary: str) -> list[str]:
    chunks = body.split(f"--{boundary}")
    return [chunk.strip(CRLF) for chunk in chunks[1:] if not chunk.startswith("--")]


def _head(text: str) -> tuple[dict[str, str], str]:
    head, _, rest = text.partition(CRLF + CRLF)
    headers: dict[str, str] = {}
    for line in head.split(CRLF):
        name, _, value = line.partition(":")
        if name.strip():
            headers[name.strip().lower()] = value.strip()
    return headers, rest


def _http_part(inner: str, content_id: str) -> str:
    return (
        f"Content-Type: application/http{CRLF}Content-Transfer-Encoding: binary{CRLF}"
        f"Content-ID: {content_id}{CRLF}{CRLF}{inner}"
    )


def _multipart(parts: Sequence[str], boundary: str) -> str:
    return "".join(f"--{boundary}{CRLF}{part}{CRLF}" for part in parts) + f"--{boundary}--{CRLF}"


# ------------------------------------------------------------------ client side


def build_request(operations: Sequence[Operation]) -> tuple[str, bytes]:
    """(content type, body) of a batch holding one changeset with ``operations``."""
    batch, changeset = f"batch_{uuid.uuid4().hex}", f"changeset_{uuid.uuid4().hex}"
    parts = []
    for op in operations:
        lines = [f"{op.method} {op.url} HTTP/1.1", "Content-Type: application/json"]
        lines += [f"{name}: {value}" for name, value in op.headers.items()]
        payload = "" if op.body is None else json.dumps(op.body, separators=(",", ":"))
        parts.append(_http_part(CRLF.join(lines) + CRLF + CRLF + payload, op.content_id))
    inner = _multipart(parts, changeset)
    outer = f"Content-Type: multipart/mixed; boundary={changeset}{CRLF}{CRLF}{inner}"
    return f"multipart/mixed; boundary={batch}", _multipart([outer], batch).encode()


def _answer(text: str, content_id: str) -> Answer:
    status_line, _, rest = text.partition(CRLF)
    fields = status_line.split(" ", 2)
    headers, body = _head(rest)
    return Answer(int(fields[1]), headers, body, content_id)


def parse_response(content_type: str, body: bytes) -> list[Answer]:
    """The answers of a batch response, flattened (changesets opened), in order."""
    answers: list[Answer] = []
    for part in _parts(body.decode("utf-8"), boundary_of(content_type)):
        headers, rest = _head(part)
        kind = headers.get("content-type", "")
        if kind.startswith("multipart/mixed"):
            for inner in _parts(rest, boundary_of(kind)):
                inner_headers, inner_rest = _head(inner)
                answers.append(_answer(inner_rest, inner_headers.get("content-id", "")))
        else:
            answers.append(_answer(rest, headers.get("content-id", "")))
    return answers


# ------------------------------------------------------------------ server side (SANDBOX)


def parse_request(content_type: str, body: bytes) -> list[list[Operation]]:
    """The batch's groups: a changeset's operations together, a lone request alone."""
    groups: list[list[Operation]] = []
    for part in _parts(body.decode("utf-8"), boundary_of(content_type)):
        headers, rest = _head(part)
        kind = headers.get("content-type", "")
        if kind.startswith("multipart/mixed"):
            inner_parts = _parts(rest, boundary_of(kind))
            groups.append([_operation(*_head(inner)) for inner in inner_parts])
        else:
            groups.append([_operation(headers, rest)])
    return groups


def _operation(part_headers: Mapping[str, str], text: str) -> Operation:
    request_line, _, rest = text.partition(CRLF)
    method, url, _ = request_line.split(" ", 2)
    headers, payload = _head(rest)
    body = json.loads(payload) if payload.strip() else None
    return Operation(method.upper(), url, headers, body, part_headers.get("content-id", ""))


def build_response(groups: Sequence[tuple[bool, Sequence[Answer]]]) -> tuple[str, bytes]:
    """(content type, body) answering each group: (was a changeset, its answers)."""
    batch = f"batchresponse_{uuid.uuid4()}"
    parts = []
    for changeset, answers in groups:
        rendered = [_http_part(_render(a), a.content_id) for a in answers]
        if changeset and (len(answers) != 1 or answers[0].status < 400):
            boundary = f"changesetresponse_{uuid.uuid4()}"
            parts.append(
                f"Content-Type: multipart/mixed; boundary={boundary}{CRLF}{CRLF}"
                + _multipart(rendered, boundary)
            )
        else:
            parts += rendered
    return f"multipart/mixed; boundary={batch}", _multipart(parts, batch).encode()


_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 404: "Not Found"}


def _render(answer: Answer) -> str:
    reason = _REASONS.get(answer.status, "Precondition Failed" if answer.status == 412 else "")
    lines = [f"HTTP/1.1 {answer.status} {reason}".rstrip()]
    lines += [f"{name}: {value}" for name, value in answer.headers.items()]
    return CRLF.join(lines) + CRLF + CRLF + answer.body
