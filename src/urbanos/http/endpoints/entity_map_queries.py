"""Create EntityMap for a query (clauses 5.14.4, 5.14.5; bindings 6.34, 6.35): GET
/entityMaps and /temporal/entityMaps run the query over every match, local and from the
context sources, and answer the new map (201, its location in ``NGSILD-EntityMap``)."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.requests import Request
from starlette.responses import Response

from urbanos.core.temporal import TemporalQuery, parse_duration, parse_temporal_query, to_micros
from urbanos.core.timeutil import parse_datetime
from urbanos.errors import BadRequestData
from urbanos.http.context import request_context, services
from urbanos.http.endpoints.entity_maps import HEADER, map_location, registry
from urbanos.http.endpoints.entity_reads import _csf, _filters_of_get, _How, query_all
from urbanos.http.params import QUERY_PARAMS, check_params, entity_query, flag
from urbanos.http.respond import json_response
from urbanos.types import JSONObject

_LIFETIME = "entityMapLifetime"
_TEMPORAL = frozenset({"timerel", "timeAt", "endTimeAt", "timeproperty"})
#: what a map's lifetime is counted in: a month is taken as 30 days
_MONTH = 30 * 86_400.0


def _lifetime(raw: str | None) -> float | None:
    """``entityMapLifetime`` (Table 6.4.3.2-1): an ISO 8601 duration, in seconds."""
    if raw is None:
        return None
    duration = parse_duration(raw, _LIFETIME)
    return duration.months * _MONTH + duration.micros / 1_000_000


async def _create(request: Request, *, temporal: TemporalQuery | None) -> Response:
    params = request.query_params
    ctx = await request_context(request)
    svc = services(request)
    lifetime = _lifetime(params.get(_LIFETIME))
    query = entity_query(params, ctx.terms, svc.settings)
    how = _How(local=flag(params, "local"), type_param=params.get("type"),
               split=flag(params, "splitEntities"), filters=_filters_of_get(params),
               csf=_csf(params.get("csf"), ctx.terms))
    whole = await query_all(request, svc, ctx, query, how)
    entities = whole.page.entities
    if temporal is not None:
        entities = [e for e in entities if _within(e, temporal)]
    reg = registry(request)
    made = reg.create(ctx.tenant, [e["id"] for e in entities], whole.holders, lifetime)
    headers = {HEADER: map_location(request, made.id)}
    if whole.warnings:
        headers["NGSILD-Warning"] = ", ".join(whole.warnings)
    return json_response(ctx, made.to_json(reg.clock()), status=201, link_url="",
                         with_context=False, headers=headers)


async def create_entity_map(request: Request) -> Response:
    """Create EntityMap for Query Entities (clause 5.14.4, binding 6.34.3.1)."""
    check_params(request.query_params, QUERY_PARAMS | {_LIFETIME})
    return await _create(request, temporal=None)


async def create_temporal_entity_map(request: Request) -> Response:
    """Create EntityMap for a Temporal Query (clause 5.14.5, binding 6.35.3.1): the
    entities having an attribute instance inside the time window."""
    params = request.query_params
    check_params(params, (QUERY_PARAMS | _TEMPORAL | {_LIFETIME}) - {"entityMap"})
    if params.get("timerel") is None:
        raise BadRequestData("a temporal EntityMap needs timerel and timeAt (clause 5.14.5)")
    temporal = parse_temporal_query(params.get("timerel"), params.get("timeAt"),
                                    params.get("endTimeAt"), params.get("timeproperty"))
    return await _create(request, temporal=temporal)


def _instances(entity: JSONObject) -> Iterable[JSONObject]:
    for instances in entity["attrs"].values():
        yield from instances


def _within(entity: JSONObject, temporal: TemporalQuery) -> bool:
    """Whether one of the entity's attribute instances has its ``timeproperty`` inside
    the window (the entity's own for createdAt/modifiedAt when it has no attributes)."""
    prop = temporal.timeproperty
    stamps = [i.get(prop) for i in _instances(entity)]
    if prop in ("createdAt", "modifiedAt"):
        stamps.append(entity.get(prop))
    return any(temporal.contains(to_micros(s)) for s in stamps
               if isinstance(s, str) and parse_datetime(s) is not None)
