"""/types and /attributes (clauses 5.7.5 - 5.7.10, binding 6.25 - 6.28)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response

from urbanos.core.entity import check_name
from urbanos.errors import NonexistentTenant, ResourceNotFound
from urbanos.http.context import link_url, request_context, services
from urbanos.http.negotiation import RequestContext
from urbanos.http.params import check_params, flag
from urbanos.http.respond import json_response
from urbanos.services.entities import AttributeInfo, TypeInfo
from urbanos.types import JSONObject

WARNING = "NGSILD-Warning"
Info = TypeVar("Info", TypeInfo, AttributeInfo)


def _path_name(request: Request, key: str, what: str) -> str:
    """A type or attribute name from the path: a term, or a full IRI sent percent-encoded.

    The app keeps an encoded ``/`` as ``%2F`` so it cannot split a segment; here it is
    restored, so ``https%3A%2F%2Fexample.org%2FBuilding`` names the IRI it encodes.
    """
    return check_name(request.path_params[key].replace("%2F", "/"), what)


async def _local_or_empty(read: Awaitable[list[Info]], federated: bool) -> list[Info]:
    """The local answer; nothing when the tenant exists only at the context sources."""
    try:
        return await read
    except NonexistentTenant:
        if not federated:
            raise
        return []


async def _types(request: Request, ctx: RequestContext, *, details: bool,
                 name: str | None) -> tuple[list[TypeInfo], dict[str, str]]:
    """The local entity types, with the context sources' unless local=true."""
    svc = services(request)
    fed = svc.discovery
    federated = (fed is not None and not flag(request.query_params, "local")
                 and await fed.active(ctx.tenant))
    infos = await _local_or_empty(svc.entities.types(ctx.tenant, guard=ctx.guard), federated)
    if not federated or fed is None:
        return infos, {}
    infos, warnings = await fed.types(
        ctx.tenant, infos, details=details, name=name, terms=ctx.terms,
        link=await link_url(request, ctx), via=request.headers.get("via"),
        incoming=dict(request.headers))
    return infos, ({WARNING: ", ".join(warnings)} if warnings else {})


async def _attributes(request: Request, ctx: RequestContext, *, details: bool,
                      name: str | None) -> tuple[list[AttributeInfo], dict[str, str]]:
    """The local attributes, with the context sources' unless local=true."""
    svc = services(request)
    fed = svc.discovery
    federated = (fed is not None and not flag(request.query_params, "local")
                 and await fed.active(ctx.tenant))
    infos = await _local_or_empty(svc.entities.attributes(ctx.tenant, guard=ctx.guard),
                                  federated)
    if not federated or fed is None:
        return infos, {}
    infos, warnings = await fed.attributes(
        ctx.tenant, infos, details=details, name=name, terms=ctx.terms,
        link=await link_url(request, ctx), via=request.headers.get("via"),
        incoming=dict(request.headers))
    return infos, ({WARNING: ", ".join(warnings)} if warnings else {})


async def list_types(request: Request) -> Response:
    """Retrieve Available Entity Types (5.7.5) or their details (5.7.6)."""
    check_params(request.query_params, {"details", "local"})
    ctx = await request_context(request)
    details = flag(request.query_params, "details")
    infos, headers = await _types(request, ctx, details=details, name=None)
    c = ctx.terms.compact
    data: object
    if details:
        data = [
            {
                "id": i.type,
                "type": "EntityType",
                "typeName": c(i.type),
                "attributeNames": sorted(c(a) for a in i.attributes),
            }
            for i in sorted(infos, key=lambda i: i.type)
        ]
    else:
        data = {
            "id": f"urn:ngsi-ld:EntityTypeList:{uuid.uuid4()}",
            "type": "EntityTypeList",
            "typeList": sorted(c(i.type) for i in infos),
        }
    return json_response(ctx, data, link_url=await link_url(request, ctx), headers=headers)


async def retrieve_type(request: Request) -> Response:
    """Retrieve Entity Type Information (5.7.7)."""
    check_params(request.query_params, {"local"})
    name = _path_name(request, "type", "entity type")
    ctx = await request_context(request)
    iri = ctx.terms.expand(name)
    found, headers = await _types(request, ctx, details=True, name=iri)
    infos = {i.type: i for i in found}
    info = infos.get(iri)
    if info is None:
        raise ResourceNotFound(f"no entity of type {name}")
    c = ctx.terms.compact
    data: JSONObject = {
        "id": iri,
        "type": "EntityTypeInfo",
        "typeName": c(iri),
        "entityCount": info.count,
        "attributeDetails": [
            {
                "id": attr,
                "type": "Attribute",
                "attributeName": c(attr),
                "attributeTypes": sorted(kinds),
            }
            for attr, kinds in sorted(info.attributes.items())
        ],
    }
    return json_response(ctx, data, link_url=await link_url(request, ctx), headers=headers)


async def list_attributes(request: Request) -> Response:
    """Retrieve Available Attributes (5.7.8) or their details (5.7.9)."""
    check_params(request.query_params, {"details", "local"})
    ctx = await request_context(request)
    details = flag(request.query_params, "details")
    infos, headers = await _attributes(request, ctx, details=details, name=None)
    c = ctx.terms.compact
    data: object
    if details:
        data = [
            {
                "id": i.attr,
                "type": "Attribute",
                "attributeName": c(i.attr),
                "typeNames": sorted(c(t) for t in i.types),
            }
            for i in sorted(infos, key=lambda i: i.attr)
        ]
    else:
        data = {
            "id": f"urn:ngsi-ld:AttributeList:{uuid.uuid4()}",
            "type": "AttributeList",
            "attributeList": sorted(c(i.attr) for i in infos),
        }
    return json_response(ctx, data, link_url=await link_url(request, ctx), headers=headers)


async def retrieve_attribute(request: Request) -> Response:
    """Retrieve Attribute Information (5.7.10)."""
    check_params(request.query_params, {"local"})
    name = _path_name(request, "attr", "attribute name")
    ctx = await request_context(request)
    iri = ctx.terms.expand(name)
    found, headers = await _attributes(request, ctx, details=True, name=iri)
    infos = {i.attr: i for i in found}
    info = infos.get(iri)
    if info is None:
        raise ResourceNotFound(f"no entity has the attribute {name}")
    c = ctx.terms.compact
    data = {
        "id": iri,
        "type": "Attribute",
        "attributeName": c(iri),
        "attributeCount": info.count,
        "attributeTypes": sorted(info.kinds),
        "typeNames": sorted(c(t) for t in info.types),
    }
    return json_response(ctx, data, link_url=await link_url(request, ctx), headers=headers)
