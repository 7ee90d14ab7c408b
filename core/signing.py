"""The ``Switchyard-Signature`` scheme, used for our callbacks and the webhook connector.

Header: ``Switchyard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>``.
Several ``v1=`` entries may appear (one per active secret during a rotation); one match
suffices. Signatures older (or newer) than the tolerance are rejected, which bounds replay.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Sequence

from core.errors import SignatureInvalid

HEADER = "Switchyard-Signature"
# ASCII digits only: str.isdigit() also accepts "²", which int() then refuses.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
SCHEME = "v1"


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The header value for ``body`` signed now (or at ``timestamp``)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return f"t={ts},{SCHEME}={_digest(secret, ts, body)}"


def verify(
    secrets: Sequence[str],
    header: str | None,
    body: bytes,
    *,
    tolerance_seconds: int,
    now: float | None = None,
) -> int:
    """Check a header against any of ``secrets``; returns its timestamp or raises."""
    if not header:
        raise SignatureInvalid(f"missing {HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and _TIMESTAMP.fullmatch(value):
            timestamp = int(value)
        elif key == SCHEME and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureInvalid(f"{HEADER} must read t=<unix seconds>,{SCHEME}=<hex digest>")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise SignatureInvalid(
            f"signature timestamp is {int(current - timestamp)}s from now; "
            f"at most {tolerance_seconds}s is accepted"
        )
    expected = [_digest(secret, timestamp, body) for secret in secrets]
    # Compare every pair without early exit, so timing does not reveal which part matched.
    matched = False
    for digest in expected:
        for candidate in candidates:
            matched |= hmac.compare_digest(digest, candidate)
    if not matched:
        raise SignatureInvalid("signature does not match the body")
    return timestamp
