"""Reading entities: Query Entities (GET and POST) and Retrieve Entity (clauses 5.7.1, 5.7.2)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import quote

import orjson
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from urbanos.core.jsonld import core_term_map
from urbanos.core.policy import OPEN, Principal
from urbanos.core.query.ast import QExpr, TypeExpr
from urbanos.core.query.evaluate import matches_type
from urbanos.core.query.parse import parse_q, parse_type_expr
from urbanos.core.render import (
    RenderOptions,
    flat_members,
    needs_legacy_rewrite,
    render_entity,
    render_feature,
    visible_attributes,
)
from urbanos.core.selection import EntityQuery
from urbanos.errors import NgsiLdError, ResourceNotFound
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
from urbanos.http.problems import handle_ngsi_error
from urbanos.http.query_body import query_from_body
from urbanos.http.respond import json_body, json_response
from urbanos.services.entities import Page
from urbanos.services.linked import linked_entities
from urbanos.types import JSON, JSONObject, Terms

ENTITY_OFFER = (JSON_MT, JSONLD_MT, GEOJSON_MT)
_PREFER_VERSION = re.compile(r"(?:^|[,;\s])ngsi-ld\s*=\s*\"?(\d+)\.(\d+)\"?")
_RETRIEVE_PARAMS = RENDER_PARAMS | {"type", "local", "containedBy", "entityMap", "expandValues",
                                    "via"}
_POST_PARAMS = {"limit", "offset", "count", "options", "format", "local", "lang"}
WARNING = "NGSILD-Warning"


class NotPlain(Exception):
    """``retrieve_plain`` cannot answer: context sources may hold some of the entity."""


def _warning_headers(warnings: list[str]) -> dict[str, str]:
    return {WARNING: ", ".join(warnings)} if warnings else {}


async def _problem_with_warnings(request: Request, exc: NgsiLdError,
                                 warnings: list[str]) -> Response:
    """The error as ``problems.py`` renders it, with the sources' NGSILD-Warning."""
    response = await handle_ngsi_error(request, exc)
    if warnings:
        response.headers[WARNING] = ", ".join(warnings)
    return response


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


def _entity_map(request: Request, tenant: str, ids: list[str],
                holders: dict[str, list[str]] | None = None) -> dict[str, str]:
    """The NGSILD-EntityMap header (clause 5.7.1.4): echo a live map, else make a new one
    (``holders``: the sources of each entity; the local broker alone without)."""
    ref = request.headers.get(HEADER)
    if ref is None and not flag(request.query_params, "entityMap"):
        return {}
    maps = registry(request)
    if ref is not None and maps.get(tenant, reference_id(ref)) is not None:
        return {HEADER: ref}
    return {HEADER: map_location(request, maps.create(tenant, ids, holders).id)}


@dataclass(slots=True)
class _Answer:
    page: Page
    headers: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    holders: dict[str, list[str]] | None = None


#: the filters of a GET query a non-split distributed query forwards as they are
_FILTERS = ("q", "scopeQ", "georel", "geometry", "coordinates", "geoproperty")


def _filters_of_get(params: QueryParams) -> list[tuple[str, str]]:
    return [(k, params[k]) for k in _FILTERS if k in params]


def _filters_of_body(body: JSON) -> list[tuple[str, str]]:
    """The Query body's filters as GET parameters (clause 6.4.3.2 names)."""
    if not isinstance(body, dict):
        return []
    out = [(k, body[k]) for k in ("q", "scopeQ") if isinstance(body.get(k), str)]
    geo = body.get("geoQ")
    if isinstance(geo, dict):
        for key in ("georel", "geometry", "geoproperty"):
            if isinstance(geo.get(key), str):
                out.append((key, geo[key]))
        if "coordinates" in geo:
            coords = geo["coordinates"]
            out.append(("coordinates", coords if isinstance(coords, str)
                        else orjson.dumps(coords).decode()))
    return out


def _csf(raw: object, terms: Terms) -> QExpr | None:
    return parse_q(raw, terms.expand) if isinstance(raw, str) and raw else None


