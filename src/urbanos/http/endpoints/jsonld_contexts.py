"""/jsonldContexts (clause 5.13, binding 6.29 - 6.30): add, list, serve, delete @contexts."""

from __future__ import annotations

from urllib.parse import unquote

import orjson
from starlette.requests import Request
from starlette.responses import Response

from urbanos.http.context import services
from urbanos.http.negotiation import JSON_MT, choose_accept, read_body, tenant_of
from urbanos.http.params import check_params, flag
from urbanos.http.respond import empty


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON_MT)


async def add_context(request: Request) -> Response:
    """Add @context (clause 5.13.2): 201 with the Location of the hosted copy."""
    check_params(request.query_params, set())
    s = services(request).settings
    body, _ = await read_body(request, s.max_body_bytes, s.max_json_depth)
    tenant = tenant_of(request)
    local_id = await services(request).contexts.add(body, tenant=tenant)
    return empty(201, {"Location": services(request).contexts.url(local_id)})


async def list_contexts(request: Request) -> Response:
    """List @contexts (clause 5.13.3): URLs, or details with details=true, by kind."""
    params = request.query_params
    check_params(params, {"details", "kind"})
    choose_accept(request.headers.get("accept"), (JSON_MT, "application/ld+json"))
    data = await services(request).contexts.list(
        details=flag(params, "details"), kind=params.get("kind"), tenant=tenant_of(request)
    )
    return _json(data)


async def serve_context(request: Request) -> Response:
    """Serve @context (clause 5.13.4): the document, or its details with details=true."""
    params = request.query_params
    check_params(params, {"details"})
    choose_accept(request.headers.get("accept"), (JSON_MT, "application/ld+json"))
    context_id = unquote(request.path_params["context_id"].replace("%2F", "/"))
    data = await services(request).contexts.get(
        context_id, details=flag(params, "details"), tenant=tenant_of(request)
    )
    return _json(data)


async def delete_context(request: Request) -> Response:
    """Delete and Reload @context (clause 5.13.5)."""
    params = request.query_params
    check_params(params, {"reload"})
    context_id = unquote(request.path_params["context_id"].replace("%2F", "/"))
    await services(request).contexts.delete(
        context_id, reload=flag(params, "reload"), tenant=tenant_of(request)
    )
    return empty(204)
