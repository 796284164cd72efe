"""/csourceRegistrations (clauses 5.9 - 5.10, bindings 6.8 - 6.9): register context
sources, and read, query, update and delete their registrations.

Entity types and attribute names are expanded with the request's @context on the way in
and compacted with the caller's @context on the way out, as for subscriptions.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from urbanos.core.registration_query import PARAMS, parse_registration_query
from urbanos.http.context import link_url, request_context, services
from urbanos.http.endpoints.subscriptions import read_json_body, tenant_headers
from urbanos.http.params import check_params, options, paging, uri_in_path
from urbanos.http.respond import add_paging_links, empty, json_response
from urbanos.services.registrations import RegistrationService

PATH = "/ngsi-ld/v1/csourceRegistrations"


def _service(request: Request) -> RegistrationService:
    service = services(request).registrations
    assert service is not None, "the registration service is wired in the app lifespan"
    return service


def _path_id(request: Request) -> str:
    return uri_in_path(request, "registration_id", "registration")


async def create_registration(request: Request) -> Response:
    """Register Context Source (clause 5.9.2, binding 6.8.3.1): 201 with Location."""
    check_params(request.query_params, set())
    body, ctx = await read_json_body(request)
    reg_id = await _service(request).create(ctx.tenant, body, ctx.terms, guard=ctx.guard)
    headers = {"Location": f"{PATH}/{quote(reg_id, safe=':')}"}
    return empty(201, headers | tenant_headers(ctx.tenant))


async def query_registrations(request: Request) -> Response:
    """Query Context Source Registrations (clause 5.10.2, binding 6.8.3.2): those matching
    the entity, attribute, ``q``, ``csf``, geo, temporal and scope filters
    (``core.registration_query``), paged, with a count."""
    params = request.query_params
    check_params(params, PARAMS | {"limit", "offset", "count", "options"})
    ctx = await request_context(request)
    sys_attrs = "sysAttrs" in options(params, {"sysAttrs"})
    query = parse_registration_query(params, ctx.terms)
    limit, offset, count = paging(params, services(request).settings)
    data, total = await _service(request).query(
        ctx.tenant, ctx.terms, query, limit=limit, offset=offset, sys_attrs=sys_attrs,
        guard=ctx.guard)
    headers = {"NGSILD-Results-Count": str(total)} if count else {}
    response = json_response(ctx, data, link_url=await link_url(request, ctx), headers=headers)
    return add_paging_links(response, request, ctx, limit=limit, offset=offset, total=total)


async def retrieve_registration(request: Request) -> Response:
    """Retrieve Context Source Registration (clause 5.10.1, binding 6.9.3.1)."""
    params = request.query_params
    check_params(params, {"options"})
    reg_id = _path_id(request)
    ctx = await request_context(request)
    sys_attrs = "sysAttrs" in options(params, {"sysAttrs"})
    data = await _service(request).retrieve(ctx.tenant, reg_id, ctx.terms,
                                            sys_attrs=sys_attrs, guard=ctx.guard)
    return json_response(ctx, data, link_url=await link_url(request, ctx))


async def update_registration(request: Request) -> Response:
    """Update Context Source Registration (clause 5.9.3, binding 6.9.3.2): 204."""
    check_params(request.query_params, set())
    reg_id = _path_id(request)
    body, ctx = await read_json_body(request)
    await _service(request).update(ctx.tenant, reg_id, body, ctx.terms, guard=ctx.guard)
    return empty(204, tenant_headers(ctx.tenant))


async def delete_registration(request: Request) -> Response:
    """Delete Context Source Registration (clause 5.9.4, binding 6.9.3.3): 204."""
    check_params(request.query_params, set())
    reg_id = _path_id(request)
    ctx = await request_context(request)
    await _service(request).delete(ctx.tenant, reg_id, guard=ctx.guard)
    return empty(204, tenant_headers(ctx.tenant))
