"""Writing entities: /entities and /entities/{entityId}[/attrs[/{attrId}]] (clauses 6.4 - 6.7).

Reads live in ``entity_reads``. Every handler validates the whole request (path, query,
body, @context) before the service is called, so a bad request never changes state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from urbanos.core import operations as ops
from urbanos.core.distributed_writes import Outcome, batch_result, keep_attrs, update_result
from urbanos.core.entity import (
    check_entity_id,
    check_name,
    check_scopes,
    expand_attribute,
    expand_attributes,
    expand_entity,
    expand_types,
    is_uri,
)
from urbanos.core.jsonld import core_term_map
from urbanos.core.model import NGSI_LD
from urbanos.core.query.ast import TypeExpr
from urbanos.core.query.evaluate import attribute_names
from urbanos.core.query.parse import parse_type_expr
from urbanos.core.selection import EntityQuery, required_types
from urbanos.core.timeutil import now_iso
from urbanos.core.validation import merge_patch_nulls
from urbanos.errors import BadRequestData
from urbanos.http.context import request_context, services
from urbanos.http.negotiation import (
    JSON_MT,
    MERGE_PATCH_MT,
    RequestContext,
    media_type,
    read_body,
)
from urbanos.http.params import check_params, entity_query, flag, names, options
from urbanos.http.respond import empty, json_response
from urbanos.services.federated_writes import FederatedWrites, Forwarded, Written
from urbanos.types import JSON, JSONObject, Terms

ENTITIES = "/ngsi-ld/v1/entities"


def _path_id(request: Request) -> str:
    return entity_id_in_path(request.path_params["entity_id"])


def entity_id_in_path(segment: str) -> str:
    """The entity id a path segment names (``%2F`` kept by the path normalizer), checked."""
    return check_entity_id(segment.replace("%2F", "/"))


def _path_attr(request: Request) -> str:
    return check_name(request.path_params["attr_id"].replace("%2F", "/"))


async def read_entity_body(
    request: Request, *, merge_patch: bool = False
) -> tuple[JSON, RequestContext]:
    """A request body (bounded in size and depth) and the request's context for it."""
    s = services(request).settings
    body, ctype = await read_body(
        request, s.max_body_bytes, s.max_json_depth, merge_patch=merge_patch
    )
    if ctype == "application/merge-patch+json":
        ctype = JSON_MT
    ctx = await request_context(request, body=body, ctype=ctype)
    return body, ctx


def tenant_headers(ctx: RequestContext) -> dict[str, str]:
    return {"NGSILD-Tenant": ctx.tenant} if ctx.tenant else {}


def _object(body: JSON) -> JSONObject:
    """The body without its @context; it must be a JSON object."""
    if not isinstance(body, dict):
        raise BadRequestData("the body must be a JSON object")
    return {k: v for k, v in body.items() if k != "@context"}


def _type_gate(request: Request, terms: Terms) -> TypeExpr | None:
    """The ``type`` selector that a write on one entity may carry (clause 5.6.x, v1.9)."""
    raw = request.query_params.get("type")
    return parse_type_expr(raw, terms.expand) if raw else None


def _update_result(updated: list[str], not_updated: list[tuple[str, str]]) -> JSONObject:
    """UpdateResult (clause 5.2.18), sent as plain JSON without a Link: its terms mean what
    the core @context says. There ``attributeName`` is a vocabulary term (compacted with the
    core context), while ``updated`` holds plain strings, so the names stay as expanded."""
    compact = core_term_map().compact
    return {
        "updated": list(updated),
        "notUpdated": [{"attributeName": compact(n), "reason": reason}
                       for n, reason in not_updated],
    }


def _multi_status(ctx: RequestContext, body: JSONObject) -> Response:
    plain = RequestContext(ctx.tenant, ctx.context, ctx.terms, JSON_MT)
    return json_response(plain, body, status=207, link_url="", with_context=False)


