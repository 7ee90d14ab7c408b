"""OData V2 ``$batch`` bodies: ``multipart/mixed`` with ``application/http`` parts.

A batch holds parts; a part is one HTTP message (a GET, outside any changeset) or a
changeset: a nested ``multipart/mixed`` of modifying requests that succeed or fail
together. The answer mirrors the request: one HTTP response per GET, and per changeset
either one response per request or, when it failed, a single error response. Used by the
client (build requests, read responses) and the SANDBOX (the reverse).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

CRLF = "\r\n"
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


@dataclass(frozen=True)
class HttpMessage:
    """A request (``start`` = ``PATCH A_SalesOrder('1') HTTP/1.1``) or a response
    (``start`` = ``HTTP/1.1 204 No Content``), headers with lower-case names."""

    start: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""

    @property
    def status(self) -> int:
        parts = self.start.split(" ")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0

    @property
    def method(self) -> str:
        return self.start.split(" ", 1)[0].upper()

    @property
    def target(self) -> str:
        parts = self.start.split(" ")
        return parts[1] if len(parts) > 1 else ""


Part = HttpMessage | list[HttpMessage]  # a list is a changeset


class BatchMalformed(ValueError):
    pass


def boundary_of(content_type: str) -> str:
    found = _BOUNDARY.search(content_type or "")
    if not found or not content_type.lower().startswith("multipart/mixed"):
        raise BatchMalformed("Content-Type must be multipart/mixed with a boundary")
    return found.group(1)


def new_boundary(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4()}"


def _message_text(message: HttpMessage) -> str:
    lines = [message.start, *(f"{k}: {v}" for k, v in message.headers.items())]
    return CRLF.join(lines) + CRLF + CRLF + message.body


def _http_part(message: HttpMessage, extra: Mapping[str, str] | None = None) -> str:
    head = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    head += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return CRLF.join(head) + CRLF + CRLF + _message_text(message) + CRLF


def build(parts: Sequence[Part], boundary: str) -> str:
    """The body of a batch (or batch response) with ``parts``."""
    chunks: list[str] = []
    for part in parts:
        chunks.append(f"--{boundary}{CRLF}")
        if isinstance(part, HttpMessage):
            chunks.append(_http_part(part))
            continue
        inner = new_boundary("changeset")
        chunks.append(f"Content-Type: multipart/mixed; boundary={inner}{CRLF}{CRLF}")
        for number, message in enumerate(part, 1):
            chunks.append(f"--{inner}{CRLF}")
            chunks.append(_http_part(message, {"Content-ID": str(number)}))
        chunks.append(f"--{inner}--{CRLF}")
    chunks.append(f"--{boundary}--{CRLF}")
    return "".join(chunks)


def _split(body: str, boundary: str) -> list[str]:
    delimiter = f"--{boundary}"
    if delimiter not in body:
        raise BatchMalformed("the body does not contain its boundary")
    sections = body.split(delimiter)[1:]
    parts = []
    for section in sections:
        if section.startswith("--"):
            break
        parts.append(section.lstrip("\r\n") if section.startswith(CRLF) else section.lstrip("\n"))
    return parts


def _head_and_body(text: str) -> tuple[list[str], str]:
    normalised = text.replace(CRLF, "\n")
    head, _, body = normalised.partition("\n\n")
    return [line for line in head.split("\n") if line.strip()], body


def _headers(lines: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            found[name.strip().lower()] = value.strip()
    return found


def _message(text: str) -> HttpMessage:
    lines, body = _head_and_body(text)
    if not lines:
        raise BatchMalformed("an application/http part is empty")
    return HttpMessage(lines[0].strip(), _headers(lines[1:]), body.rstrip("\n"))


def parse(body: str, content_type: str) -> list[Part]:
    """The parts of a batch body (request or response)."""
    parts: list[Part] = []
    for section in _split(body, boundary_of(content_type)):
        lines, rest = _head_and_body(section)
        headers = _headers(lines)
        kind = headers.get("content-type", "")
        if kind.lower().startswith("multipart/mixed"):
            inner = boundary_of(kind)
            parts.append([_message(_head_and_body(s)[1]) for s in _split(rest, inner)])
        elif kind.lower().startswith("application/http"):
            parts.append(_message(rest))
        else:
            raise BatchMalformed(f"unsupported part type {kind or 'none'}")
    return parts
