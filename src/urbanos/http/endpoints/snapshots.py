"""/snapshots (clause 5.16, bindings 6.36 - 6.38): create, retrieve, list, update, clone,
delete and purge snapshots. Queries scoped to a snapshot (NGSILD-Snapshot, clause 6.3.22)
are handled where entities are read (``entity_reads``).
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from urbanos.core.policy import Action
from urbanos.core.query.parse import parse_q
from urbanos.errors import BadRequestData
from urbanos.http.context import link_url, request_context, services
from urbanos.http.endpoints.entities import read_entity_body, tenant_headers
from urbanos.http.params import check_params, uri_in_path
from urbanos.http.query_body import query_from_body
from urbanos.http.respond import empty, json_response
from urbanos.services.snapshots import SnapshotService, check_snapshot

PATH = "/ngsi-ld/v1/snapshots"
#: the request header that scopes a query to a snapshot (clause 6.3.22)
HEADER = "NGSILD-Snapshot"


def service(request: Request) -> SnapshotService:
    found = services(request).snapshots
    assert found is not None, "the snapshot service is wired in the app lifespan"
    return found


def _path_id(request: Request) -> str:
    return uri_in_path(request, "snapshot_id", "snapshot")


def _location(snapshot_id: str) -> str:
    return f"{PATH}/{quote(snapshot_id, safe=':')}"


async def create_snapshot(request: Request) -> Response:
    """Create Snapshot (clause 5.16.1, binding 6.36.3.1): 201 with Location. Whoever may
    read some of the tenant may take one; reading it shows each caller what it may see."""
    check_params(request.query_params, set())
    body, ctx = await read_entity_body(request)
    ctx.guard.require_some(Action.READ)
    raw, members = check_snapshot(body)
    limit = services(request).settings.max_limit
    queries = [query_from_body(q, ctx.terms, limit=limit, offset=0, count=False).query
               for q in raw]
    snapshot_id = await service(request).create(ctx.tenant, raw, members, queries)
    await ctx.guard.record_ok([snapshot_id])
    return empty(201, {"Location": _location(snapshot_id)} | tenant_headers(ctx))


async def list_snapshots(request: Request) -> Response:
    """Query Snapshots (clause 5.16.6, binding 6.36.3.2)."""
    check_params(request.query_params, set())
    ctx = await request_context(request)
    ctx.guard.require_some(Action.READ)
    docs = await service(request).all(ctx.tenant)
    return json_response(ctx, docs, link_url=await link_url(request, ctx))


async def retrieve_snapshot(request: Request) -> Response:
    """Retrieve Snapshot Status (clause 5.16.3, binding 6.37.3.1)."""
    check_params(request.query_params, set())
    snapshot_id = _path_id(request)
    ctx = await request_context(request)
    ctx.guard.require_some(Action.READ)
    doc = await service(request).retrieve(ctx.tenant, snapshot_id)
    return json_response(ctx, doc, link_url=await link_url(request, ctx))


async def update_snapshot(request: Request) -> Response:
    """Update Snapshot (clause 5.16.4, binding 6.37.3.2): 200 with the snapshot."""
    check_params(request.query_params, set())
    snapshot_id = _path_id(request)
    body, ctx = await read_entity_body(request)
    ctx.guard.require(Action.WRITE)
    doc = await service(request).update(ctx.tenant, snapshot_id, body)
    await ctx.guard.record_ok([snapshot_id])
    return json_response(ctx, doc, link_url=await link_url(request, ctx))


async def delete_snapshot(request: Request) -> Response:
    """Delete Snapshot (clause 5.16.5, binding 6.37.3.3)."""
    check_params(request.query_params, set())
    snapshot_id = _path_id(request)
    ctx = await request_context(request)
    ctx.guard.require(Action.WRITE)
    await service(request).delete(ctx.tenant, snapshot_id)
    await ctx.guard.record_ok([snapshot_id])
    return empty(204, tenant_headers(ctx))


async def clone_snapshot(request: Request) -> Response:
    """Clone Snapshot (clause 5.16.2, binding 6.38.3.1): 201 with the clone's Location."""
    check_params(request.query_params, set())
    snapshot_id = _path_id(request)
    body, ctx = await read_entity_body(request)
    ctx.guard.require_some(Action.READ)
    clone_id = await service(request).clone(ctx.tenant, snapshot_id, body)
    await ctx.guard.record_ok([clone_id])
    return empty(201, {"Location": _location(clone_id)} | tenant_headers(ctx))


async def purge_snapshots(request: Request) -> Response:
    """Purge Snapshots (clause 5.16.7, binding 6.36.3.3): those the ``q`` selects."""
    params = request.query_params
    check_params(params, {"q"})
    if not params.get("q"):
        raise BadRequestData("purging snapshots needs a q")
    ctx = await request_context(request)
    ctx.guard.require(Action.WRITE)
    q = parse_q(params["q"], ctx.terms.expand)
    await service(request).purge(ctx.tenant, q, ctx.terms)
    await ctx.guard.record_ok([])
    return empty(204, tenant_headers(ctx))
