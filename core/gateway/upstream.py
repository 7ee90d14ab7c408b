"""The one place Switchyard talks to the Anthropic API, through the official SDK.

The SDK's own retries are off (``max_retries=0``): the gateway retries with its own policy,
after its own admission, and records every attempt. Bodies pass through untouched: fields
the SDK's ``create`` signature knows go as arguments, the rest as ``extra_body``, so new API
options reach the upstream without a Switchyard release. SDK exceptions are translated here
into :class:`UpstreamError` (transient or terminal by status), the rest of the gateway never
sees an SDK type.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2
from anthropic.resources.messages import AsyncMessages

from core.errors import SwitchyardError, TerminalError, TransientError

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 529})
# Headers a caller may set that change what the API does; everything else stays ours.
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")

_CREATE_PARAMS = frozenset(inspect.signature(AsyncMessages.create).parameters) - {
    "self",
    "extra_headers",
    "extra_query",
    "extra_body",
    "timeout",
}
_COUNT_PARAMS = frozenset(inspect.signature(AsyncMessages.count_tokens).parameters) - {
    "self",
    "extra_headers",
    "extra_query",
    "extra_body",
    "timeout",
}


class UpstreamError(SwitchyardError):
    """The upstream answered an error (or could not be reached: ``http_status`` 0)."""

    problem_type = "upstream-error"
    title = "The Claude API answered an error"
    status = 502

    def __init__(
        self,
        detail: str,
        *,
        http_status: int,
        error_type: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.http_status = http_status
        self.error_type = error_type
        self.body = body
        self.headers = dict(headers or {})
        self.retry_after = retry_after
        self.request_id = request_id


class UpstreamTransient(UpstreamError, TransientError):
    """429, 5xx, 529 and connection failures: the same call may succeed later."""


class UpstreamRejected(UpstreamError, TerminalError):
    """4xx other than 429: the request itself is wrong; retrying cannot help."""


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def request_id(self) -> str | None:
        return self.headers.get("request-id")


class UpstreamStream:
    """An open streaming response: the status and headers arrived, the body is pending."""

    def __init__(
        self,
        context: AbstractAsyncContextManager[Any],
        response: Any,
    ) -> None:
        self._context = context
        self._response = response
        self.status: int = response.status_code
        self.headers: Mapping[str, str] = dict(response.headers)

    @property
    def request_id(self) -> str | None:
        return self.headers.get("request-id")

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; transport failures become :class:`UpstreamTransient`."""
        try:
            async for chunk in self._response.http_response.aiter_bytes():
                yield chunk
        except (httpx2.HTTPError, anthropic.APIError) as exc:
            raise UpstreamTransient(
                f"the stream from the Claude API broke: {exc}",
                http_status=0,
                error_type="api_connection_error",
            ) from exc

    async def aclose(self) -> None:
        await self._context.__aexit__(None, None, None)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date; our backoff applies instead
    return seconds if seconds >= 0 else None


def _error_type(body: Any, status: int) -> str:
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and isinstance(error.get("type"), str):
            return str(error["type"])
    return "api_error" if status >= 500 else "invalid_request_error"


def translate(exc: anthropic.APIError) -> UpstreamError:
    """An SDK exception as the gateway's own error, keeping status, body and headers."""
    if isinstance(exc, anthropic.APIStatusError):
        response = exc.response
        status = exc.status_code
        kind = UpstreamTransient if status in RETRYABLE_STATUSES else UpstreamRejected
        return kind(
            f"the Claude API answered {status}: {exc.message}",
            http_status=status,
            error_type=_error_type(exc.body, status),
            body=response.content,
            headers=dict(response.headers),
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            request_id=exc.request_id,
        )
    if isinstance(exc, anthropic.APITimeoutError):
        return UpstreamTransient(
            "the Claude API did not answer in time", http_status=0, error_type="timeout_error"
        )
    return UpstreamTransient(
        f"the Claude API could not be reached: {exc}",
        http_status=0,
        error_type="api_connection_error",
    )


def split_params(body: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    """SDK keyword arguments for ``body``: known fields by name, the rest as ``extra_body``."""
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in body.items():
        (kwargs if key in known else extra)[key] = value
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


class Upstream:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        timeout: float,
        max_connections: int = 256,
    ) -> None:
        # The SDK's own HTTP stack (httpx2), with a pool sized for many concurrent streams.
        self._http = anthropic.DefaultAsyncHttpxClient(
            limits=httpx2.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            timeout=httpx2.Timeout(timeout, connect=10.0),
        )
        self._client = anthropic.AsyncAnthropic(
            base_url=base_url,
            # The SDK insists on a key; an unset one reaches the upstream as an invalid key
            # and comes back as its 401, which names the problem.
            api_key=api_key or "unset",
            max_retries=0,
            timeout=timeout,
            http_client=self._http,
        )

    async def send(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> UpstreamResponse:
        kwargs = split_params(body, _CREATE_PARAMS)
        try:
            raw = await self._client.messages.with_raw_response.create(
                **kwargs, extra_headers=dict(headers)
            )
        except anthropic.APIError as exc:
            raise translate(exc) from exc
        return UpstreamResponse(raw.status_code, dict(raw.headers), await raw.read())

    async def open_stream(
        self, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> UpstreamStream:
        kwargs = split_params({**body, "stream": True}, _CREATE_PARAMS)
        context = self._client.messages.with_streaming_response.create(
            **kwargs, extra_headers=dict(headers)
        )
        try:
            response = await context.__aenter__()
        except anthropic.APIError as exc:
            raise translate(exc) from exc
        return UpstreamStream(context, response)

    async def count_tokens(
        self, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> UpstreamResponse:
        kwargs = split_params(body, _COUNT_PARAMS)
        try:
            raw = await self._client.messages.with_raw_response.count_tokens(
                **kwargs, extra_headers=dict(headers)
            )
        except anthropic.APIError as exc:
            raise translate(exc) from exc
        return UpstreamResponse(raw.status_code, dict(raw.headers), await raw.read())

    async def aclose(self) -> None:
        await self._client.close()
        await self._http.aclose()
