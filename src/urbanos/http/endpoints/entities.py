"""/entities and /entities/{entityId}[/attrs[/{attrId}]] (clauses 6.4 - 6.7)."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response

from urbanos.core.entity import (
    check_entity_id,
    check_name,
    expand_attribute,
    expand_attributes,
    expand_entity,
)
from urbanos.core.render import RenderOptions, render_entity, render_feature
from urbanos.core.timeutil import now_iso
from urbanos.errors import BadRequestData
from urbanos.http.context import link_url, request_context, services
from urbanos.http.negotiation import GEOJSON_MT, JSON_MT, JSONLD_MT, RequestContext, read_body
from urbanos.http.params import (
    QUERY_PARAMS,
    RENDER_PARAMS,
    check_params,
    entity_query,
    flag,
    options,
    render_options,
)
from urbanos.http.respond import empty, json_response, link_header
from urbanos.storage.base import Page
from urbanos.types import JSON, JSONObject

ENTITY_OFFER = (JSON_MT, JSONLD_MT, GEOJSON_MT)


def _path_id(request: Request) -> str:
    return check_entity_id(request.path_params["entity_id"].replace("%2F", "/"))


async def _body(request: Request, *, merge_patch: bool = False) -> tuple[JSON, RequestContext]:
    s = services(request).settings
    body, ctype = await read_body(
        request, s.max_body_bytes, s.max_json_depth, merge_patch=merge_patch
    )
    if ctype == "application/merge-patch+json":
        ctype = JSON_MT
    ctx = await request_context(request, body=body, ctype=ctype)
    return body, ctx


def _tenant_headers(ctx: RequestContext) -> dict[str, str]:
    return {"NGSILD-Tenant": ctx.tenant} if ctx.tenant else {}


def _strip_context(body: JSON) -> JSONObject:
    if not isinstance(body, dict):
        raise BadRequestData("the body must be a JSON object")
    return {k: v for k, v in body.items() if k != "@context"}


def render_page(ctx: RequestContext, entities: list[JSONObject], opts: RenderOptions) -> JSON:
    if ctx.accept == GEOJSON_MT:
        return {
            "type": "FeatureCollection",
            "features": [render_feature(e, ctx.terms, opts) for e in entities],
        }
    return [render_entity(e, ctx.terms, opts) for e in entities]


async def create_entity(request: Request) -> Response:
    """Create Entity (clause 5.6.1, binding 6.4.3.1): 201 with Location."""
    check_params(request.query_params, {"local"})
    body, ctx = await _body(request)
    entity = expand_entity(body, ctx.terms, now_iso())
    await services(request).entities.create(ctx.tenant, entity)
    headers = {"Location": f"/ngsi-ld/v1/entities/{quote(entity['id'], safe=':')}"}
    return empty(201, headers | _tenant_headers(ctx))


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


async def delete_entity(request: Request) -> Response:
    """Delete Entity (clause 5.6.6, binding 6.5.3.2)."""
    check_params(request.query_params, {"type", "local"})
    entity_id = _path_id(request)
    ctx = await request_context(request)
    await services(request).entities.delete(ctx.tenant, entity_id)
    return empty(204, _tenant_headers(ctx))


async def replace_entity(request: Request) -> Response:
    """Replace Entity (clause 5.6.18, binding 6.5.3.3)."""
    check_params(request.query_params, {"local"})
    entity_id = _path_id(request)
    body, ctx = await _body(request)
    new = expand_entity(_strip_context(body), ctx.terms, now_iso(), entity_id=entity_id)
    await services(request).entities.replace(ctx.tenant, entity_id, new)
    return empty(204, _tenant_headers(ctx))


async def merge_entity(request: Request) -> Response:
    """Merge Entity (clause 5.6.17, binding 6.5.3.4): merge-patch with NGSI-LD Null."""
    check_params(request.query_params, {"local", "observedAt", "format", "options", "lang"})
    entity_id = _path_id(request)
    body, ctx = await _body(request, merge_patch=True)
    fragment = expand_entity(
        _strip_context(body), ctx.terms, now_iso(), entity_id=entity_id, require_type=False,
        merge=True,
    )
    await services(request).entities.merge(ctx.tenant, entity_id, fragment)
    return empty(204, _tenant_headers(ctx))


def _update_result(ctx: RequestContext, outcome_updated: list[str],
                   not_updated: list[tuple[str, str]]) -> JSONObject:
    return {
        "updated": [ctx.terms.compact(n) for n in outcome_updated],
        "notUpdated": [
            {"attributeName": ctx.terms.compact(n), "reason": reason} for n, reason in not_updated
        ],
    }


async def append_attrs(request: Request) -> Response:
    """Append Entity Attributes (clause 5.6.3, binding 6.6.3.1): 204, or 207 with notUpdated."""
    params = request.query_params
    check_params(params, {"options", "local"})
    no_overwrite = "noOverwrite" in options(params, {"noOverwrite"})
    entity_id = _path_id(request)
    body, ctx = await _body(request)
    fragment = _strip_context(body)
    if "id" in fragment and fragment["id"] != entity_id:
        raise BadRequestData("the id in the payload does not match the id in the URL")
    raw_type = fragment.pop("type", None)
    fragment.pop("id", None)
    types = None
    if raw_type is not None:
        from urbanos.core.entity import expand_types

        types = expand_types(raw_type, ctx.terms)
    attrs = expand_attributes(fragment, ctx.terms, now_iso())
    outcome = await services(request).entities.append(
        ctx.tenant, entity_id, attrs, no_overwrite=no_overwrite, entity_type=types
    )
    if outcome.not_updated:
        return json_response(
            _plain(ctx), _update_result(ctx, outcome.updated, outcome.not_updated), status=207,
            link_url="", with_context=False,
        )
    return empty(204, _tenant_headers(ctx))


def _plain(ctx: RequestContext) -> RequestContext:
    return RequestContext(ctx.tenant, ctx.context, ctx.terms, JSON_MT)


async def update_attrs(request: Request) -> Response:
    """Update Entity Attributes (clause 5.6.2, binding 6.6.3.2)."""
    check_params(request.query_params, {"local"})
    entity_id = _path_id(request)
    body, ctx = await _body(request)
    fragment = _strip_context(body)
    fragment.pop("id", None)
    fragment.pop("type", None)
    attrs = expand_attributes(fragment, ctx.terms, now_iso())
    outcome = await services(request).entities.update(ctx.tenant, entity_id, attrs)
    if outcome.not_updated:
        return json_response(
            _plain(ctx), _update_result(ctx, outcome.updated, outcome.not_updated), status=207,
            link_url="", with_context=False,
        )
    return empty(204, _tenant_headers(ctx))


async def _attr_body(request: Request) -> tuple[str, str, list[JSONObject], RequestContext]:
    entity_id = _path_id(request)
    name = check_name(request.path_params["attr_id"])
    body, ctx = await _body(request)
    raw = _strip_context(body) if isinstance(body, dict) else body
    iri = ctx.terms.expand(name)
    instances = expand_attribute(iri, raw, ctx.terms, now_iso(), merge=True)
    return entity_id, iri, instances, ctx


async def patch_attr(request: Request) -> Response:
    """Partial Attribute Update (clause 5.6.4, binding 6.7.3.1)."""
    check_params(request.query_params, {"local"})
    entity_id, iri, instances, ctx = await _attr_body(request)
    await services(request).entities.patch_attr(ctx.tenant, entity_id, iri, instances)
    return empty(204, _tenant_headers(ctx))


async def replace_attr(request: Request) -> Response:
    """Replace Attribute (clause 5.6.19, binding 6.7.3.3)."""
    check_params(request.query_params, {"local"})
    entity_id = _path_id(request)
    name = check_name(request.path_params["attr_id"])
    body, ctx = await _body(request)
    raw = _strip_context(body)
    iri = ctx.terms.expand(name)
    instances = expand_attribute(iri, raw, ctx.terms, now_iso())
    await services(request).entities.replace_attr(ctx.tenant, entity_id, iri, instances)
    return empty(204, _tenant_headers(ctx))


async def delete_attr(request: Request) -> Response:
    """Delete Attribute (clause 5.6.5, binding 6.7.3.2), by datasetId or all instances."""
    params = request.query_params
    check_params(params, {"datasetId", "deleteAll", "local"})
    entity_id = _path_id(request)
    name = check_name(request.path_params["attr_id"])
    dataset_id = params.get("datasetId")
    if dataset_id is not None:
        from urbanos.core.entity import is_uri

        if not is_uri(dataset_id):
            raise BadRequestData("datasetId must be a URI")
    ctx = await request_context(request)
    await services(request).entities.delete_attr(
        ctx.tenant, entity_id, ctx.terms.expand(name), dataset_id=dataset_id,
        delete_all=flag(params, "deleteAll"),
    )
    return empty(204, _tenant_headers(ctx))


async def purge_entities(request: Request) -> Response:
    """Purge Entities (clause 5.6.21, binding 6.4.3.3): delete what a query selects."""
    params = request.query_params
    check_params(params, {"type", "id", "idPattern", "q", "scopeQ", "attrs", "georel",
                          "geometry", "coordinates", "geoproperty", "local"})
    if "type" not in params:
        raise BadRequestData("purging entities needs a type")
    ctx = await request_context(request)
    svc = services(request)
    query = entity_query(params, ctx.terms, svc.settings)
    await svc.entities.purge(ctx.tenant, query)
    return empty(204, _tenant_headers(ctx))


__all__ = ["link_header"]
