"""Opaque keyset cursors for newest-first lists: ``base64url("<kind>:<last id>")``.

The kind tag stops a jobs cursor from being replayed against deliveries (or vice versa);
anything this API did not hand out is a 422 that says to start over.
"""

from __future__ import annotations

import base64
import binascii
import re

from core.errors import InvalidRequest

_ID = re.compile(r"[0-9]{1,18}")  # ASCII digits that fit a BIGINT


def encode_cursor(kind: str, last_id: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> int:
    """The id the previous page ended at."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    prefix = f"{kind}:"
    value = text.removeprefix(prefix)
    if not text.startswith(prefix) or not _ID.fullmatch(value):
        raise InvalidRequest("cursor is not one this API returned; start without a cursor")
    return int(value)
