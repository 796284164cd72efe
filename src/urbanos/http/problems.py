"""NgsiLdError -> application/problem+json (clause 5.5.2), the one place errors are rendered."""

from __future__ import annotations

import logging

import orjson
from starlette.requests import Request
from starlette.responses import Response

from urbanos.errors import LengthRequired, NgsiLdError

log = logging.getLogger("urbanos.http")


def problem_response(exc: NgsiLdError) -> Response:
    if isinstance(exc, LengthRequired):  # clause 6.3.4: just the status, no body
        return Response(status_code=411)
    return Response(
        orjson.dumps(exc.problem()), status_code=exc.status, media_type="application/json"
    )


async def handle_ngsi_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NgsiLdError)
    return problem_response(exc)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(NgsiLdError("an unexpected error occurred; it has been logged"))