@dataclass(frozen=True, slots=True)
class _How:
    """How a query is run beside its EntityQuery: locally only, the raw type expression
    to forward, splitEntities, the filters to forward, the csf."""

    local: bool = False
    type_param: str | None = None
    split: bool = False
    filters: list[tuple[str, str]] = field(default_factory=list)
    csf: QExpr | None = None


#: the most entities one EntityMap holds (the query creating it is run over them all)
MAP_MOST = 10_000


async def _with_entity_map(
    request: Request, svc: Services, ctx: RequestContext, query: EntityQuery, how: _How,
) -> tuple[_Answer, dict[str, str], bool]:
    """The query's answer, the NGSILD-EntityMap header and whether a map was created.

    A live map passed back fixes the candidates (clause 5.5.9.3): the query is run over
    the map's entities only, the filters rechecked, the page filled from what still fits
    and what no longer does removed from the map. ``entityMap=true`` runs the query over
    every match to make the map (clause 5.7.2.4) and answers one page of it."""
    maps = registry(request)
    ref = request.headers.get(HEADER)
    live = maps.get(ctx.tenant, reference_id(ref)) if ref else None
    if ref is not None and live is not None:
        ids = [i for i in live.entities if query.ids is None or i in query.ids]
        if not ids:
            return _Answer(Page([], 0 if query.count else None), {}), {HEADER: ref}, False
        whole = await _query(request, svc, ctx, replace(
            query, ids=tuple(ids), id_pattern=None, offset=0, limit=len(ids), count=False,
        ), how)
        maps.prune(ctx.tenant, live.id, [e["id"] for e in whole.page.entities])
        return _sliced(whole, query), {HEADER: ref}, False
    if flag(request.query_params, "entityMap") or ref is not None:
        whole = await _query(request, svc, ctx, replace(
            query, offset=0, limit=MAP_MOST, count=False), how)
        ids = [e["id"] for e in whole.page.entities]
        made = maps.create(ctx.tenant, ids, whole.holders)
        header = {HEADER: map_location(request, made.id)}
        return _sliced(whole, query), header, flag(request.query_params, "entityMap")
    return await _query(request, svc, ctx, query, how), {}, False


def _sliced(whole: _Answer, query: EntityQuery) -> _Answer:
    """One page of an answer computed over every match."""
    found = whole.page.entities
    page = Page(found[query.offset:query.offset + query.limit],
                len(found) if query.count else None)
    return _Answer(page, whole.headers, whole.warnings, whole.holders)


async def query_all(request: Request, svc: Services, ctx: RequestContext,
                    query: EntityQuery, how: _How) -> _Answer:
    """Every match of ``query`` (at most ``MAP_MOST``), local and from the sources."""
    return await _query(request, svc, ctx, replace(query, offset=0, limit=MAP_MOST,
                                                   count=False), how)


async def _query(
    request: Request, svc: Services, ctx: RequestContext, query: EntityQuery, how: _How,
) -> _Answer:
    """The live entities (merged with the context sources' unless ``local``), or with
    NGSILD-Snapshot those of that snapshot (clause 6.3.22), and the header to echo."""
    tenant, guard = ctx.tenant, ctx.guard
    snapshot = request.headers.get(SNAPSHOT)
    if snapshot is not None:
        assert svc.snapshots is not None
        page = await svc.snapshots.query(tenant, snapshot, guard.query(query))
        return _Answer(page, {SNAPSHOT: snapshot})
    fed = svc.federated
    if not how.local and fed is not None and await fed.active(tenant):
        result = await fed.query(tenant, query, terms=ctx.terms,
                                 link=await link_url(request, ctx), type_param=how.type_param,
                                 via=request.headers.get("via"), guard=guard, split=how.split,
                                 filters=how.filters, csf=how.csf,
                                 incoming=dict(request.headers))
        if result is not None:
            page, found, held = result
            holders = {e["id"]: found.holders(e["id"], e["id"] in held) for e in page.entities}
            return _Answer(page, _warning_headers(found.warnings), found.warnings, holders)
    return _Answer(await svc.entities.query(tenant, query, guard=guard), {})