def federated(request: Request) -> FederatedWrites | None:
    """The distributed-write use cases, unless the request asks for this broker alone
    (``local=true``, clause 6.3.18) or federation is off."""
    svc = services(request)
    if svc.federation is None or flag(request.query_params, "local"):
        return None
    return FederatedWrites(svc.federation, svc.contexts, svc.store)


def forwarded(request: Request, path: str, ctx: RequestContext, body: JSON = None, *,
              members: bool = True) -> Forwarded:
    """What a source is sent of this request: its parameters but ``local``, its payload
    as written, its @context (clause 4.3.6.6)."""
    params = tuple((k, v) for k, v in request.query_params.multi_items() if k != "local")
    ctype = media_type(request.headers.get("content-type"))
    return Forwarded(request.method, path, params, body, ctx.context, ctx.terms,
                     members=members,
                     content_type=MERGE_PATCH_MT if ctype == MERGE_PATCH_MT else JSON_MT,
                     incoming=dict(request.headers))


def entity_path(entity_id: str, *rest: str) -> str:
    return "/".join([ENTITIES, quote(entity_id, safe=":"), *(quote(r, safe=":") for r in rest)])


def distributed_answer(ctx: RequestContext, written: Written, success: Response, *,
                       attributes: bool = False) -> Response:
    """The answer to a distributed write (clause 6.3.17): as the local write would answer
    when every part succeeded, else 207 with what succeeded and what failed where
    (an UpdateResult for attribute writes, a BatchOperationResult otherwise), the
    sources' failures also in NGSILD-Warning."""
    written.check()
    if written.complete:
        success.headers.update(written.headers)
        return success
    body = (update_result(written.outcomes, core_term_map().compact) if attributes
            else batch_result(written.outcomes))
    response = _multi_status(ctx, body)
    response.headers.update(written.headers)
    return response


def _gate_types(gate: TypeExpr | None) -> set[str] | None:
    """The types a ``type`` selector names, to match registrations by (None: any)."""
    found = required_types(gate) if gate is not None else None
    return set(found) if found else None


def _updated(entity_id: str) -> Callable[[ops.Outcome], Outcome]:
    def outcome(value: ops.Outcome) -> Outcome:
        return Outcome(None, [entity_id], attrs=list(value.updated),
                       not_updated=list(value.not_updated))
    return outcome


def _fragment(
    body: JSON, entity_id: str, ctx: RequestContext
) -> tuple[dict[str, list[JSONObject]], list[str] | None, list[str] | None]:
    """An attribute fragment: its attributes, the types it adds and the scope it sets."""
    fragment = _object(body)
    if "id" in fragment and fragment["id"] != entity_id:
        raise BadRequestData("the id in the payload does not match the id in the URL")
    fragment.pop("id", None)
    raw_type = fragment.pop("type", None)
    types = expand_types(raw_type, ctx.terms) if raw_type is not None else None
    raw_scope = fragment.pop("scope", None)
    scope = check_scopes(raw_scope) if raw_scope is not None else None
    if not fragment and types is None and scope is None:
        raise BadRequestData("the fragment holds no attribute")
    attrs = expand_attributes(fragment, ctx.terms, now_iso(), merge=True)
    return attrs, types, scope


async def create_entity(request: Request) -> Response:
    """Create Entity (clause 5.6.1, binding 6.4.3.1): 201 with Location."""
    check_params(request.query_params, {"local"})
    body, ctx = await read_entity_body(request)
    entity = expand_entity(_object(body) if isinstance(body, dict) else body, ctx.terms,
                           now_iso())
    svc = services(request)
    headers = {"Location": f"/ngsi-ld/v1/entities/{quote(entity['id'], safe=':')}"}
    fw = federated(request)
    if fw is not None:
        via = request.headers.get("via")
        attrs = frozenset(entity["attrs"])
        plan = await fw.plan(ctx.tenant, "createEntity", ids={entity["id"]},
                             types=set(entity.get("type", ())), attrs=attrs, via=via)
        if plan.distributed:
            written = await fw.write(
                ctx.tenant, "createEntity", plan, forwarded(request, ENTITIES, ctx, body),
                ids=[entity["id"]], attrs=attrs, via=via, guard=ctx.guard,
                local=lambda kept: svc.entities.create(ctx.tenant, keep_attrs(entity, kept),
                                                       guard=ctx.guard))
            return distributed_answer(ctx, written, empty(201, headers | tenant_headers(ctx)))
    await svc.entities.create(ctx.tenant, entity, guard=ctx.guard)
    return empty(201, headers | tenant_headers(ctx))


