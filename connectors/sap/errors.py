"""SAP's errors, translated once at each transport's boundary.

OData (:func:`from_response`, and :func:`core.http_errors.translate_httpx` for transport
errors) and RFC (:func:`translate_rfc`) failures become Switchyard's errors, raised
``from`` the original. The tree (from :mod:`core.errors`)::

    ConnectorTransientError        429, 503 and other 5xx, 408, timeouts, refused
    │                              connections; RFC CommunicationError
    ConnectorTerminalError         other 4xx (message = error.code + error.message.value +
    │                              innererror.errordetails), RFC LogonError,
    │                              ABAPApplicationError, ABAPRuntimeError, External*Error,
    │                              RFCTypeError
    ├── SapUnauthorized            401 (Basic credentials or OAuth token refused)
    ├── CsrfRequired               403 with ``x-csrf-token: Required``: the client fetches
    │                              a new token and repeats the request once
    ├── PreconditionFailed         412 / 428: the ETag no longer matches (the connector
    │                              answers WriteStatus.CONFLICT, never overwrites)
    ├── BapiError                  a BAPI's RETURN held E/A messages (rolled back)
    └── RfcUnavailable             pyrfc (or the NW RFC SDK) is not installed

SAP's OData error body: ``{"error": {"code": "<class>/<number>", "message": {"lang",
"value"}, "innererror": {..., "errordetails": [{"code", "message", "severity", ...}]}}}``;
every part is read defensively.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from core.errors import ConnectorTerminalError, ConnectorTransientError
from core.http_errors import retry_after_seconds

TRANSIENT_STATUS = {408, 429, 502, 503, 504}
DEFAULT_RETRY_SECONDS = 5.0
INSTALL_HINT = (
    "the SAP RFC transport needs pyrfc: install the SAP NW RFC SDK (from the SAP Support "
    "Portal), set SAPNWRFC_HOME to it, then `pip install 'switchyard[sap-rfc]'`"
)


class SapUnauthorized(ConnectorTerminalError):
    problem_type = "sap-unauthorized"
    title = "SAP refused the credentials"


class CsrfRequired(ConnectorTerminalError):
    problem_type = "sap-csrf-required"
    title = "SAP refused the CSRF token"


class PreconditionFailed(ConnectorTerminalError):
    problem_type = "sap-precondition-failed"
    title = "The record's ETag no longer matches"


class BapiError(ConnectorTerminalError):
    problem_type = "sap-bapi-error"
    title = "The BAPI reported errors; its work was rolled back"


class RfcUnavailable(ConnectorTerminalError):
    problem_type = "sap-rfc-unavailable"
    title = "The SAP RFC library is not installed"


def error_body(raw: bytes | str | Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``error`` object of an OData error answer, or {} if there is none."""
    parsed: Any = raw
    if isinstance(raw, bytes | str):
        try:
            parsed = json.loads(raw)
        except ValueError:
            return {}
    error = parsed.get("error") if isinstance(parsed, Mapping) else None
    return dict(error) if isinstance(error, Mapping) else {}


def describe_error(error: Mapping[str, Any]) -> tuple[str, str, list[str]]:
    """(code, message, detail messages) of an OData ``error`` object."""
    code = str(error.get("code") or "")
    message = error.get("message")
    text = message.get("value") if isinstance(message, Mapping) else message
    inner = error.get("innererror")
    details: list[str] = []
    if isinstance(inner, Mapping):
        for item in inner.get("errordetails") or []:
            if isinstance(item, Mapping) and item.get("message") and item["message"] != text:
                where = f" [{item['target']}]" if item.get("target") else ""
                details.append(f"{item.get('code') or ''} {item['message']}{where}".strip())
    return code, str(text or ""), details


def _retry_after(headers: Mapping[str, str]) -> float:
    wait = retry_after_seconds(headers.get("retry-after"))
    return DEFAULT_RETRY_SECONDS if wait is None else wait


def from_response(
    what: str, status: int, body: bytes | str | Mapping[str, Any] | None, headers: Mapping[str, str]
) -> ConnectorTransientError | ConnectorTerminalError:
    """The typed error for a failed OData answer (headers with lower-case names)."""
    code, message, details = describe_error(error_body(body))
    text = f"{what}: SAP answered {status}"
    text += f" {code}" if code else ""
    text += f": {message[:500]}" if message else ""
    if details:
        text += f" ({'; '.join(d[:200] for d in details[:5])})"
    extensions: dict[str, Any] = {"status_code": status, "sap_code": code or None}
    if status == 429 or status == 503:
        return ConnectorTransientError(text, retry_after=_retry_after(headers), **extensions)
    if status in TRANSIENT_STATUS or status >= 500:
        return ConnectorTransientError(text, **extensions)
    if status == 401:
        return SapUnauthorized(text, **extensions)
    if status == 403 and headers.get("x-csrf-token", "").lower() == "required":
        return CsrfRequired(text, **extensions)
    if status in (412, 428):
        return PreconditionFailed(text, **extensions)
    return ConnectorTerminalError(text, **extensions)


# PyRFC's exception classes (src/pyrfc/_exception.py), by name: pyrfc is imported lazily
# and may be absent, so they are matched through the class hierarchy's names.
_RFC_TRANSIENT = {"CommunicationError"}
_RFC_KNOWN = {
    "LogonError": "logon refused",
    "ABAPApplicationError": "ABAP application error",
    "ABAPRuntimeError": "ABAP runtime error",
    "ExternalRuntimeError": "external runtime error",
    "ExternalApplicationError": "external application error",
    "ExternalAuthorizationError": "not authorised",
    "RFCTypeError": "type error in RFC parameters",
}


def _rfc_kind(exc: BaseException) -> str | None:
    names = [cls.__name__ for cls in type(exc).__mro__]
    for name in names:
        if name in _RFC_TRANSIENT or name in _RFC_KNOWN:
            return name
    return "RFCError" if "RFCError" in names else None


def rfc_message(exc: BaseException) -> str:
    key = getattr(exc, "key", None)
    message = getattr(exc, "message", None) or str(exc)
    return f"{key}: {message}" if key else str(message)


@contextmanager
def translate_rfc(what: str) -> Iterator[None]:
    """PyRFC's exceptions as Switchyard's: only CommunicationError is worth a retry."""
    try:
        yield
    except Exception as exc:
        kind = _rfc_kind(exc)
        if kind is None:
            raise
        text = f"{what}: {_RFC_KNOWN.get(kind, kind)}: {rfc_message(exc)}"[:800]
        extensions: dict[str, Any] = {"rfc_error": kind, "rfc_key": getattr(exc, "key", None)}
        if kind in _RFC_TRANSIENT:
            raise ConnectorTransientError(text, **extensions) from exc
        if kind == "LogonError":
            raise SapUnauthorized(text, **extensions) from exc
        raise ConnectorTerminalError(text, **extensions) from exc


def bapi_failure(function: str, messages: Sequence[Mapping[str, Any]]) -> BapiError:
    shown = "; ".join(
        f"{m.get('TYPE')} {m.get('ID')}/{m.get('NUMBER')}: {m.get('MESSAGE')}" for m in messages[:5]
    )
    return BapiError(
        f"{function} failed and was rolled back: {shown}",
        messages=[dict(m) for m in messages[:20]],
    )
