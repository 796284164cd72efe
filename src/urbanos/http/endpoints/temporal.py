"""Writing temporal evolutions: /temporal/entities and below (clauses 5.6.11 - 5.6.16).

Reads live in ``temporal_reads``. Each handler checks the whole request (path, query,
body, @context) before the service runs, so a bad request changes nothing.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from urbanos.core.entity import check_entity_id, check_name, is_uri
from urbanos.core.temporal import SCOPE
from urbanos.core.temporal_input import (
    expand_instance_fragment,
    expand_temporal_attrs,
    expand_temporal_entity,
)
from urbanos.core.timeutil import now_iso
from urbanos.errors import BadRequestData, OperationNotSupported
from urbanos.http.context import request_context, services
from urbanos.http.negotiation import JSON_MT, MERGE_PATCH_MT, RequestContext, read_body
from urbanos.http.params import check_params, flag
from urbanos.http.respond import empty
from urbanos.services.temporal import TemporalService
from urbanos.types import JSON, JSONObject

BASE = "/ngsi-ld/v1/temporal/entities/"


def temporal(request: Request) -> TemporalService:
    svc = services(request).temporal
    if svc is None:
        raise OperationNotSupported("this store keeps no history (use sqlite or memory)")
    return svc


def path_entity(request: Request) -> str:
    return check_entity_id(request.path_params["entity_id"].replace("%2F", "/"))


def path_attr(request: Request, ctx: RequestContext) -> str:
    """The attribute named in the path, expanded (``scope`` names the scope's history)."""
    name = check_name(request.path_params["attr_id"].replace("%2F", "/"))
    return SCOPE if name == SCOPE else ctx.terms.expand(name)


def path_instance(request: Request) -> str:
    value = request.path_params["instance_id"].replace("%2F", "/")
    if not is_uri(value):
        raise BadRequestData(f"instanceId must be a URI, got {value!r}")
    return value


async def _body(request: Request) -> tuple[JSON, RequestContext]:
    s = services(request).settings
    body, ctype = await read_body(request, s.max_body_bytes, s.max_json_depth)
    ctx = await request_context(request, body=body,
                                ctype=JSON_MT if ctype == MERGE_PATCH_MT else ctype)
    return body, ctx


def _tenant(ctx: RequestContext) -> dict[str, str]:
    return {"NGSILD-Tenant": ctx.tenant} if ctx.tenant else {}


def _object(body: JSON) -> JSONObject:
    if not isinstance(body, dict):
        raise BadRequestData("the body must be a JSON object")
    return {k: v for k, v in body.items() if k != "@context"}


async def upsert_temporal(request: Request) -> Response:
    """Create or Update Temporal Representation of an Entity (clause 5.6.11, binding
    6.18.3.1): 201 with Location when new, else 204 with the instances added."""
    check_params(request.query_params, {"local"})
    body, ctx = await _body(request)
    entity = expand_temporal_entity(body, ctx.terms, now_iso())
    created = await temporal(request).upsert(ctx.tenant, entity, guard=ctx.guard)
    if created:
        location = {"Location": BASE + quote(entity["id"], safe=":")}
        return empty(201, location | _tenant(ctx))
    return empty(204, _tenant(ctx))


async def add_temporal_attrs(request: Request) -> Response:
    """Add Attributes to Temporal Representation of an Entity (clause 5.6.12, binding
    6.20.3.1)."""
    check_params(request.query_params, {"local"})
    entity_id = path_entity(request)
    body, ctx = await _body(request)
    fragment = _object(body)
    if "id" in fragment and fragment.pop("id") != entity_id:
        raise BadRequestData("the id in the payload does not match the id in the URL")
    fragment.pop("type", None)
    if not fragment:
        raise BadRequestData("the fragment holds no attribute")
    attrs = expand_temporal_attrs(fragment, ctx.terms, now_iso())
    await temporal(request).add_attributes(ctx.tenant, entity_id, attrs, guard=ctx.guard)
    return empty(204, _tenant(ctx))


async def delete_temporal(request: Request) -> Response:
    """Delete Temporal Representation of an Entity (clause 5.6.16, binding 6.19.3.2)."""
    check_params(request.query_params, {"local", "type"})
    entity_id = path_entity(request)
    ctx = await request_context(request)
    await temporal(request).delete_entity(ctx.tenant, entity_id, guard=ctx.guard)
    return empty(204, _tenant(ctx))


async def delete_temporal_attr(request: Request) -> Response:
    """Delete Attribute from Temporal Representation of an Entity (clause 5.6.13, binding
    6.21.3.1): one datasetId, the default instance, or all of them."""
    params = request.query_params
    check_params(params, {"datasetId", "deleteAll", "local"})
    entity_id = path_entity(request)
    ctx = await request_context(request)
    attr = path_attr(request, ctx)
    dataset_id = params.get("datasetId") or None
    if dataset_id is not None and not is_uri(dataset_id):
        raise BadRequestData("datasetId must be a URI")
    delete_all = flag(params, "deleteAll")
    await temporal(request).delete_attribute(
        ctx.tenant, entity_id, attr, dataset_id=dataset_id, delete_all=delete_all,
        guard=ctx.guard,
    )
    return empty(204, _tenant(ctx))


async def modify_instance(request: Request) -> Response:
    """Modify Attribute Instance in Temporal Representation of an Entity (clause 5.6.14,
    binding 6.22.3.1)."""
    check_params(request.query_params, {"local"})
    entity_id = path_entity(request)
    instance = path_instance(request)
    body, ctx = await _body(request)
    attr = path_attr(request, ctx)
    fragment = expand_instance_fragment(attr, body, ctx.terms, now_iso())
    await temporal(request).modify_instance(ctx.tenant, entity_id, attr, instance, fragment,
                                            guard=ctx.guard)
    return empty(204, _tenant(ctx))


async def delete_instance(request: Request) -> Response:
    """Delete Attribute Instance from Temporal Representation of an Entity (clause 5.6.15,
    binding 6.22.3.2)."""
    check_params(request.query_params, {"local"})
    entity_id = path_entity(request)
    ctx = await request_context(request)
    attr = path_attr(request, ctx)
    instance = path_instance(request)
    await temporal(request).delete_instance(ctx.tenant, entity_id, attr, instance, guard=ctx.guard)
    return empty(204, _tenant(ctx))
