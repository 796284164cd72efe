"""Writing entities: /entities and /entities/{entityId}[/attrs[/{attrId}]] (clauses 6.4 - 6.7).

Reads live in ``entity_reads``. Every handler validates the whole request (path, query,
body, @context) before the service is called, so a bad request never changes state.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

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
from urbanos.core.selection import EntityQuery
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
from urbanos.types import JSON, JSONObject, Terms


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
    await services(request).entities.create(ctx.tenant, entity, guard=ctx.guard)
    headers = {"Location": f"/ngsi-ld/v1/entities/{quote(entity['id'], safe=':')}"}
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
    await services(request).entities.delete(
        ctx.tenant, entity_id, type_gate=_type_gate(request, ctx.terms),
        guard=ctx.guard,
    )
    return empty(204, tenant_headers(ctx))


async def replace_entity(request: Request) -> Response:
    """Replace Entity (clause 5.6.18, binding 6.5.3.3)."""
    check_params(request.query_params, {"local"})
    entity_id = _path_id(request)
    body, ctx = await read_entity_body(request)
    new = expand_entity(_object(body), ctx.terms, now_iso(), entity_id=entity_id)
    await services(request).entities.replace(ctx.tenant, entity_id, new, guard=ctx.guard)
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
    await services(request).entities.merge(ctx.tenant, entity_id, fragment, guard=ctx.guard)
    return empty(204, tenant_headers(ctx))


async def append_attrs(request: Request) -> Response:
    """Append Entity Attributes (clause 5.6.3, binding 6.6.3.1): 204, or 207 with notUpdated."""
    params = request.query_params
    check_params(params, {"options", "local", "type"})
    no_overwrite = "noOverwrite" in options(params, {"noOverwrite"})
    entity_id = _path_id(request)
    body, ctx = await read_entity_body(request)
    attrs, types, scope = _fragment(body, entity_id, ctx)
    outcome = await services(request).entities.append(
        ctx.tenant, entity_id, attrs, no_overwrite=no_overwrite, types=types, scope=scope,
        type_gate=_type_gate(request, ctx.terms), guard=ctx.guard
    )
    if outcome.not_updated:
        return _multi_status(ctx, _update_result(outcome.updated, outcome.not_updated))
    return empty(204, tenant_headers(ctx))


async def update_attrs(request: Request) -> Response:
    """Update Entity Attributes (clause 5.6.2, binding 6.6.3.2): 204, or 207 with notUpdated."""
    check_params(request.query_params, {"local", "type"})
    entity_id = _path_id(request)
    body, ctx = await read_entity_body(request)
    attrs, types, scope = _fragment(body, entity_id, ctx)
    outcome = await services(request).entities.update(
        ctx.tenant, entity_id, attrs, types=types, scope=scope,
        type_gate=_type_gate(request, ctx.terms), guard=ctx.guard
    )
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
    await services(request).entities.patch_attr(
        ctx.tenant, entity_id, iri, instances, type_gate=_type_gate(request, ctx.terms),
        guard=ctx.guard,
    )
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
    await services(request).entities.replace_attr(ctx.tenant, entity_id, iri, instances,
                                                  guard=ctx.guard)
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
    await services(request).entities.delete_attr(
        ctx.tenant, entity_id, iri, dataset_id=dataset_id, delete_all=delete_all,
        type_gate=_type_gate(request, ctx.terms), guard=ctx.guard
    )
    return empty(204, tenant_headers(ctx))


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
    await svc.entities.purge(ctx.tenant, query, keep=keep, drop=drop, guard=ctx.guard)
    return empty(204, tenant_headers(ctx))
