"""What every HTTP client in Switchyard shares about failures: how long a server asks us
to wait, and httpx's exceptions as Switchyard's typed errors.

A leaf module (it imports only :mod:`core.errors`), so connectors may use it too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from core.errors import ConnectorTerminalError, ConnectorTransientError


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` value — delta-seconds or an HTTP date — or None when
    absent or unreadable. Never negative; callers cap it to what they will wait."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return max(seconds, 0.0) if seconds == seconds else None  # NaN reads as absent


@contextmanager
def translate_httpx(what: str) -> Iterator[None]:
    """httpx's exceptions as Switchyard's, raised ``from`` the original: a timeout or a
    transport failure may not have reached the server, so a retry can help; any other
    httpx error (an undecodable body, too many redirects) cannot."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise ConnectorTransientError(f"{what}: timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise ConnectorTransientError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except httpx.HTTPError as exc:
        raise ConnectorTerminalError(f"{what}: {type(exc).__name__}: {exc}") from exc