async def entity_without_id(request: Request) -> Response:
    """PUT or PATCH on /entities: Replace and Merge Entity (clauses 5.6.17, 5.6.18) need the
    entity id in the path; without it the request is malformed (400), nothing changes."""
    raise BadRequestData(f"{request.method} needs an entity id: /entities/{{entityId}}")


async def delete_entity(request: Request) -> Response:
    """Delete Entity (clause 5.6.6, binding 6.5.3.2)."""
    check_params(request.query_params, {"type", "local"})
    entity_id = _path_id(request)
    ctx = await request_context(request)
    type_gate = _type_gate(request, ctx.terms)
    svc = services(request)
    fw = federated(request)
    if fw is not None:
        via = request.headers.get("via")
        plan = await fw.plan(ctx.tenant, "deleteEntity", ids={entity_id}, via=via,
                             types=_gate_types(type_gate), whole_entity=True, lookup=entity_id)
        if plan.distributed:
            written = await fw.write(
                ctx.tenant, "deleteEntity", plan,
                forwarded(request, entity_path(entity_id), ctx), ids=[entity_id], attrs=None,
                via=via, guard=ctx.guard,
                local=lambda _: svc.entities.delete(ctx.tenant, entity_id, type_gate=type_gate,
                                                    guard=ctx.guard))
            return distributed_answer(ctx, written, empty(204, tenant_headers(ctx)))
    await svc.entities.delete(ctx.tenant, entity_id, type_gate=type_gate, guard=ctx.guard)
    return empty(204, tenant_headers(ctx))


async def replace_entity(request: Request) -> Response:
    """Replace Entity (clause 5.6.18, binding 6.5.3.3)."""
    check_params(request.query_params, {"local"})
    entity_id = _path_id(request)
    body, ctx = await read_entity_body(request)
    new = expand_entity(_object(body), ctx.terms, now_iso(), entity_id=entity_id)
    svc = services(request)
    fw = federated(request)
    if fw is not None:
        via = request.headers.get("via")
        attrs = frozenset(new["attrs"])
        plan = await fw.plan(ctx.tenant, "replaceEntity", ids={entity_id},
                             types=set(new.get("type", ())), attrs=attrs, via=via)
        if plan.distributed:
            written = await fw.write(
                ctx.tenant, "replaceEntity", plan,
                forwarded(request, entity_path(entity_id), ctx, body), ids=[entity_id],
                attrs=attrs, via=via, guard=ctx.guard,
                local=lambda kept: svc.entities.replace(ctx.tenant, entity_id,
                                                        keep_attrs(new, kept), guard=ctx.guard))
            return distributed_answer(ctx, written, empty(204, tenant_headers(ctx)))
    await svc.entities.replace(ctx.tenant, entity_id, new, guard=ctx.guard)
    return empty(204, tenant_headers(ctx))


