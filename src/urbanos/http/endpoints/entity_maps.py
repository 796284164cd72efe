"""EntityMap resources (clause 5.14, bindings 6.32): read, update and delete a live map.

Maps are made by queries: ``entityMap=true`` on Query Entities or Retrieve Entity, and
GET /entityMaps and /temporal/entityMaps (``entity_map_queries``); see ``entity_reads``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from urbanos.core.timeutil import parse_utc_datetime
from urbanos.core.validation import check_datetime, is_uri
from urbanos.errors import BadRequestData, ResourceNotFound
from urbanos.http.context import request_context, services
from urbanos.http.negotiation import read_body, tenant_of
from urbanos.http.params import check_params
from urbanos.http.respond import empty, json_response
from urbanos.services.entity_maps import EntityMapRegistry

HEADER = "NGSILD-EntityMap"
_API = "/ngsi-ld/v1"


def registry(request: Request) -> EntityMapRegistry:
    """The app's registry; created on first use until the app wires one at start-up."""
    state = request.app.state
    found = getattr(state, "entity_maps", None)
    if found is None:
        found = state.entity_maps = EntityMapRegistry()
    return found  # type: ignore[no-any-return]


def map_location(request: Request, map_id: str) -> str:
    """The map's resource path (the NGSILD-EntityMap header value, clause 6.3.25)."""
    path = request.url.path
    base = path.split(_API, 1)[0] + _API if _API in path else path.split("/entities", 1)[0]
    return f"{base}/entityMaps/{map_id}"


def reference_id(header: str) -> str:
    """The map id of an ``NGSILD-EntityMap`` value: a location URL or the bare id."""
    return header.strip().rstrip("/").rsplit("/", 1)[-1]


def _map_id(request: Request) -> str:
    map_id: str = request.path_params["map_id"].replace("%2F", "/")
    if not is_uri(map_id):
        raise BadRequestData(f"entity map id {map_id!r} is not a URI")
    return map_id


async def retrieve_entity_map(request: Request) -> Response:
    """Retrieve EntityMap (clause 5.14.1, binding 6.32.3.1)."""
    check_params(request.query_params, ())
    map_id = _map_id(request)
    ctx = await request_context(request)
    reg = registry(request)
    found = reg.get(ctx.tenant, map_id)
    if found is None:
        raise ResourceNotFound(f"entity map {map_id} not found or expired")
    return json_response(ctx, found.to_json(reg.clock()), link_url="", with_context=False)


async def update_entity_map(request: Request) -> Response:
    """Update EntityMap (clause 5.14.2, binding 6.32.3.2): its ``expiresAt`` (bounded by
    the broker); the mapping itself is the broker's and is never written by clients."""
    map_id = _map_id(request)
    s = services(request).settings
    body, _ctype = await read_body(request, s.max_body_bytes, s.max_json_depth,
                                   merge_patch=True)
    if not isinstance(body, dict):
        raise BadRequestData("the EntityMap fragment must be a JSON object")
    reg = registry(request)
    tenant = tenant_of(request)
    if reg.get(tenant, map_id) is None:
        raise ResourceNotFound(f"entity map {map_id} not found or expired")
    if "expiresAt" in body:
        at = parse_utc_datetime(check_datetime(body["expiresAt"], "expiresAt"))
        assert at is not None
        reg.expire_in(tenant, map_id, (at - datetime.now(UTC)).total_seconds())
    return empty(204)


async def delete_entity_map(request: Request) -> Response:
    """Delete EntityMap (clause 5.14.3, binding 6.32.3.3)."""
    map_id = _map_id(request)
    if not registry(request).delete(tenant_of(request), map_id):
        raise ResourceNotFound(f"entity map {map_id} not found or expired")
    return empty(204)
