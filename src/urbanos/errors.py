"""The NGSI-LD error family.

Every failure the API reports is raised as one of these and rendered once, as
application/problem+json, by ``urbanos.http.problems``. The tree::

    NgsiLdError (500 InternalError)
    ├── InvalidRequest          400  malformed request: syntax, parameters, JSON
    │   └── PayloadTooLarge     413
    ├── BadRequestData          400  well-formed request carrying invalid data
    ├── Unauthorized            401  no valid credentials (``WWW-Authenticate`` says which)
    ├── Forbidden               403  authenticated, but not allowed
    ├── TooComplexQuery         403
    ├── TooManyResults          403
    ├── ResourceNotFound        404
    │   └── NonexistentTenant   404
    ├── NotAcceptable           406  no representation matches Accept
    ├── AlreadyExists           409
    ├── LengthRequired          411
    ├── UnsupportedMediaType    415
    ├── OperationNotSupported   422
    ├── TooManyRequests         429  a principal's rate limit (``Retry-After``)
    ├── NoMultiTenantSupport    501
    ├── ServiceUnavailable      503  the database is unreachable (type InternalError)
    └── LdContextNotAvailable   504  a remote @context could not be fetched
"""

from __future__ import annotations

from typing import Any

_BASE = "https://uri.etsi.org/ngsi-ld/errors/"


class NgsiLdError(Exception):
    """Base of the family; ``type_uri``, ``status`` and ``title`` make the ProblemDetails."""

    status = 500
    type_uri = _BASE + "InternalError"
    title = "Internal error"

    #: already in the audit log (a denial recorded where it was decided)
    audited = False

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail or f"{self.title} (HTTP {self.status})",
        }
        body.update(self.extra)
        return body


class InvalidRequest(NgsiLdError):
    status = 400
    type_uri = _BASE + "InvalidRequest"
    title = "Invalid request"


class PayloadTooLarge(InvalidRequest):
    status = 413
    title = "Payload too large"


class BadRequestData(NgsiLdError):
    status = 400
    type_uri = _BASE + "BadRequestData"
    title = "Bad request data"


class Unauthorized(NgsiLdError):
    """No credentials, or credentials that do not verify (RFC 6750 section 3). NGSI-LD
    defines no type for it; the type URI follows the family's naming, as other brokers do.
    ``challenge`` is the ``WWW-Authenticate`` value."""

    status = 401
    type_uri = _BASE + "Unauthorized"
    title = "Unauthorized"

    def __init__(self, detail: str = "", challenge: str = 'Bearer realm="urbanos"',
                 **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.challenge = challenge


class Forbidden(NgsiLdError):
    """Authenticated, and not allowed to do this (an entity the caller may not even see is
    ResourceNotFound instead, so ids are not probed)."""

    status = 403
    type_uri = _BASE + "AccessDenied"
    title = "Access denied"


class TooComplexQuery(NgsiLdError):
    status = 403
    type_uri = _BASE + "TooComplexQuery"
    title = "Query too complex"


class TooManyResults(NgsiLdError):
    status = 403
    type_uri = _BASE + "TooManyResults"
    title = "Too many results"


class ResourceNotFound(NgsiLdError):
    status = 404
    type_uri = _BASE + "ResourceNotFound"
    title = "Resource not found"


class NonexistentTenant(ResourceNotFound):
    type_uri = _BASE + "NonexistentTenant"
    title = "Tenant does not exist"


class NotAcceptable(NgsiLdError):
    status = 406
    type_uri = _BASE + "InvalidRequest"
    title = "Not acceptable"


class AlreadyExists(NgsiLdError):
    status = 409
    type_uri = _BASE + "AlreadyExists"
    title = "Already exists"


class LengthRequired(NgsiLdError):
    status = 411
    type_uri = _BASE + "InvalidRequest"
    title = "Length required"


class UnsupportedMediaType(NgsiLdError):
    status = 415
    type_uri = _BASE + "InvalidRequest"
    title = "Unsupported media type"


class OperationNotSupported(NgsiLdError):
    status = 422
    type_uri = _BASE + "OperationNotSupported"
    title = "Operation not supported"


class TooManyRequests(NgsiLdError):
    status = 429
    type_uri = _BASE + "TooManyRequests"
    title = "Too many requests"

    def __init__(self, detail: str = "", retry_after: int = 1, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class NoMultiTenantSupport(NgsiLdError):
    status = 501
    type_uri = _BASE + "NoMultiTenantSupport"
    title = "No multi-tenant support"


class ServiceUnavailable(NgsiLdError):
    """The database is unreachable or went away mid-request: HTTP 503 with ``Retry-After``.

    NGSI-LD defines no error type for a temporary outage, so the ProblemDetails ``type``
    stays InternalError (the spec's type for a failure the client did not cause) and the
    503 status tells the client it is temporary and worth retrying. A write cut off this
    way may or may not have been applied; the client decides whether to send it again.
    """

    status = 503
    title = "Service unavailable"
    retry_after = 2  # seconds: the order of a database restart


class LdContextNotAvailable(NgsiLdError):
    status = 504
    type_uri = _BASE + "LdContextNotAvailable"
    title = "@context not available"
