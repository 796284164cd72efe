"""Reading entities: Query Entities (GET and POST) and Retrieve Entity (clauses 5.7.1, 5.7.2)."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from urbanos.core.render import RenderOptions, render_entity, render_feature
from urbanos.http.context import link_url, request_context, services
from urbanos.http.endpoints.entities import _path_id
from urbanos.http.negotiation import GEOJSON_MT, JSON_MT, JSONLD_MT, RequestContext, read_body
from urbanos.http.params import (
    QUERY_PARAMS,
    RENDER_PARAMS,
    check_params,
    entity_query,
    paging,
    render_options,
)
from urbanos.http.query_body import query_from_body
from urbanos.http.respond import json_response
from urbanos.storage.base import Page
from urbanos.types import JSON, JSONObject

ENTITY_OFFER = (JSON_MT, JSONLD_MT, GEOJSON_MT)


def render_page(ctx: RequestContext, entities: list[JSONObject], opts: RenderOptions) -> JSON:
    if ctx.accept == GEOJSON_MT:
        return {
            "type": "FeatureCollection",
            "features": [render_feature(e, ctx.terms, opts) for e in entities],
        }
    return [render_entity(e, ctx.terms, opts) for e in entities]


async def query_entities(request: Request) -> Response:
    """Query Entities (clause 5.7.2, binding 6.4.3.2), with paging Links and a count."""
    params = request.query_params
    check_params(params, QUERY_PARAMS)
    ctx = await request_context(request, offered=ENTITY_OFFER)
    svc = services(request)
    opts = render_options(params, ctx.terms)
    query = entity_query(params, ctx.terms, svc.settings)
    page = await svc.entities.query(ctx.tenant, query)
    headers = _paging_headers(request, page, query.limit, query.offset)
    if page.total is not None:
        headers["NGSILD-Results-Count"] = str(page.total)
    data = render_page(ctx, page.entities, opts)
    return _respond_with_links(request, ctx, data, headers)


def _respond_with_links(
    request: Request, ctx: RequestContext, data: JSON, headers: dict[str, str]
) -> Response:
    paging = headers.pop("Link", None)
    response = json_response(ctx, data, link_url=link_url(request, ctx), headers=headers)
    if paging:
        existing = response.headers.get("Link")
        response.headers["Link"] = f"{existing}, {paging}" if existing else paging
    return response


def _paging_headers(request: Request, page: Page, limit: int, offset: int) -> dict[str, str]:
    links = []
    base = dict(request.query_params)
    if offset > 0:
        prev = {**base, "offset": str(max(0, offset - limit)), "limit": str(limit)}
        links.append(f'<{request.url.path}?{urlencode(prev)}>; rel="prev"')
    more = len(page.entities) == limit and limit > 0
    if page.total is not None:
        more = offset + limit < page.total
    if more:
        nxt = {**base, "offset": str(offset + limit), "limit": str(limit)}
        links.append(f'<{request.url.path}?{urlencode(nxt)}>; rel="next"')
    return {"Link": ", ".join(links)} if links else {}


async def retrieve_entity(request: Request) -> Response:
    """Retrieve Entity (clause 5.7.1, binding 6.5.3.1)."""
    params = request.query_params
    check_params(params, RENDER_PARAMS | {"type", "local", "datasetId", "join", "joinLevel",
                                          "containedBy", "entityMap", "expandValues", "via"})
    entity_id = _path_id(request)
    ctx = await request_context(request, offered=ENTITY_OFFER)
    opts = render_options(params, ctx.terms)
    entity = await services(request).entities.retrieve(ctx.tenant, entity_id)
    if ctx.accept == GEOJSON_MT:
        data = render_feature(entity, ctx.terms, opts)
    else:
        data = render_entity(entity, ctx.terms, opts)
    return json_response(ctx, data, link_url=link_url(request, ctx))


async def query_post(request: Request) -> Response:
    """Query Entities via POST (clause 5.7.2, binding 6.23): the Query data type in the body."""
    params = request.query_params
    check_params(params, {"limit", "offset", "count", "options", "format", "local", "lang"})
    s = services(request).settings
    body, ctype = await read_body(request, s.max_body_bytes, s.max_json_depth)
    ctx = await request_context(request, body=body, ctype=ctype, offered=ENTITY_OFFER)
    opts = render_options(params, ctx.terms)
    limit, offset, count = paging(params, s)
    query, attr_filter = query_from_body(body, ctx.terms, limit=limit, offset=offset,
                                         count=count)
    if attr_filter is not None:
        opts = replace(opts, attrs=attr_filter)
    page = await services(request).entities.query(ctx.tenant, query)
    headers = {"NGSILD-Results-Count": str(page.total)} if page.total is not None else {}
    data = render_page(ctx, page.entities, opts)
    return json_response(ctx, data, link_url=link_url(request, ctx), headers=headers)
