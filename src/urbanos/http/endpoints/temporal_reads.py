"""Reading temporal evolutions (clauses 5.7.3, 5.7.4; bindings 6.18.3.2, 6.19.3.1, 6.24).

Parameters become a ``TemporalView`` (representation, projections) and a
``HistoryRequest`` (window, attributes, datasetIds, aggregation); the service answers with
entity histories, which are clipped to one time range when a series was cut at the
instance limit (206 with ``Content-Range``, clause 6.3.10) and rendered.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import quote

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from urbanos.core.selection import simple_type_set
from urbanos.core.temporal import (
    TemporalQuery,
    parse_aggr_methods,
    parse_aggregation,
    parse_duration,
    parse_temporal_query,
)
from urbanos.core.temporal_render import (
    EntityHistory,
    TemporalView,
    TimeRange,
    clip,
    page_range,
    render_history,
)
from urbanos.errors import BadRequestData, InvalidRequest, ResourceNotFound
from urbanos.http.context import link_url, request_context, services
from urbanos.http.endpoints.entity_maps import HEADER, map_location, reference_id, registry
from urbanos.http.endpoints.temporal import path_entity, temporal
from urbanos.http.negotiation import JSON_MT, JSONLD_MT, RequestContext, read_body
from urbanos.http.params import (
    attribute_list,
    build_render_options,
    check_params,
    dataset_ids,
    entity_query,
    flag,
    options,
    paging,
    parse_join,
    projection,
)
from urbanos.http.problems import handle_ngsi_error
from urbanos.http.query_body import query_from_body
from urbanos.http.respond import json_response
from urbanos.services.temporal import HistoryRequest
from urbanos.types import JSON, JSONObject, Terms

OFFER = (JSON_MT, JSONLD_MT)
_FORMATS = {"normalized": "normalized", "concise": "concise",
            "temporalValues": "temporalValues", "simplified": "temporalValues",
            "keyValues": "temporalValues", "aggregatedValues": "aggregatedValues"}
_OPTIONS = set(_FORMATS) | {"sysAttrs"}
_TEMPORAL = {"timerel", "timeAt", "endTimeAt", "timeproperty", "lastN", "aggrMethods",
             "aggrPeriodDuration"}
_RENDER = {"attrs", "options", "format", "pick", "omit", "datasetId", "lang", "join",
           "joinLevel", "local", "entityMap", "via", "expandValues"}
RETRIEVE_PARAMS = _TEMPORAL | _RENDER | {"type"}
QUERY_PARAMS = _TEMPORAL | _RENDER | {
    "id", "idPattern", "type", "q", "scopeQ", "georel", "geometry", "coordinates",
    "geoproperty", "limit", "offset", "count", "orderBy", "csf", "containedBy",
    "splitEntities", "collation",
}
_POST_PARAMS = {"limit", "offset", "count", "options", "format", "local", "lang"}
_BODY_TEMPORAL = ("temporalQ", "aggrParams")


@dataclass(frozen=True, slots=True)
class Asked:
    """A temporal read as parsed: how to show it and what to fetch."""

    view: TemporalView
    query: TemporalQuery
    select: HistoryRequest  # decides which entities have instances
    fetch: HistoryRequest  # what is read for the page (narrowed by pick)


def _representation(params: QueryParams, *, aggregated_by_default: bool = False) -> tuple[str, bool]:
    opts = options(params, _OPTIONS)
    fmt = "normalized"
    if aggregated_by_default:
        fmt = "aggregatedValues"
    for name in ("concise", "keyValues", "simplified", "temporalValues", "aggregatedValues"):
        if name in opts:
            fmt = _FORMATS[name]
    if "format" in params:
        if params["format"] not in _FORMATS:
            raise InvalidRequest(f"unknown format {params['format']!r}")
        fmt = _FORMATS[params["format"]]
    return fmt, "sysAttrs" in opts


def parse_read(params: QueryParams, terms: Terms, limit: int, *, temporal: JSONObject,
               fmt: str, sys_attrs: bool, attrs: frozenset[str] | None = None,
               pick: object = None, omit: object = None, datasets: object = None,
               lang: str | None = None) -> Asked:
    """Validate the temporal, representation and projection members of a read."""
    query = parse_temporal_query(temporal.get("timerel"), temporal.get("timeAt"),
                                 temporal.get("endTimeAt"), temporal.get("timeproperty"),
                                 temporal.get("lastN"))
    methods, period = temporal.get("aggrMethods"), temporal.get("aggrPeriodDuration")
    if methods is not None:
        parse_aggr_methods(methods)
    if period is not None:
        parse_duration(period)
    aggregation = parse_aggregation(methods, period) if fmt == "aggregatedValues" else None
    picked = projection(pick, terms, "pick") if pick is not None else None
    omitted = projection(omit, terms, "omit") if omit is not None else None
    chosen = dataset_ids(datasets) if isinstance(datasets, str) else None
    build_render_options(
        terms, fmt="normalized", sys_attrs=sys_attrs, pick=picked, omit=omitted, attrs=attrs,
        lang=lang, geometry_property=None, geojson=False,
        join=parse_join(params.get("join"), params.get("joinLevel")), datasets=chosen,
    )
    view = TemporalView(fmt=fmt, sys_attrs=sys_attrs, timeproperty=query.timeproperty,
                        pick=picked, omit=omitted, lang=lang, aggregation=aggregation)
    select = HistoryRequest(query=query, attrs=attrs, datasets=chosen, limit=limit,
                            aggregation=aggregation)
    fetch = select
    if picked is not None:
        fetch = replace(select, attrs=frozenset(picked.picked - {"id", "type"}))
    return Asked(view, query, select, fetch)


WARNING = "NGSILD-Warning"
#: the parameters of a temporal retrieve a context source is asked with as they are
_WINDOW = ("timerel", "timeAt", "endTimeAt", "timeproperty", "lastN")
#: ... and of a temporal query (selection and filters: not split between sources)
_FORWARDED = frozenset({*_WINDOW, "type", "id", "idPattern", "attrs", "q", "scopeQ",
                        "georel", "geometry", "coordinates", "geoproperty"})
#: the most local entities a distributed temporal query unites with the sources' answers
_MOST = 10_000


def _temporal_params(params: QueryParams) -> JSONObject:
    return {k: params[k] for k in _TEMPORAL if k in params}


def _attrs(params: QueryParams, terms: Terms) -> frozenset[str] | None:
    return attribute_list(params["attrs"].split(","), terms) if "attrs" in params else None


def _paged(histories: list[EntityHistory],
           query: TemporalQuery) -> tuple[list[EntityHistory], TimeRange | None]:
    window = page_range(histories, query)
    if window is None:
        return histories, None
    return [clip(h, window, query.timeproperty) for h in histories], window


async def _respond(request: Request, ctx: RequestContext, data: JSON,
                   window: TimeRange | None, headers: dict[str, str],
                   status: int = 200) -> Response:
    if window is not None:
        headers["Content-Range"] = window.header()
        status = 206
    paging_links = headers.pop("Link", None)
    response = json_response(ctx, data, status=status, link_url=await link_url(request, ctx),
                             headers=headers)
    if paging_links:
        existing = response.headers.get("Link")
        response.headers["Link"] = f"{existing}, {paging_links}" if existing else paging_links
    return response


async def retrieve_temporal(request: Request) -> Response:
    """Retrieve Temporal Evolution of an Entity (clause 5.7.3, binding 6.19.3.1)."""
    params = request.query_params
    check_params(params, RETRIEVE_PARAMS)
    entity_id = path_entity(request)
    ctx = await request_context(request, offered=OFFER)
    svc = temporal(request)
    fmt, sys_attrs = _representation(params)
    asked = parse_read(params, ctx.terms, svc.instance_limit, temporal=_temporal_params(params),
                       fmt=fmt, sys_attrs=sys_attrs, attrs=_attrs(params, ctx.terms),
                       pick=params.get("pick"), omit=params.get("omit"),
                       datasets=params.get("datasetId"), lang=params.get("lang"))
    local = flag(params, "local")
    fed = services(request).temporal_sources
    warnings: list[str] = []
    if (not local and fed is not None and asked.view.aggregation is None
            and await fed.active(ctx.tenant)):
        try:
            mine: EntityHistory | None = await svc.retrieve(ctx.tenant, entity_id, asked.fetch,
                                                            guard=ctx.guard)
        except ResourceNotFound:
            mine = None
        merged, warnings = await fed.retrieve(
            ctx.tenant, entity_id, mine, asked.fetch, terms=ctx.terms,
            link=await link_url(request, ctx), via=request.headers.get("via"),
            window=[(k, params[k]) for k in _WINDOW if k in params],
            incoming=dict(request.headers))
        if merged is None:
            response = await handle_ngsi_error(
                request, ResourceNotFound(f"no temporal representation of {entity_id}"))
            if warnings:
                response.headers[WARNING] = ", ".join(warnings)
            return response
        found = merged
    else:
        found = await svc.retrieve(ctx.tenant, entity_id, asked.fetch, guard=ctx.guard)
    (history,), window = _paged([found], asked.query)
    data = render_history(history, ctx.terms, asked.view)
    if not data:
        raise ResourceNotFound(f"nothing of {entity_id} is left after pick/omit")
    headers, _ = _Maps(request, ctx.tenant).headers([entity_id])
    if warnings:
        headers[WARNING] = ", ".join(warnings)
    return await _respond(request, ctx, data, window, headers)


def _order(params: QueryParams) -> str | None:
    """Temporal queries order by id only (clause 5.7.4.4): ``asc``, ``desc`` or None."""
    raw = params.get("orderBy")
    if raw is None:
        return None
    order = "asc"
    for term in raw.split(","):
        name, _, direction = term.strip().partition(";")
        if name.strip() != "id" or direction.strip() not in ("", "asc", "desc"):
            raise BadRequestData(f"temporal queries can only be ordered by id, not {term!r}")
        order = direction.strip() or "asc"
    return order


class _Maps:
    """NGSILD-EntityMap (clauses 5.7.3.4, 5.7.4.4): a live map fixes the entities and is
    echoed; the entityMap flag or a dead reference makes a new map of the result."""

    def __init__(self, request: Request, tenant: str) -> None:
        self.request, self.tenant = request, tenant
        self.ref = request.headers.get(HEADER)
        self.live = registry(request).get(tenant, reference_id(self.ref)) if self.ref else None
        self.wanted = self.ref is not None or flag(request.query_params, "entityMap")

    @property
    def only(self) -> frozenset[str] | None:
        return frozenset(self.live.entities) if self.live is not None else None

    def headers(self, ids: list[str]) -> tuple[dict[str, str], bool]:
        """The header to send and whether a map was created."""
        if self.live is not None and self.ref is not None:
            return {HEADER: self.ref}, False
        if not self.wanted:
            return {}, False
        created = registry(self.request).create(self.tenant, ids)
        location = map_location(self.request, created.id)
        return {HEADER: location.replace("/temporal/entityMaps/", "/entityMaps/")}, True


def _page_links(request: Request, ctx: RequestContext, count: int, limit: int, offset: int,
                total: int | None) -> dict[str, str]:
    def link(at: int, rel: str) -> str:
        query = {**dict(request.query_params), "offset": str(at), "limit": str(limit)}
        text = "&".join(f"{quote(k, safe='')}={quote(v, safe=':/@!$*()')}"
                        for k, v in sorted(query.items()))
        return f'<{request.url.path}?{text}>; rel="{rel}"; type="{ctx.accept}"'

    if limit == 0:
        return {}
    links = []
    if offset > 0:
        links.append(link(max(0, offset - limit), "prev"))
    more = count == limit if total is None else offset + limit < total
    if more:
        links.append(link(offset + limit, "next"))
    return {"Link": ", ".join(links)} if links else {}


async def query_temporal(request: Request) -> Response:
    """Query Temporal Evolution of Entities (clause 5.7.4, binding 6.18.3.2)."""
    params = request.query_params
    check_params(params, QUERY_PARAMS)
    ctx = await request_context(request, offered=OFFER)
    svc = temporal(request)
    order = _order(params)
    plain = QueryParams([(k, v) for k, v in params.multi_items()
                         if k not in ("orderBy", "collation")])
    selection = entity_query(plain, ctx.terms, services(request).settings)
    fmt, sys_attrs = _representation(params)
    asked = parse_read(params, ctx.terms, svc.instance_limit, temporal=_temporal_params(params),
                       fmt=fmt, sys_attrs=sys_attrs, attrs=selection.attrs,
                       pick=params.get("pick"), omit=params.get("omit"),
                       datasets=params.get("datasetId"), lang=params.get("lang"))
    maps = _Maps(request, ctx.tenant)
    fed = services(request).temporal_sources
    warnings: list[str] = []
    federated = None
    if (not flag(params, "local") and fed is not None and asked.view.aggregation is None
            and await fed.active(ctx.tenant)):
        try:
            mine, _ = await svc.query(
                ctx.tenant, replace(selection, offset=0, limit=_MOST, count=False),
                asked.select, fetch=asked.fetch, order=order, only=maps.only,
                guard=ctx.guard)
        except ResourceNotFound:  # the tenant exists only at the sources
            mine = []
        federated = await fed.query(
            ctx.tenant, mine, asked.fetch, ids=selection.ids, id_pattern=selection.id_pattern,
            types=simple_type_set(selection.types) if selection.types is not None else None,
            terms=ctx.terms, link=await link_url(request, ctx), via=request.headers.get("via"),
            params=[(k, v) for k, v in params.multi_items() if k in _FORWARDED],
            incoming=dict(request.headers))
    if federated is not None:
        every, warnings = federated
        if maps.only is not None:
            every = [h for h in every if h.id in maps.only]
        if order is not None:
            every.sort(key=lambda h: h.id, reverse=order == "desc")
        total = len(every) if selection.count else None
        histories = every[selection.offset:selection.offset + selection.limit]
    else:
        histories, total = await svc.query(ctx.tenant, selection, asked.select,
                                           fetch=asked.fetch, order=order, only=maps.only,
                                           guard=ctx.guard)
    headers, created = maps.headers([h.id for h in histories])
    if warnings:
        headers[WARNING] = ", ".join(warnings)
    histories, window = _paged(histories, asked.query)
    data = [d for d in (render_history(h, ctx.terms, asked.view) for h in histories) if d]
    if total is not None:
        headers["NGSILD-Results-Count"] = str(total)
    headers.update(_page_links(request, ctx, len(histories), selection.limit, selection.offset,
                               total))
    return await _respond(request, ctx, data, window, headers, 201 if created else 200)


async def query_temporal_post(request: Request) -> Response:
    """Query Temporal Evolution of Entities via POST (clause 5.7.4, binding 6.24.3.1): the
    Query data type, its temporalQ and aggrParams members, in the body."""
    params = request.query_params
    check_params(params, _POST_PARAMS)
    s = services(request).settings
    body, ctype = await read_body(request, s.max_body_bytes, s.max_json_depth)
    ctx = await request_context(request, body=body, ctype=ctype, offered=OFFER)
    svc = temporal(request)
    if not isinstance(body, dict):
        raise BadRequestData("a Query must be a JSON object")
    members = _temporal_members(body)
    rest = {k: v for k, v in body.items() if k not in _BODY_TEMPORAL}
    limit, offset, count = paging(params, s)
    asked_body = query_from_body(rest, ctx.terms, limit=limit, offset=offset, count=count,
                                 local=flag(params, "local"))
    fmt, sys_attrs = _representation(params,
                                     aggregated_by_default="aggrMethods" in members)
    asked = parse_read(params, ctx.terms, svc.instance_limit, temporal=members, fmt=fmt,
                       sys_attrs=sys_attrs, attrs=asked_body.attrs,
                       pick=_joined(body.get("pick")), omit=_joined(body.get("omit")),
                       datasets=_joined(body.get("datasetId")),
                       lang=asked_body.lang or params.get("lang"))
    histories, total = await svc.query(ctx.tenant, asked_body.query, asked.select,
                                       fetch=asked.fetch, order=None, guard=ctx.guard)
    histories, window = _paged(histories, asked.query)
    data = [d for d in (render_history(h, ctx.terms, asked.view) for h in histories) if d]
    headers = {"NGSILD-Results-Count": str(total)} if total is not None else {}
    return await _respond(request, ctx, data, window, headers)


def _joined(value: object) -> object:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    return value


def _temporal_members(body: JSONObject) -> JSONObject:
    """temporalQ (clause 5.2.21) and aggrParams (clause 5.2.44) merged into one mapping."""
    out: JSONObject = {}
    for name in _BODY_TEMPORAL:
        member = body.get(name)
        if member is None:
            continue
        if not isinstance(member, dict):
            raise BadRequestData(f"{name} must be a JSON object")
        out.update(member)
    return out