async def merge_entity(request: Request) -> Response:
    """Merge Entity (clause 5.6.17, binding 6.5.3.4): merge-patch with NGSI-LD Null."""
    check_params(request.query_params, {"local", "observedAt", "format", "options", "lang"})
    entity_id = _path_id(request)
    is_patch = media_type(request.headers.get("content-type")) == MERGE_PATCH_MT
    body, ctx = await read_entity_body(request, merge_patch=True)
    if is_patch:
        body = merge_patch_nulls(body)
    fragment = expand_entity(
        _object(body), ctx.terms, now_iso(), entity_id=entity_id, require_type=False, merge=True
    )
    svc = services(request)
    fw = federated(request)
    if fw is not None:
        via = request.headers.get("via")
        attrs = frozenset(fragment["attrs"])
        types = set(fragment["type"]) if fragment.get("type") else None
        plan = await fw.plan(ctx.tenant, "mergeEntity", ids={entity_id}, types=types,
                             attrs=attrs, via=via, lookup=entity_id)
        if plan.distributed:
            written = await fw.write(
                ctx.tenant, "mergeEntity", plan,
                forwarded(request, entity_path(entity_id), ctx, body), ids=[entity_id],
                attrs=attrs, via=via, guard=ctx.guard,
                local=lambda kept: svc.entities.merge(ctx.tenant, entity_id,
                                                      keep_attrs(fragment, kept),
                                                      guard=ctx.guard))
            return distributed_answer(ctx, written, empty(204, tenant_headers(ctx)))
    await svc.entities.merge(ctx.tenant, entity_id, fragment, guard=ctx.guard)
    return empty(204, tenant_headers(ctx))


async def append_attrs(request: Request) -> Response:
    """Append Entity Attributes (clause 5.6.3, binding 6.6.3.1): 204, or 207 with notUpdated."""
    params = request.query_params
    check_params(params, {"options", "local", "type"})
    no_overwrite = "noOverwrite" in options(params, {"noOverwrite"})
    entity_id = _path_id(request)
    body, ctx = await read_entity_body(request)
    attrs, types, scope = _fragment(body, entity_id, ctx)
    type_gate = _type_gate(request, ctx.terms)
    svc = services(request)

    async def local(kept: frozenset[str] | None) -> ops.Outcome:
        mine = attrs if kept is None else {k: v for k, v in attrs.items() if k in kept}
        return await svc.entities.append(
            ctx.tenant, entity_id, mine, no_overwrite=no_overwrite, types=types, scope=scope,
            type_gate=type_gate, guard=ctx.guard)

    fw = federated(request)
    if fw is not None:
        written = await _attribute_write(request, fw, ctx, "appendAttrs", entity_id,
                                         frozenset(attrs), body, local)
        if written is not None:
            return distributed_answer(ctx, written, empty(204, tenant_headers(ctx)),
                                      attributes=True)
    outcome = await local(None)
    if outcome.not_updated:
        return _multi_status(ctx, _update_result(outcome.updated, outcome.not_updated))
    return empty(204, tenant_headers(ctx))


async def update_attrs(request: Request) -> Response:
    """Update Entity Attributes (clause 5.6.2, binding 6.6.3.2): 204, or 207 with notUpdated."""
    check_params(request.query_params, {"local", "type"})
    entity_id = _path_id(request)
    body, ctx = await read_entity_body(request)
    attrs, types, scope = _fragment(body, entity_id, ctx)
    type_gate = _type_gate(request, ctx.terms)
    svc = services(request)

    async def local(kept: frozenset[str] | None) -> ops.Outcome:
        mine = attrs if kept is None else {k: v for k, v in attrs.items() if k in kept}
        return await svc.entities.update(ctx.tenant, entity_id, mine, types=types, scope=scope,
                                         type_gate=type_gate, guard=ctx.guard)

    fw = federated(request)
    if fw is not None:
        written = await _attribute_write(request, fw, ctx, "updateEntity", entity_id,
                                         frozenset(attrs), body, local)
        if written is not None:
            return distributed_answer(ctx, written, empty(204, tenant_headers(ctx)),
                                      attributes=True)
    outcome = await local(None)
    if outcome.not_updated:
        return _multi_status(ctx, _update_result(outcome.updated, outcome.not_updated))
    return empty(204, tenant_headers(ctx))


