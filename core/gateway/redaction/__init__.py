"""Redaction for gateway calls: detect personal data and credentials, then redact or block.

:mod:`detectors` finds typed spans, :mod:`placeholders` swaps them for stable per-request
placeholders and back, :mod:`streaming` restores them in a streamed answer, and
:mod:`policy` decides per data class whether to redact, block or allow.
"""

from core.gateway.redaction.detectors import ALL, CREDENTIAL_CLASSES, PERSONAL_CLASSES, Span, detect
from core.gateway.redaction.placeholders import Redactor, walk_body
from core.gateway.redaction.policy import (
    Action,
    RedactionBlocked,
    RedactionPolicy,
    apply,
    default_action,
    find_blocked,
)
from core.gateway.redaction.streaming import StreamRestorer

__all__ = [
    "ALL",
    "CREDENTIAL_CLASSES",
    "PERSONAL_CLASSES",
    "Action",
    "RedactionBlocked",
    "RedactionPolicy",
    "Redactor",
    "Span",
    "StreamRestorer",
    "apply",
    "default_action",
    "detect",
    "find_blocked",
    "walk_body",
]
