"""SANDBOX — ``POST /api/data/v9.x/$batch`` for the Dataverse sandbox.

Each operation runs through the sandbox's own request handling. A changeset is atomic:
when one of its operations fails, the rows, queued webhooks and recorded writes go back
to how they were before the changeset, and the changeset is answered with that one error
(its ``Content-ID`` says which operation failed). Called under the sandbox's lock.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from starlette.responses import Response

from connectors.dynamics import batch
from connectors.dynamics.sandbox_gate import App, odata_error

if TYPE_CHECKING:
    from connectors.dynamics.sandbox import DataverseSandbox

JSON = "application/json; odata.metadata=minimal"


def answer_batch(sandbox: DataverseSandbox, app: App, content_type: str, raw: bytes) -> Response:
    try:
        groups = batch.parse_request(content_type, raw)
    except (ValueError, KeyError) as exc:
        return odata_error(400, "0x80048d19", f"The batch request is malformed: {exc}")
    answered: list[tuple[bool, list[batch.Answer]]] = []
    for group in groups:
        saved = (copy.deepcopy(sandbox.store), len(sandbox.outbox.pending), len(sandbox.writes))
        answers = []
        for op in group:
            split = urlsplit(op.url)
            rest = split.path.split("/api/data/", 1)[-1].split("/", 1)[-1]
            status, headers, payload = sandbox.execute(
                app, op.method, rest, dict(parse_qsl(split.query)), op.headers, op.body
            )
            text = "" if payload is None else json.dumps(payload)
            if payload is not None:
                headers = headers | {"Content-Type": JSON}
            answers.append(batch.Answer(status, headers, text, op.content_id))
            if status >= 400 and len(group) > 1:  # a changeset fails as a whole
                sandbox.store = saved[0]
                del sandbox.outbox.pending[saved[1] :]
                del sandbox.writes[saved[2] :]
                answers = [answers[-1]]
                break
        answered.append((len(group) > 1 or len(groups) == 1, answers))
    kind, body = batch.build_response(answered)
    return Response(body, 200, headers={"Content-Type": kind})