async def patch_attr(request: Request) -> Response:
    """Partial Attribute Update (clause 5.6.4, binding 6.7.3.1): merge into one attribute."""
    check_params(request.query_params, {"local", "type"})
    entity_id = _path_id(request)
    name = _path_attr(request)
    if name == "scope":
        raise BadRequestData("scope is not an attribute and cannot be partially updated")
    body, ctx = await read_entity_body(request)
    raw = _object(body)
    if not raw:
        raise BadRequestData("the attribute fragment is empty")
    if raw.get("datasetId") == "urn:ngsi-ld:null":
        raise BadRequestData("a datasetId cannot be deleted with NGSI-LD Null")
    iri = ctx.terms.expand(name)
    instances = expand_attribute(iri, raw, ctx.terms, now_iso(), merge=True)
    type_gate = _type_gate(request, ctx.terms)
    svc = services(request)

    async def local(_: frozenset[str] | None) -> None:
        await svc.entities.patch_attr(ctx.tenant, entity_id, iri, instances,
                                      type_gate=type_gate, guard=ctx.guard)

    fw = federated(request)
    if fw is not None:
        written = await _attribute_write(request, fw, ctx, "updateAttrs", entity_id,
                                         frozenset({iri}), body, local, name=name)
        if written is not None:
            return distributed_answer(ctx, written, empty(204, tenant_headers(ctx)),
                                      attributes=True)
    await local(None)
    return empty(204, tenant_headers(ctx))


async def replace_attr(request: Request) -> Response:
    """Replace Attribute (clause 5.6.19, binding 6.7.3.3)."""
    check_params(request.query_params, {"local", "type"})
    entity_id = _path_id(request)
    name = _path_attr(request)
    if name == "scope":
        raise BadRequestData("scope is not an attribute and cannot be replaced here")
    body, ctx = await read_entity_body(request)
    iri = ctx.terms.expand(name)
    instances = expand_attribute(iri, _object(body), ctx.terms, now_iso())
    svc = services(request)

    async def local(_: frozenset[str] | None) -> None:
        await svc.entities.replace_attr(ctx.tenant, entity_id, iri, instances, guard=ctx.guard)

    fw = federated(request)
    if fw is not None:
        written = await _attribute_write(request, fw, ctx, "replaceAttrs", entity_id,
                                         frozenset({iri}), body, local, name=name)
        if written is not None:
            return distributed_answer(ctx, written, empty(204, tenant_headers(ctx)),
                                      attributes=True)
    await local(None)
    return empty(204, tenant_headers(ctx))


async def delete_attr(request: Request) -> Response:
    """Delete Attribute (clause 5.6.5, binding 6.7.3.2), by datasetId or all instances."""
    params = request.query_params
    check_params(params, {"datasetId", "deleteAll", "local", "type"})
    entity_id = _path_id(request)
    name = _path_attr(request)
    dataset_id = params.get("datasetId")
    if dataset_id is not None and not is_uri(dataset_id):
        raise BadRequestData("datasetId must be a URI")
    delete_all = flag(params, "deleteAll")
    ctx = await request_context(request)
    iri = "scope" if name == "scope" else ctx.terms.expand(name)
    type_gate = _type_gate(request, ctx.terms)
    svc = services(request)

    async def local(_: frozenset[str] | None) -> None:
        await svc.entities.delete_attr(
            ctx.tenant, entity_id, iri, dataset_id=dataset_id, delete_all=delete_all,
            type_gate=type_gate, guard=ctx.guard)

    fw = federated(request)
    if fw is not None and iri != "scope":
        written = await _attribute_write(request, fw, ctx, "deleteAttrs", entity_id,
                                         frozenset({iri}), None, local, name=name)
        if written is not None:
            return distributed_answer(ctx, written, empty(204, tenant_headers(ctx)),
                                      attributes=True)
    await local(None)
    return empty(204, tenant_headers(ctx))


