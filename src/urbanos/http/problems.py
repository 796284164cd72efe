"""Errors -> ProblemDetails responses (clause 5.5.2, binding 6.3.2): the one place they are rendered.

Every error answer carries ``type``, ``title``, ``status`` and ``detail``, except the bare 411
that clause 6.3.4 asks for. Errors raised by the router itself (no such path, method not
allowed) are rendered the same way, so a client never sees a plain-text error. A valid
NGSILD-Tenant header is echoed on errors too (clause 6.3.14).
"""

from __future__ import annotations

import logging

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from urbanos.errors import (
    Forbidden,
    InvalidRequest,
    LengthRequired,
    NgsiLdError,
    ResourceNotFound,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
)
from urbanos.http.negotiation import echo_tenant, tenant_from
from urbanos.services.guard import record_denial

log = logging.getLogger("urbanos.http")

PROBLEM_MT = "application/json"


def problem_response(exc: NgsiLdError, headers: dict[str, str] | None = None) -> Response:
    if isinstance(exc, LengthRequired):  # clause 6.3.4: just the status, no body
        return Response(status_code=411, headers=headers)
    if isinstance(exc, ServiceUnavailable | TooManyRequests):  # RFC 9110 15.6.4, RFC 6585
        headers = {"Retry-After": str(exc.retry_after)} | (headers or {})
    if isinstance(exc, Unauthorized):  # RFC 9110 11.6.1, RFC 6750 section 3
        headers = {"WWW-Authenticate": exc.challenge} | (headers or {})
    return Response(
        orjson.dumps(exc.problem()), status_code=exc.status, media_type=PROBLEM_MT,
        headers=headers,
    )


def _tenant_headers(request: Request) -> dict[str, str]:
    tenant = echo_tenant(request)
    return {"NGSILD-Tenant": tenant} if tenant else {}


async def handle_ngsi_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NgsiLdError)
    if isinstance(exc, Unauthorized | Forbidden) and not exc.audited:
        await _audit_denial(request, exc)
    return problem_response(exc, _tenant_headers(request))


async def _audit_denial(request: Request, exc: NgsiLdError) -> None:
    """Every denial is in the audit log, with who was refused what."""
    access = getattr(getattr(request.app.state, "services", None), "access", None)
    principal = request.scope.get("principal")
    if access is None or principal is None:
        return
    try:
        tenant = tenant_from(request.headers.get("ngsild-tenant"))
    except NgsiLdError:
        tenant = request.headers.get("ngsild-tenant", "")
    endpoint = request.scope.get("endpoint")
    try:
        await record_denial(access, principal.key, principal.client, tenant,
                            getattr(endpoint, "__name__", request.method), exc,
                            request.scope.get("request_id"))
    except Exception:  # the refusal is answered even when the log cannot be written
        log.exception("could not record a denial in the audit log")


class _RoutingError(InvalidRequest):
    """A router-level client error (405 and the like), with the router's status."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = {405: "Method not allowed"}.get(status, self.title)


async def handle_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own HTTPException (unknown path, method not allowed) as ProblemDetails."""
    assert isinstance(exc, HTTPException)
    path = request.url.path
    error: NgsiLdError
    if exc.status_code == 404:
        error = ResourceNotFound(f"there is no resource at {path}")
    elif exc.status_code == 405:
        error = _RoutingError(405, f"{request.method} is not supported on {path}")
    elif 400 <= exc.status_code < 500:
        error = _RoutingError(exc.status_code, str(exc.detail))
    else:
        error = NgsiLdError(str(exc.detail))
    headers = dict(exc.headers or {}) | _tenant_headers(request)
    return problem_response(error, headers)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(
        NgsiLdError("an unexpected error occurred; it has been logged"), _tenant_headers(request)
    )
