"""Reading entities: Query Entities (GET and POST) and Retrieve Entity (clauses 5.7.1, 5.7.2)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from urllib.parse import quote

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from urbanos.core.jsonld import core_term_map
from urbanos.core.policy import OPEN, Principal
from urbanos.core.query.evaluate import matches_type
from urbanos.core.query.parse import parse_type_expr
from urbanos.core.render import (
    RenderOptions,
    flat_members,
    needs_legacy_rewrite,
    render_entity,
    render_feature,
    visible_attributes,
)
from urbanos.core.selection import EntityQuery
from urbanos.errors import ResourceNotFound
from urbanos.http.context import Services, context_of, link_url, request_context, services
from urbanos.http.endpoints.entities import _path_id, entity_id_in_path
from urbanos.http.endpoints.entity_maps import HEADER, map_location, reference_id, registry
from urbanos.http.endpoints.snapshots import HEADER as SNAPSHOT
from urbanos.http.negotiation import GEOJSON_MT, JSON_MT, JSONLD_MT, RequestContext, read_body
from urbanos.http.params import (
    QUERY_PARAMS,
    RENDER_PARAMS,
    build_render_options,
    check_params,
    entity_query,
    flag,
    options,
    paging,
    render_options,
)
from urbanos.http.query_body import query_from_body
from urbanos.http.respond import json_body, json_response
from urbanos.services.entities import Page
from urbanos.services.guard import Guard
from urbanos.services.linked import linked_entities
from urbanos.types import JSON, JSONObject

ENTITY_OFFER = (JSON_MT, JSONLD_MT, GEOJSON_MT)
_PREFER_VERSION = re.compile(r"(?:^|[,;\s])ngsi-ld\s*=\s*\"?(\d+)\.(\d+)\"?")
_RETRIEVE_PARAMS = RENDER_PARAMS | {"type", "local", "containedBy", "entityMap", "expandValues",
                                    "via"}
_POST_PARAMS = {"limit", "offset", "count", "options", "format", "local", "lang"}


def render_page(
    ctx: RequestContext, entities: list[JSONObject], opts: RenderOptions,
    linked: dict[str, JSONObject],
) -> JSON:
    """A page of entities in the negotiated shape; entities projected down to nothing drop."""
    if opts.join == "flat":
        members = flat_members(entities, opts, linked)
        if ctx.accept == GEOJSON_MT:
            features = [render_feature(e, ctx.terms, o) for e, o in members]
            return {"type": "FeatureCollection", "features": features}
        shown = [render_entity(e, ctx.terms, o) for e, o in members]
        return [b for b in shown if b]
    if ctx.accept == GEOJSON_MT:
        return {
            "type": "FeatureCollection",
            "features": [render_feature(e, ctx.terms, opts, linked) for e in entities],
        }
    rendered = [render_entity(e, ctx.terms, opts, linked) for e in entities]
    return [r for r in rendered if r]


def _prefer(request: Request, opts: RenderOptions) -> tuple[RenderOptions, str | None]:
    """``Prefer: ngsi-ld=X.Y`` (clause 4.3.6.8): reformat for consumers older than 1.8."""
    match = _PREFER_VERSION.search(request.headers.get("prefer", ""))
    if match is None:
        return opts, None
    major, minor = int(match.group(1)), int(match.group(2))
    return replace(opts, legacy=(major, minor) < (1, 8)), f"ngsi-ld={major}.{minor}"


def _version_headers(
    applied: str | None, opts: RenderOptions, entities: list[JSONObject]
) -> tuple[int, dict[str, str]]:
    if applied is None:
        return 200, {}
    altered = opts.legacy and any(needs_legacy_rewrite(e) for e in entities)
    return (203 if altered else 200), {"Preference-Applied": applied}


def _entity_map(request: Request, tenant: str, ids: list[str]) -> dict[str, str]:
    """The NGSILD-EntityMap header (clause 5.7.1.4): echo a live map, else make a new one."""
    ref = request.headers.get(HEADER)
    if ref is None and not flag(request.query_params, "entityMap"):
        return {}
    maps = registry(request)
    if ref is not None and maps.get(tenant, reference_id(ref)) is not None:
        return {HEADER: ref}
    return {HEADER: map_location(request, maps.create(tenant, ids).id)}


async def _query(
    request: Request, svc: Services, tenant: str, query: EntityQuery, guard: Guard
) -> tuple[Page, dict[str, str]]:
    """The live entities, or with NGSILD-Snapshot those of that snapshot (clause 6.3.22),
    and the header to echo."""
    snapshot = request.headers.get(SNAPSHOT)
    if snapshot is None:
        return await svc.entities.query(tenant, query, guard=guard), {}
    assert svc.snapshots is not None
    return await svc.snapshots.query(tenant, snapshot, guard.query(query)), {SNAPSHOT: snapshot}


async def query_entities(request: Request) -> Response:
    """Query Entities (clause 5.7.2, binding 6.4.3.2), with paging Links and a count."""
    params = request.query_params
    check_params(params, QUERY_PARAMS)
    ctx = await request_context(request, offered=ENTITY_OFFER)
    svc = services(request)
    opts = render_options(params, ctx.terms, geojson=ctx.accept == GEOJSON_MT)
    opts, applied = _prefer(request, opts)
    query = entity_query(params, ctx.terms, svc.settings)
    page, scoped = await _query(request, svc, ctx.tenant, query, ctx.guard)
    linked = await linked_entities(svc.entities, ctx.tenant, page.entities, opts,
                                   guard=ctx.guard)
    status, headers = _version_headers(applied, opts, page.entities)
    headers.update(scoped)
    headers.update(_entity_map(request, ctx.tenant, [e["id"] for e in page.entities]))
    headers.update(_paging_headers(request, ctx, page, query.limit, query.offset))
    if page.total is not None:
        headers["NGSILD-Results-Count"] = str(page.total)
    data = render_page(ctx, page.entities, opts, linked)
    return await _respond_with_links(request, ctx, data, headers, status)


async def _respond_with_links(
    request: Request, ctx: RequestContext, data: JSON, headers: dict[str, str], status: int = 200
) -> Response:
    paging = headers.pop("Link", None)
    response = json_response(
        ctx, data, status=status, link_url=await link_url(request, ctx), headers=headers
    )
    if paging:
        existing = response.headers.get("Link")
        response.headers["Link"] = f"{existing}, {paging}" if existing else paging
    return response


def _page_link(request: Request, ctx: RequestContext, offset: int, limit: int, rel: str) -> str:
    """One paging link (clause 6.3.13): the same query, parameters in name order."""
    params = {**dict(request.query_params), "offset": str(offset), "limit": str(limit)}
    query = "&".join(
        f"{quote(k, safe='')}={quote(v, safe=':/@!$*()')}" for k, v in sorted(params.items())
    )
    return f'<{request.url.path}?{query}>; rel="{rel}"; type="{ctx.accept}"'


def _paging_headers(
    request: Request, ctx: RequestContext, page: Page, limit: int, offset: int
) -> dict[str, str]:
    if limit == 0:
        return {}
    links = []
    if offset > 0:
        links.append(_page_link(request, ctx, max(0, offset - limit), limit, "prev"))
    more = len(page.entities) == limit
    if page.total is not None:
        more = offset + limit < page.total
    if more:
        links.append(_page_link(request, ctx, offset + limit, limit, "next"))
    return {"Link": ", ".join(links)} if links else {}


async def retrieve_entity(request: Request) -> Response:
    """Retrieve Entity (clause 5.7.1, binding 6.5.3.1).

    404 when the entity is unknown, is not of the ``type`` asked for, has none of the
    ``attrs`` asked for, or when ``pick``/``omit`` leave nothing of it (clause 5.7.1.4).
    """
    params = request.query_params
    check_params(params, _RETRIEVE_PARAMS)
    entity_id = _path_id(request)
    ctx = await request_context(request, offered=ENTITY_OFFER)
    svc = services(request)
    opts = render_options(params, ctx.terms, geojson=ctx.accept == GEOJSON_MT)
    opts, applied = _prefer(request, opts)
    types = parse_type_expr(params["type"], ctx.terms.expand) if "type" in params else None
    flag(params, "local")
    snapshot = request.headers.get(SNAPSHOT)
    if snapshot is None:
        entity = await svc.entities.retrieve(ctx.tenant, entity_id, guard=ctx.guard)
    else:
        assert svc.snapshots is not None
        frozen = await svc.snapshots.retrieve_entity(ctx.tenant, snapshot, entity_id)
        shown = ctx.guard.read(frozen)
        if shown is None:
            raise ResourceNotFound(f"entity {entity_id} not found")
        entity = shown
    if types is not None and not matches_type(types, entity.get("type", [])):
        raise ResourceNotFound(f"entity {entity_id} is not of type {params['type']}")
    if opts.attrs is not None and not any(True for _ in visible_attributes(entity, opts)):
        raise ResourceNotFound(f"entity {entity_id} has none of the attributes asked for")
    projected = opts.pick is not None or opts.omit is not None
    if projected and not render_entity(entity, ctx.terms, replace(opts, join=None)):
        raise ResourceNotFound(f"nothing of entity {entity_id} is left after pick/omit")
    linked = await linked_entities(svc.entities, ctx.tenant, [entity], opts,
                                   guard=ctx.guard)
    data = _render_one(ctx, entity, opts, linked)
    status, headers = _version_headers(applied, opts, [entity])
    headers.update(_entity_map(request, ctx.tenant, [entity_id]))
    if snapshot is not None:
        headers[SNAPSHOT] = snapshot
    return json_response(
        ctx, data, status=status, link_url=await link_url(request, ctx), headers=headers
    )


def _render_one(
    ctx: RequestContext, entity: JSONObject, opts: RenderOptions, linked: dict[str, JSONObject]
) -> JSON:
    if opts.join == "flat" and len(linked) > 1:
        return render_page(ctx, [entity], opts, linked)
    if ctx.accept == GEOJSON_MT:
        return render_feature(entity, ctx.terms, opts, linked)
    return render_entity(entity, ctx.terms, opts, linked)


PLAIN_OPTIONS = render_options(QueryParams(), core_term_map())


async def retrieve_plain(
    svc: Services, path_id: str, headers: Mapping[str, str], principal: Principal = OPEN
) -> tuple[bytes, dict[str, str], str]:
    """``retrieve_entity`` without a Request, for a request with no query string and no
    ``Prefer`` or ``NGSILD-EntityMap`` header: its body, headers but Content-Length and
    Content-Type, and media type. ``headers`` has lower-case names, the first value of each.
    Raises what ``retrieve_entity`` would raise, though maybe not the same error first.
    """
    entity_id = entity_id_in_path(path_id)
    ctx = await context_of(svc, headers, offered=ENTITY_OFFER, principal=principal,
                           operation="retrieve_entity")
    entity = await svc.entities.retrieve(ctx.tenant, entity_id, guard=ctx.guard)
    data = _render_one(ctx, entity, PLAIN_OPTIONS, {})  # no join: nothing linked to fetch
    url = await svc.contexts.link_url(ctx.context, tenant=ctx.tenant)
    body, out = json_body(ctx, data, link_url=url)
    return body, out, ctx.accept


async def query_post(request: Request) -> Response:
    """Query Entities via POST (clause 5.7.2, binding 6.23): the Query data type in the body."""
    params = request.query_params
    check_params(params, _POST_PARAMS)
    s = services(request).settings
    body, ctype = await read_body(request, s.max_body_bytes, s.max_json_depth)
    ctx = await request_context(request, body=body, ctype=ctype, offered=ENTITY_OFFER)
    svc = services(request)
    base = render_options(params, ctx.terms, geojson=ctx.accept == GEOJSON_MT)
    limit, offset, count = paging(params, s)
    asked = query_from_body(body, ctx.terms, limit=limit, offset=offset, count=count,
                            local=flag(params, "local"))
    opts = build_render_options(
        ctx.terms, fmt=base.fmt, sys_attrs=base.sys_attrs, pick=asked.pick, omit=asked.omit,
        attrs=asked.attrs, lang=asked.lang or params.get("lang"),
        geometry_property=asked.geometry_property, geojson=ctx.accept == GEOJSON_MT,
        join=asked.join, datasets=asked.datasets,
    )
    opts, applied = _prefer(request, opts)
    options(params, {"keyValues", "simplified", "concise", "normalized", "sysAttrs"})
    page, scoped = await _query(request, svc, ctx.tenant, asked.query, ctx.guard)
    linked = await linked_entities(svc.entities, ctx.tenant, page.entities, opts,
                                   guard=ctx.guard)
    status, headers = _version_headers(applied, opts, page.entities)
    headers.update(scoped)
    if page.total is not None:
        headers["NGSILD-Results-Count"] = str(page.total)
    data = render_page(ctx, page.entities, opts, linked)
    return json_response(
        ctx, data, status=status, link_url=await link_url(request, ctx), headers=headers
    )
