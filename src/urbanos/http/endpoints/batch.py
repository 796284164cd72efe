"""/entityOperations/* (clauses 5.6.7 - 5.6.10, 5.6.20, 5.7.2 POST; binding 6.14 - 6.31).

Each entity of a batch is validated on its own: the invalid ones are reported in the
BatchOperationResult and the valid ones are written together in one transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from urbanos.core.distributed_writes import Outcome, batch_result, keep_attrs
from urbanos.core.entity import check_entity_id, expand_entity
from urbanos.core.timeutil import now_iso
from urbanos.errors import BadRequestData, NgsiLdError
from urbanos.http.context import request_context, services
from urbanos.http.endpoints.entities import federated, forwarded
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
from urbanos.services.federated_writes import Entry, Written
from urbanos.types import JSON, JSONObject

OPERATIONS = "/ngsi-ld/v1/entityOperations/"


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
    require_type: bool = True, merge: bool = False, entries: list[Entry] | None = None,
) -> tuple[list[JSONObject], BatchResult]:
    """Expand each entry with its own @context; invalid entries become errors. ``entries``
    receives each valid one as written, for the context sources (clause 4.3.6)."""
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
            entity = expand_entity(item, terms, now, require_type=require_type, merge=merge)
            good.append(entity)
            if entries is not None:
                entries.append(Entry(
                    item, entity["id"], frozenset(entity.get("type") or ()) or None,
                    frozenset(entity["attrs"]),
                    item.get("@context") if ctype == JSONLD_MT else ctx.context, terms))
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


def _outcomes(result: BatchResult) -> list[Outcome]:
    """This broker's part of a batch as outcomes (clause 6.3.17)."""
    out = [Outcome(None, list(result.success), created=list(result.created))]
    out.extend(Outcome(None, [eid or ""], exc.problem()) for eid, exc in result.errors)
    return out


LocalBatch = Callable[[list[JSONObject]], Awaitable[BatchResult]]


async def _distributed(
    request: Request, ctx: RequestContext, operation: str, entries: list[Entry],
    entities: list[JSONObject], local: LocalBatch, *, whole_entity: bool = False,
    creating: bool = False,
) -> Written | None:
    """The batch split between this broker and the sources (None: no source concerned):
    this broker writes its part of each entity it keeps, each source gets one request."""
    fw = federated(request)
    if fw is None or not entries:
        return None

    async def run_local(indexes: list[int], kept: dict[int, frozenset[str] | None]
                        ) -> list[Outcome]:
        return _outcomes(await local([keep_attrs(entities[i], kept[i]) for i in indexes]))

    path = OPERATIONS + request.url.path.rstrip("/").rsplit("/", 1)[-1]
    return await fw.batch(ctx.tenant, operation, entries, forwarded(request, path, ctx),
                          local=run_local, via=request.headers.get("via"),
                          whole_entity=whole_entity, creating=creating, guard=ctx.guard)


def _distributed_answer(ctx: RequestContext, written: Written, invalid: BatchResult,
                        success: Callable[[list[str], list[str]], Response]) -> Response:
    """207 with every part's errors (named by registration) when some part failed, else
    what ``success`` makes of the ids that succeeded and those created."""
    if written.complete and not invalid.errors:
        ids: list[str] = []
        created: list[str] = []
        for outcome in written.outcomes:
            ids.extend(i for i in outcome.ids if i not in ids)
            created.extend(i for i in outcome.created if i not in created)
        response = success(ids, created)
    else:
        body = batch_result(written.outcomes)
        body["errors"] = _result_body(invalid)["errors"] + body["errors"]
        response = json_response(_plain(ctx), body, status=207, link_url="",
                                 with_context=False)
    response.headers.update(written.headers)
    return response


async def batch_create(request: Request) -> Response:
    """Batch Entity Creation (clause 5.6.7): 201 with the ids, or 207."""
    check_params(request.query_params, {"local"})
    items, ctx, ctype = await _batch_body(request)
    entries: list[Entry] = []
    entities, invalid = await _expand_all(request, items, ctx, ctype, entries=entries)
    svc = services(request)

    def local(mine: list[JSONObject]) -> Awaitable[BatchResult]:
        return svc.entities.batch_create(ctx.tenant, mine, guard=ctx.guard)

    written = await _distributed(request, ctx, "createBatch", entries, entities, local,
                                 creating=True)
    if written is not None:
        return _distributed_answer(
            ctx, written, invalid,
            lambda ids, _: json_response(_plain(ctx), ids, status=201, link_url="",
                                         with_context=False))
    done = await local(entities)
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
    entries: list[Entry] = []
    entities, invalid = await _expand_all(request, items, ctx, ctype, entries=entries)
    svc = services(request)

    def local(mine: list[JSONObject]) -> Awaitable[BatchResult]:
        return svc.entities.batch_upsert(ctx.tenant, mine, replace="update" not in opts,
                                         guard=ctx.guard)

    written = await _distributed(request, ctx, "upsertBatch", entries, entities, local)
    if written is not None:
        return _distributed_answer(
            ctx, written, invalid,
            lambda _, created: json_response(_plain(ctx), created, status=201, link_url="",
                                             with_context=False)
            if created else empty(204, _headers(ctx)))
    done = await local(entities)
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
    entries: list[Entry] = []
    entities, invalid = await _expand_all(request, items, ctx, ctype, require_type=False,
                                          entries=entries)
    svc = services(request)

    def local(mine: list[JSONObject]) -> Awaitable[BatchResult]:
        return svc.entities.batch_update(ctx.tenant, mine, no_overwrite=no_overwrite,
                                         guard=ctx.guard)

    written = await _distributed(request, ctx, "updateBatch", entries, entities, local)
    if written is not None:
        return _distributed_answer(ctx, written, invalid,
                                   lambda _, __: empty(204, _headers(ctx)))
    done = await local(entities)
    result = _merge(invalid, done)
    return _multi(ctx, result) if result.errors else empty(204, _headers(ctx))


async def batch_merge(request: Request) -> Response:
    """Batch Entity Merge (clause 5.6.20): 204 or 207."""
    check_params(request.query_params, {"local"})
    items, ctx, ctype = await _batch_body(request)
    entries: list[Entry] = []
    entities, invalid = await _expand_all(
        request, items, ctx, ctype, require_type=False, merge=True, entries=entries
    )
    svc = services(request)

    def local(mine: list[JSONObject]) -> Awaitable[BatchResult]:
        return svc.entities.batch_merge(ctx.tenant, mine, guard=ctx.guard)

    written = await _distributed(request, ctx, "mergeBatch", entries, entities, local)
    if written is not None:
        return _distributed_answer(ctx, written, invalid,
                                   lambda _, __: empty(204, _headers(ctx)))
    done = await local(entities)
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
    svc = services(request)

    def local(mine: list[JSONObject]) -> Awaitable[BatchResult]:
        return svc.entities.batch_delete(ctx.tenant, [e["id"] for e in mine], guard=ctx.guard)

    entries = [Entry(eid, eid, None, None, ctx.context, ctx.terms) for eid in ids]
    written = await _distributed(request, ctx, "deleteBatch", entries,
                                 [{"id": eid} for eid in ids], local, whole_entity=True)
    if written is not None:
        return _distributed_answer(ctx, written, invalid,
                                   lambda _, __: empty(204, _headers(ctx)))
    done = await local([{"id": eid} for eid in ids]) if ids else BatchResult()
    result = _merge(invalid, done)
    return _multi(ctx, result) if result.errors else empty(204, _headers(ctx))