async def _attribute_write(
    request: Request, fw: FederatedWrites, ctx: RequestContext, operation: str,
    entity_id: str, attrs: frozenset[str], body: JSON,
    local: Callable[[frozenset[str] | None], Awaitable[ops.Outcome | None]], *,
    name: str | None = None,
) -> Written | None:
    """An attribute write split between this broker and the sources (None: no source
    concerned). ``name``: the one attribute of the path, as the client named it."""
    via = request.headers.get("via")
    plan = await fw.plan(ctx.tenant, operation, ids={entity_id}, attrs=attrs or None, via=via,
                         types=_gate_types(_type_gate(request, ctx.terms)), lookup=entity_id)
    if not plan.distributed:
        return None
    path = entity_path(entity_id, "attrs", *((name,) if name is not None else ()))
    request_out = forwarded(request, path, ctx, body, members=name is None)

    def outcome(value: ops.Outcome | None) -> Outcome:
        if value is None:
            return Outcome(None, [entity_id], attrs=sorted(attrs))
        return _updated(entity_id)(value)

    return await fw.write(ctx.tenant, operation, plan, request_out, ids=[entity_id],
                          attrs=attrs, via=via, local=local, local_outcome=outcome,
                          guard=ctx.guard)


_SYSTEM = frozenset({"createdAt", "modifiedAt", "deletedAt", NGSI_LD + "createdAt",
                     NGSI_LD + "modifiedAt", NGSI_LD + "deletedAt"})


def _purge_qualifies(query: EntityQuery, local: bool) -> bool:
    """The filters that make a purge narrow enough (clause 5.6.21.4); ids alone are not."""
    if local or query.types is not None or query.geo is not None:
        return True
    if query.attrs is not None and query.attrs - _SYSTEM:
        return True
    return query.q is not None and bool(attribute_names(query.q) - _SYSTEM)


async def purge_entities(request: Request) -> Response:
    """Purge Entities (clause 5.6.21, binding 6.4.3.3): delete what a query selects."""
    params = request.query_params
    check_params(params, {"type", "id", "idPattern", "q", "scopeQ", "attrs", "georel",
                          "geometry", "coordinates", "geoproperty", "local", "keep", "drop"})
    if "keep" in params and "drop" in params:
        raise BadRequestData("keep and drop cannot be used together")
    if "{" in params.get("attrs", "") or "{" in params.get("q", ""):
        raise BadRequestData("purging cannot follow relationships to linked entities")
    ctx = await request_context(request)
    svc = services(request)
    query = entity_query(params, ctx.terms, svc.settings, require_filter=False)
    if not _purge_qualifies(query, flag(params, "local")):
        raise BadRequestData(
            "purging needs a type, a non-system attribute in attrs or q, a geo-query or local=true"
        )
    keep = names(params["keep"], ctx.terms) if "keep" in params else None
    drop = names(params["drop"], ctx.terms) if "drop" in params else None
    fw = federated(request)
    if fw is not None:
        via = request.headers.get("via")
        types = required_types(query.types) if query.types is not None else None
        plan = await fw.plan(ctx.tenant, "purgeEntity",
                             ids=set(query.ids) if query.ids else None,
                             types=set(types) if types else None, id_pattern=query.id_pattern,
                             via=via, whole_entity=True)
        if plan.distributed:
            written = await fw.write(
                ctx.tenant, "purgeEntity", plan, forwarded(request, ENTITIES, ctx), ids=[],
                attrs=None, via=via, guard=ctx.guard,
                local=lambda _: svc.entities.purge(ctx.tenant, query, keep=keep, drop=drop,
                                                   guard=ctx.guard))
            return distributed_answer(ctx, written, empty(204, tenant_headers(ctx)))
    await svc.entities.purge(ctx.tenant, query, keep=keep, drop=drop, guard=ctx.guard)
    return empty(204, tenant_headers(ctx))
