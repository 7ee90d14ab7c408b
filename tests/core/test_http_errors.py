"""Retry-After reading and httpx's exceptions as Switchyard's, shared by every HTTP client."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from core.errors import ConnectorTerminalError, ConnectorTransientError
from core.http_errors import retry_after_seconds, translate_httpx


@pytest.mark.parametrize(
    ("value", "expected"),
    [("120", 120.0), (" 1.5 ", 1.5), ("-3", 0.0), ("", None), (None, None), ("soon", None)],
)
def test_delta_seconds_and_unreadable_values(value: str | None, expected: float | None) -> None:
    assert retry_after_seconds(value) == expected


def test_an_http_date_counts_from_now_and_a_past_one_is_zero() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    earlier = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    seconds = retry_after_seconds(later)
    assert seconds is not None
    assert 85 <= seconds <= 90
    assert retry_after_seconds(earlier) == 0.0


@pytest.mark.parametrize(
    ("raised", "expected", "text"),
    [
        (httpx.ReadTimeout("slow"), ConnectorTransientError, "fetch: timed out (ReadTimeout)"),
        (httpx.ConnectError("refused"), ConnectorTransientError, "fetch: ConnectError: refused"),
        (httpx.TooManyRedirects("loop"), ConnectorTerminalError, "fetch: TooManyRedirects: loop"),
    ],
)
def test_httpx_errors_become_typed_errors_from_the_original(
    raised: Exception, expected: type[Exception], text: str
) -> None:
    with pytest.raises(expected) as caught, translate_httpx("fetch"):
        raise raised
    assert str(caught.value.detail) == text  # type: ignore[attr-defined]
    assert caught.value.__cause__ is raised
