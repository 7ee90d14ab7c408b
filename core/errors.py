"""Switchyard's typed errors.

Whether a retry can help is part of an error's type: the queue and the gateway decide
retries from these marker bases, never from a message string. The web edge turns every
``SwitchyardError`` into an RFC 9457 problem response in one place
(:mod:`core.web.problems`); domain code never raises ``HTTPException``.

The tree::

    SwitchyardError                  problem_type / status on every class
    ├── TransientError               marker: the same call may succeed later
    ├── TerminalError                marker: retrying cannot help
    ├── SettingsError                invalid configuration at start (names the variable)
    ├── NotMigrated                  database missing or behind the code's migrations
    ├── Unauthenticated              401: no or unknown API key
    ├── Forbidden                    403: the key's role may not do this
    ├── NotFound                     404: absent, or owned by another tenant
    ├── MethodNotAllowed             405: the route exists, the HTTP method does not
    ├── Conflict                     409: state does not allow the operation
    ├── InvalidRequest               422: a request body that fails validation
    ├── PayloadTooLarge              413
    ├── ConnectorConfigInvalid       422: a connection's config/secrets fail the connector's model
    ├── UnknownConnector             422: no connector registered under that name
    ├── SignatureInvalid             401: an inbound webhook failed verification
    ├── PayloadMalformed             400: an inbound body that cannot be parsed
    ├── DestinationRefused           422: a callback or connection URL in a forbidden network
    ├── DatabaseUnavailable          (+ TransientError) 503: the database cannot be reached
    ├── IngressUnavailable           (+ TransientError) 503: this server cannot take a
    │                                connection's webhooks now (connector not installed,
    │                                secrets not decryptable); the platform retries
    └── ConnectorError               a platform call failed
        ├── ConnectorTransientError  (+ TransientError) timeouts, 5xx, throttling
        └── ConnectorTerminalError   (+ TerminalError) 4xx that a retry cannot fix
"""

from __future__ import annotations

from typing import Any, ClassVar


class SwitchyardError(Exception):
    """Base of every error Switchyard raises on purpose."""

    problem_type: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"
    status: ClassVar[int] = 500

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions


class TransientError(SwitchyardError):
    """Marker: the operation may succeed if tried again later."""

    retry_after: float | None = None


class TerminalError(SwitchyardError):
    """Marker: retrying the same operation cannot succeed."""


class SettingsError(TerminalError):
    problem_type = "settings-invalid"
    title = "Invalid settings"


class NotMigrated(TerminalError):
    problem_type = "database-not-migrated"
    title = "Database not migrated"
    status = 503


class Unauthenticated(TerminalError):
    problem_type = "unauthenticated"
    title = "Missing or unknown API key"
    status = 401


class Forbidden(TerminalError):
    problem_type = "forbidden"
    title = "The key's role does not allow this"
    status = 403


class NotFound(TerminalError):
    problem_type = "not-found"
    title = "Not found"
    status = 404


class MethodNotAllowed(TerminalError):
    problem_type = "method-not-allowed"
    title = "Method not allowed on this resource"
    status = 405


class Conflict(TerminalError):
    problem_type = "conflict"
    title = "Conflict with the object's current state"
    status = 409


class InvalidRequest(TerminalError):
    problem_type = "invalid-request"
    title = "The request body is invalid"
    status = 422


class PayloadTooLarge(TerminalError):
    problem_type = "payload-too-large"
    title = "Request body too large"
    status = 413


class ConnectorConfigInvalid(TerminalError):
    problem_type = "connector-config-invalid"
    title = "Connection config or secrets are invalid for this connector"
    status = 422


class UnknownConnector(TerminalError):
    problem_type = "unknown-connector"
    title = "No connector is registered under this name"
    status = 422


class SignatureInvalid(TerminalError):
    problem_type = "signature-invalid"
    title = "Webhook signature verification failed"
    status = 401


class PayloadMalformed(TerminalError):
    problem_type = "payload-malformed"
    title = "The webhook body could not be parsed"
    status = 400


class DestinationRefused(TerminalError):
    problem_type = "destination-refused"
    title = "Destination not allowed (private, loopback or link-local network)"
    status = 422


class DatabaseUnavailable(TransientError):
    problem_type = "database-unavailable"
    title = "The database cannot be reached"
    status = 503


class IngressUnavailable(TransientError):
    problem_type = "ingress-unavailable"
    title = "This server cannot accept the connection's deliveries right now"
    status = 503
    retry_after = 60.0


class ConnectorError(SwitchyardError):
    """A call to a platform failed."""

    problem_type = "connector-error"
    title = "The platform call failed"
    status = 502


class ConnectorTransientError(ConnectorError, TransientError):
    problem_type = "connector-unavailable"
    title = "The platform is temporarily unavailable"
    status = 503

    def __init__(self, detail: str, *, retry_after: float | None = None, **ext: Any) -> None:
        super().__init__(detail, **ext)
        self.retry_after = retry_after


class ConnectorTerminalError(ConnectorError, TerminalError):
    problem_type = "connector-rejected"
    title = "The platform rejected the request"
    status = 502


def is_transient(exc: BaseException) -> bool:
    """True when retrying may help: transient markers and errors we did not anticipate.

    Unanticipated exceptions count as transient so a bug fixed by a deploy can be replayed
    by the queue's retries; the per-kind attempt limit still bounds them.
    """
    if isinstance(exc, TerminalError):
        return False
    return isinstance(exc, TransientError) or not isinstance(exc, SwitchyardError)
