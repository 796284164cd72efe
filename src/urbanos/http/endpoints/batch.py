"""/entityOperations/* (clauses 5.6.7 - 5.6.10, 5.6.20, 5.7.2 POST; binding 6.14 - 6.31).

Each entity of a batch is validated on its own: the invalid ones are reported in the
BatchOperationResult and the valid ones are written together in one transaction.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from urbanos.core.entity import check_entity_id, expand_entity
from urbanos.core.timeutil import now_iso
from urbanos.errors import BadRequestData, NgsiLdError
from urbanos.http.context import request_context, services
from urbanos.http.negotiation import (
    JSON_MT,
    JSONLD_MT,
    RequestContext,
    parse_link_context,
    read_body,
)
from urbanos.http.params import check_params, options
from urbanos.http.respond import empty, json_response
from urbanos.services.entities import BatchResult
from urbanos.types import JSON, JSONObject


async def _batch_body(request: Request) -> tuple[list[JSON], RequestContext, str]:
    """The batch array; whole-request errors here, per-entity errors later (clause 6.3.5)."""
    s = services(request).settings
    body, ctype = await read_body(request, s.max_body_bytes, s.max_json_depth)
    if not isinstance(body, list):
        raise BadRequestData("a batch operation needs a JSON array")
    if not body:
        raise BadRequestData("a batch operation needs at least one entry")
    if len(body) > s.max_batch:
        raise BadRequestData(f"a batch may hold at most {s.max_batch} entries")
    if not all(isinstance(item, dict) for item in body):
        raise BadRequestData("every entry of a batch must be a JSON object")
    if ctype == JSONLD_MT and parse_link_context(request.headers.get("link")) is not None:
        raise BadRequestData("an application/ld+json request must not carry a JSON-LD Link header")
    ctx = await request_context(request)
    return body, ctx, ctype


async def _expand_all(
    request: Request, items: list[JSON], ctx: RequestContext, ctype: str, *,
    require_type: bool = True, merge: bool = False,
) -> tuple[list[JSONObject], BatchResult]:
    """Expand each entry with its own @context; invalid entries become errors."""
    result = BatchResult()
    good: list[JSONObject] = []
    now = now_iso()
    contexts = services(request).contexts
    for item in items:
        assert isinstance(item, dict)
        raw_id = item.get("id")
        try:
            terms = ctx.terms
            if ctype == JSONLD_MT:
                if "@context" not in item:
                    raise BadRequestData("an application/ld+json entity needs an @context")
                terms = await contexts.term_map(item["@context"], tenant=ctx.tenant)
            elif "@context" in item:
                raise BadRequestData("an application/json entity must not carry @context")
            # expand_entity leaves @context (an entity key, not an attribute) out itself
            good.append(expand_entity(item, terms, now, require_type=require_type, merge=merge))
        except NgsiLdError as exc:
            result.errors.append((raw_id if isinstance(raw_id, str) else None, exc))
    return good, result


def _merge(a: BatchResult, b: BatchResult) -> BatchResult:
    return BatchResult(
        success=a.success + b.success, errors=a.errors + b.errors, created=a.created + b.created
    )


def _result_body(result: BatchResult) -> JSONObject:
    return {
        "success": result.success,
        "errors": [
            {"entityId": eid, "error": exc.problem()} for eid, exc in result.errors
        ],
    }


def _plain(ctx: RequestContext) -> RequestContext:
    return RequestContext(ctx.tenant, ctx.context, ctx.terms, JSON_MT)


def _headers(ctx: RequestContext) -> dict[str, str]:
    return {"NGSILD-Tenant": ctx.tenant} if ctx.tenant else {}


def _multi(ctx: RequestContext, result: BatchResult) -> Response:
    return json_response(_plain(ctx), _result_body(result), status=207, link_url="",
                         with_context=False)


async def batch_create(request: Request) -> Response:
    """Batch Entity Creation (clause 5.6.7): 201 with the ids, or 207."""
    check_params(request.query_params, {"local"})
    items, ctx, ctype = await _batch_body(request)
    entities, invalid = await _expand_all(request, items, ctx, ctype)
    done = await services(request).entities.batch_create(ctx.tenant, entities, guard=ctx.guard)
    result = _merge(invalid, done)
    if result.errors:
        return _multi(ctx, result)
    return json_response(_plain(ctx), result.success, status=201, link_url="",
                         with_context=False)


async def batch_upsert(request: Request) -> Response:
    """Batch Entity Upsert (clause 5.6.8): 201 with created ids, 204, or 207."""
    params = request.query_params
    check_params(params, {"options", "local"})
    opts = options(params, {"update", "replace"})
    if opts == {"update", "replace"}:
        raise BadRequestData("options update and replace exclude each other")
    items, ctx, ctype = await _batch_body(request)
    entities, invalid = await _expand_all(request, items, ctx, ctype)
    done = await services(request).entities.batch_upsert(
        ctx.tenant, entities, replace="update" not in opts,
        guard=ctx.guard,
    )
    result = _merge(invalid, done)
    if result.errors:
        return _multi(ctx, result)
    if result.created:
        return json_response(_plain(ctx), result.created, status=201, link_url="",
                             with_context=False)
    return empty(204, _headers(ctx))


async def batch_update(request: Request) -> Response:
    """Batch Entity Update (clause 5.6.9): 204 or 207."""
    params = request.query_params
    check_params(params, {"options", "local"})
    no_overwrite = "noOverwrite" in options(params, {"noOverwrite"})
    items, ctx, ctype = await _batch_body(request)
    entities, invalid = await _expand_all(request, items, ctx, ctype, require_type=False)
    done = await services(request).entities.batch_update(
        ctx.tenant, entities, no_overwrite=no_overwrite,
        guard=ctx.guard,
    )
    result = _merge(invalid, done)
    return _multi(ctx, result) if result.errors else empty(204, _headers(ctx))


async def batch_merge(request: Request) -> Response:
    """Batch Entity Merge (clause 5.6.20): 204 or 207."""
    check_params(request.query_params, {"local"})
    items, ctx, ctype = await _batch_body(request)
    entities, invalid = await _expand_all(
        request, items, ctx, ctype, require_type=False, merge=True
    )
    done = await services(request).entities.batch_merge(ctx.tenant, entities, guard=ctx.guard)
    result = _merge(invalid, done)
    return _multi(ctx, result) if result.errors else empty(204, _headers(ctx))


async def batch_delete(request: Request) -> Response:
    """Batch Entity Delete (clause 5.6.10): a JSON array of ids; 204 or 207."""
    check_params(request.query_params, {"local"})
    s = services(request).settings
    body, ctype = await read_body(request, s.max_body_bytes, s.max_json_depth)
    if not isinstance(body, list) or not body:
        raise BadRequestData("batch delete needs a non-empty JSON array of entity ids")
    ctx = await request_context(request)
    invalid = BatchResult()
    ids: list[str] = []
    for item in body:
        try:
            ids.append(check_entity_id(item))
        except NgsiLdError as exc:
            invalid.errors.append((item if isinstance(item, str) else None, exc))
    done = (await services(request).entities.batch_delete(ctx.tenant, ids, guard=ctx.guard)
            if ids else BatchResult())
    result = _merge(invalid, done)
    return _multi(ctx, result) if result.errors else empty(204, _headers(ctx))