async def query_entities(request: Request) -> Response:
    """Query Entities (clause 5.7.2, binding 6.4.3.2), with paging Links and a count."""
    params = request.query_params
    check_params(params, QUERY_PARAMS)
    ctx = await request_context(request, offered=ENTITY_OFFER)
    svc = services(request)
    opts = render_options(params, ctx.terms, geojson=ctx.accept == GEOJSON_MT)
    opts, applied = _prefer(request, opts)
    query = entity_query(params, ctx.terms, svc.settings)
    how = _How(local=flag(params, "local"), type_param=params.get("type"),
               split=flag(params, "splitEntities"), filters=_filters_of_get(params),
               csf=_csf(params.get("csf"), ctx.terms))
    answer, map_header, created = await _with_entity_map(request, svc, ctx, query, how)
    page = answer.page
    linked = await linked_entities(svc.entities, ctx.tenant, page.entities, opts,
                                   guard=ctx.guard)
    status, headers = _version_headers(applied, opts, page.entities)
    if created:
        status = 201  # the EntityMap was created (binding 6.4.3.2)
    headers.update(answer.headers)
    headers.update(map_header)
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
    local = flag(params, "local")
    snapshot = request.headers.get(SNAPSHOT)
    fed = svc.federated
    warnings: list[str] = []
    holders: list[str] | None = None
    if snapshot is None and not local and fed is not None and await fed.active(ctx.tenant):
        found_entity, found, held = await fed.retrieve(
            ctx.tenant, entity_id, terms=ctx.terms, link=await link_url(request, ctx),
            types=types, type_param=params.get("type"), attrs=opts.attrs,
            via=request.headers.get("via"), guard=ctx.guard, incoming=dict(request.headers))
        warnings = found.warnings
        holders = found.holders(entity_id, held)
        if found_entity is None:
            return await _problem_with_warnings(
                request, ResourceNotFound(f"entity {entity_id} not found"), warnings)
        entity = found_entity
        try:
            return await _retrieved(request, ctx, svc, entity, entity_id, opts, applied, types,
                                    snapshot, warnings, holders)
        except ResourceNotFound as exc:
            return await _problem_with_warnings(request, exc, warnings)
    if snapshot is None:
        entity = await svc.entities.retrieve(ctx.tenant, entity_id, guard=ctx.guard)
    else:
        assert svc.snapshots is not None
        frozen = await svc.snapshots.retrieve_entity(ctx.tenant, snapshot, entity_id)
        shown = ctx.guard.read(frozen)
        if shown is None:
            raise ResourceNotFound(f"entity {entity_id} not found")
        entity = shown
    return await _retrieved(request, ctx, svc, entity, entity_id, opts, applied, types,
                            snapshot, warnings, holders)


async def _retrieved(
    request: Request, ctx: RequestContext, svc: Services, entity: JSONObject, entity_id: str,
    opts: RenderOptions, applied: str | None, types: TypeExpr | None, snapshot: str | None,
    warnings: list[str], holders: list[str] | None,
) -> Response:
    """The answer of Retrieve Entity once the entity is known (local or merged)."""
    params = request.query_params
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
    headers.update(_entity_map(request, ctx.tenant, [entity_id],
                               None if holders is None else {entity_id: holders}))
    headers.update(_warning_headers(warnings))
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
    if svc.federated is not None and await svc.federated.active(ctx.tenant):
        raise NotPlain
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
    how = _How(local=flag(params, "local"), filters=_filters_of_body(body),
               csf=_csf(body.get("csf") if isinstance(body, dict) else None, ctx.terms))
    answer = await _query(request, svc, ctx, asked.query, how)
    page = answer.page
    linked = await linked_entities(svc.entities, ctx.tenant, page.entities, opts,
                                   guard=ctx.guard)
    status, headers = _version_headers(applied, opts, page.entities)
    headers.update(answer.headers)
    if page.total is not None:
        headers["NGSILD-Results-Count"] = str(page.total)
    data = render_page(ctx, page.entities, opts, linked)
    return json_response(
        ctx, data, status=status, link_url=await link_url(request, ctx), headers=headers
    )
