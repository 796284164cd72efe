"""EntityMap resources (clause 5.14, bindings 6.32): read and delete a live map.

Retrieve Entity creates maps on request (``entityMap=true``) or when a client passes an
``NGSILD-EntityMap`` reference that is no longer live; see ``entity_reads``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from urbanos.errors import ResourceNotFound
from urbanos.http.context import request_context
from urbanos.http.negotiation import tenant_of
from urbanos.http.respond import empty, json_response
from urbanos.services.entity_maps import EntityMapRegistry

HEADER = "NGSILD-EntityMap"


def registry(request: Request) -> EntityMapRegistry:
    """The app's registry; created on first use until the app wires one at start-up."""
    state = request.app.state
    found = getattr(state, "entity_maps", None)
    if found is None:
        found = state.entity_maps = EntityMapRegistry()
    return found  # type: ignore[no-any-return]


def map_location(request: Request, map_id: str) -> str:
    return f"{request.url.path.split('/entities', 1)[0]}/entityMaps/{map_id}"


def reference_id(header: str) -> str:
    """The map id of an ``NGSILD-EntityMap`` value: a location URL or the bare id."""
    return header.strip().rstrip("/").rsplit("/", 1)[-1]


async def retrieve_entity_map(request: Request) -> Response:
    """Retrieve EntityMap (clause 5.14.2, binding 6.32.3.1)."""
    ctx = await request_context(request)
    map_id = request.path_params["map_id"]
    reg = registry(request)
    found = reg.get(ctx.tenant, map_id)
    if found is None:
        raise ResourceNotFound(f"entity map {map_id} not found or expired")
    return json_response(ctx, found.to_json(reg.clock()), link_url="", with_context=False)


async def delete_entity_map(request: Request) -> Response:
    """Delete EntityMap (clause 5.14.4, binding 6.32.3.3)."""
    map_id = request.path_params["map_id"]
    if not registry(request).delete(tenant_of(request), map_id):
        raise ResourceNotFound(f"entity map {map_id} not found or expired")
    return empty(204)
