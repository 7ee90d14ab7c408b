"""SANDBOX — ``$batch`` for the SAP sandbox: GETs, and changesets that are atomic.

Each GET part gets its own answer; a changeset runs its requests in order and, when one
fails, is rolled back entirely and answered by that one error; the whole batch is a
``202 Accepted`` whatever its parts' statuses.
"""

from __future__ import annotations

import copy
import json
from urllib.parse import parse_qsl

from connectors.sap import multipart
from connectors.sap.sandbox_odata import Answer, Call, Services
from connectors.sap.sandbox_store import ODataError


def run_batch(services: Services, call: Call) -> Answer:
    run = services.handle
    try:
        parts = multipart.parse(call.body.decode("utf-8"), call.headers.get("content-type", ""))
    except (multipart.BatchMalformed, UnicodeDecodeError) as exc:
        raise ODataError(400, "/IWBEP/CM_MGW_RT/010", f"Malformed $batch: {exc}") from None
    answers: list[multipart.Part] = []
    for part in parts:
        if isinstance(part, multipart.HttpMessage):
            if part.method != "GET":
                raise ODataError(
                    400, "/IWBEP/CM_MGW_RT/010", "Modifying requests belong in a changeset"
                )
            answers.append(_message(run(_inner(call, part))))
            continue
        if any(m.method == "GET" for m in part):
            raise ODataError(400, "/IWBEP/CM_MGW_RT/010", "A changeset may not contain GET")
        saved = (copy.deepcopy(services.sets), list(services.writes))
        results = []
        for message in part:
            answer = run(_inner(call, message))
            if answer.status >= 400:
                services.sets, services.writes = saved  # atomic: the changeset is rolled back
                results = [_message(answer)]
                break
            results.append(_message(answer))
        answers.append(results[0] if len(results) == 1 and results[0].status >= 400 else results)
    boundary = multipart.new_boundary("batchresponse")
    return Answer(
        202,
        multipart.build(answers, boundary),
        {"content-type": f"multipart/mixed; boundary={boundary}"},
    )


def _inner(outer: Call, message: multipart.HttpMessage) -> Call:
    target = message.target
    path, _, query = target.partition("?")
    return Call(
        message.method,
        outer.service,
        path.lstrip("/"),
        dict(parse_qsl(query)),
        dict(message.headers),
        message.body.encode(),
        outer.user,
        outer.base,
    )


def _message(answer: Answer) -> multipart.HttpMessage:
    reasons = {
        200: "OK",
        201: "Created",
        204: "No Content",
        400: "Bad Request",
        404: "Not Found",
        412: "Precondition Failed",
        428: "Precondition Required",
    }
    body = (
        answer.body
        if isinstance(answer.body, str)
        else ("" if answer.body is None else json.dumps(answer.body))
    )
    headers = dict(answer.headers)
    if body:
        headers.setdefault("content-type", "application/json")
    return multipart.HttpMessage(
        f"HTTP/1.1 {answer.status} {reasons.get(answer.status, 'Error')}", headers, body
    )
