"""Salesforce's errors, translated once into Switchyard's typed errors.

Salesforce answers a top-level REST error as a JSON array ``[{"message", "errorCode",
"fields"}]``; an sObject Collections item carries ``errors[].statusCode`` instead (the HTTP
status stays 200). Both go through :func:`classify`. The API limit is a **403**
``REQUEST_LIMIT_EXCEEDED``, never a 429.

The tree (all from :mod:`core.errors`)::

    ConnectorTransientError          the queue retries the job
    ├── SessionExpired               401 INVALID_SESSION_ID: refresh the token, replay once
    └── (plain)                      REQUEST_LIMIT_EXCEEDED, UNABLE_TO_LOCK_ROW, 5xx,
                                     timeouts, connection errors, our API budget spent
    ConnectorTerminalError           a retry cannot help; the job fails with the reason
    ├── PreconditionFailed           412 If-Unmodified-Since → WriteStatus.CONFLICT
    └── (plain)                      FIELD_CUSTOM_VALIDATION_EXCEPTION, INVALID_FIELD,
                                     MALFORMED_ID, NOT_FOUND, bad credentials, …
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import requests

from core.errors import ConnectorTerminalError, ConnectorTransientError

# Error codes a retry can cure (rows locked by another transaction, limits that roll).
TRANSIENT_CODES = frozenset(
    {
        "REQUEST_LIMIT_EXCEEDED",
        "UNABLE_TO_LOCK_ROW",
        "SERVER_UNAVAILABLE",
        "QUERY_TIMEOUT",
        "API_CURRENTLY_DISABLED",
    }
)
LIMIT_RETRY_SECONDS = 300.0  # the daily allocation is a rolling 24 h window
LOCK_RETRY_SECONDS = 2.0


class SessionExpired(ConnectorTransientError):
    """401 INVALID_SESSION_ID: the access token expired or was revoked."""

    problem_type = "salesforce-session-expired"


class PreconditionFailed(ConnectorTerminalError):
    """412: If-Unmodified-Since failed, the record changed since it was read."""

    problem_type = "salesforce-precondition-failed"


def first_error(content: Any) -> tuple[str, str, list[str]]:
    """(code, message, fields) of the first error in a REST error array or item."""
    item: Any = content[0] if isinstance(content, list) and content else content
    if not isinstance(item, Mapping):
        return "", str(content)[:300], []
    code = str(item.get("errorCode") or item.get("statusCode") or "")
    fields = item.get("fields") or []
    return code, str(item.get("message", ""))[:500], [str(f) for f in fields]


def classify(status: int, content: Any, what: str) -> Exception:
    """The Switchyard error for a failed call (``status`` 0: an item of a collection)."""
    code, message, fields = first_error(content)
    on = f" on {', '.join(fields)}" if fields else ""
    detail = f"{what}: {code or f'HTTP {status}'}: {message}{on}"
    extensions: dict[str, Any] = {"error_code": code, "fields": fields}
    if status == 401 and code == "INVALID_SESSION_ID":
        return SessionExpired(detail, **extensions)
    if status == 412:
        return PreconditionFailed(detail, status_code=412, **extensions)
    if code == "REQUEST_LIMIT_EXCEEDED":
        return ConnectorTransientError(detail, retry_after=LIMIT_RETRY_SECONDS, **extensions)
    if code in TRANSIENT_CODES:
        return ConnectorTransientError(detail, retry_after=LOCK_RETRY_SECONDS, **extensions)
    if status >= 500 or status in (408, 429):
        return ConnectorTransientError(detail, **extensions)
    return ConnectorTerminalError(detail, status_code=status or None, **extensions)


@contextmanager
def translate(what: str) -> Iterator[None]:
    """Turn simple-salesforce's and requests' exceptions into Switchyard's."""
    from simple_salesforce.exceptions import SalesforceError

    try:
        yield
    except SalesforceError as exc:
        raise classify(exc.status, exc.content, what) from exc
    except (requests.exceptions.JSONDecodeError, ValueError) as exc:
        # A body that is not JSON: an HTML error page from a proxy or a maintenance page.
        raise ConnectorTransientError(f"{what}: unreadable answer: {exc}") from exc
    except requests.Timeout as exc:
        raise ConnectorTransientError(f"{what}: timed out") from exc
    except requests.ConnectionError as exc:
        raise ConnectorTransientError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except requests.RequestException as exc:
        raise ConnectorTerminalError(f"{what}: {type(exc).__name__}: {exc}") from exc
