"""/jsonldContexts (clause 5.13, binding 6.29 - 6.30): add, list, serve, delete @contexts."""

from __future__ import annotations

from urllib.parse import unquote

import orjson
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from urbanos.core.policy import Action
from urbanos.errors import BadRequestData
from urbanos.http.context import guard_of, services
from urbanos.http.negotiation import JSON_MT, choose_accept, read_body, tenant_of
from urbanos.http.params import check_params, flag
from urbanos.http.respond import empty


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON_MT)


def _flag(params: QueryParams, name: str) -> bool:
    """``details``/``reload``: a known parameter with a value other than true/false is
    input the operation cannot use, so BadRequestData rather than InvalidRequest."""
    return flag(params, name, error=BadRequestData)


def _context_id(request: Request) -> str:
    return unquote(request.path_params["context_id"].replace("%2F", "/"))


async def add_context(request: Request) -> Response:
    """Add @context (clause 5.13.2): 201 with the Location of the hosted copy.

    The Location is broker-relative, as for every other created resource; the absolute
    URL to use as a @context is the ``URL`` member of the entry's details.
    """
    check_params(request.query_params, set())
    s = services(request).settings
    body, _ = await read_body(request, s.max_body_bytes, s.max_json_depth)
    contexts = services(request).contexts
    tenant = tenant_of(request)
    guard = await guard_of(request, tenant)
    guard.require(Action.WRITE)
    local_id = await contexts.add(body, tenant=tenant)
    await guard.record_ok([local_id])
    return empty(201, {"Location": contexts.path(local_id)})


async def list_contexts(request: Request) -> Response:
    """List @contexts (clause 5.13.3): URLs, or details with details=true, by kind."""
    params = request.query_params
    check_params(params, {"details", "kind"})
    choose_accept(request.headers.get("accept"), (JSON_MT, "application/ld+json"))
    data = await services(request).contexts.list(
        details=_flag(params, "details"), kind=params.get("kind"), tenant=tenant_of(request)
    )
    return _json(data)


async def serve_context(request: Request) -> Response:
    """Serve @context (clause 5.13.4): the document, or its details with details=true."""
    params = request.query_params
    check_params(params, {"details"})
    choose_accept(request.headers.get("accept"), (JSON_MT, "application/ld+json"))
    data = await services(request).contexts.get(
        _context_id(request), details=_flag(params, "details"), tenant=tenant_of(request)
    )
    return _json(data)


async def delete_context(request: Request) -> Response:
    """Delete and Reload @context (clause 5.13.5)."""
    params = request.query_params
    check_params(params, {"reload"})
    guard = await guard_of(request, tenant_of(request))
    guard.require(Action.WRITE)
    await services(request).contexts.delete(
        _context_id(request), reload=_flag(params, "reload"), tenant=tenant_of(request)
    )
    await guard.record_ok([_context_id(request)])
    return empty(204)
