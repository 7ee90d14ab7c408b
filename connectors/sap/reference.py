"""The client reference that makes creates idempotent.

SAP has no idempotency key. A create stores a reference derived from the job's
idempotency key in a searchable field (``PurchaseOrderByCustomer`` / ``PURCH_NO_C`` or a
custom field) and looks for it before creating, so a retried job finds its first attempt's
document instead of making a second one. The reference is short enough for ``PURCH_NO_C``
(20 characters) and the same for the same key on every worker.
"""

from __future__ import annotations

import hashlib

REFERENCE_PREFIX = "SY-"
REFERENCE_CHARS = 20  # fits PurchaseOrderByCustomer (35) and PURCH_NO_C (20)


def client_reference(idempotency_key: str) -> str:
    """A short, stable reference for a job's create (same key → same reference)."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest().upper()
    return (REFERENCE_PREFIX + digest)[:REFERENCE_CHARS]
