"""/subscriptions (clauses 5.8.1 - 5.8.5, binding 6.10 - 6.11): create, query, retrieve,
update and delete subscriptions.

Attribute names and entity types are expanded with the request's @context on the way in
and compacted with the caller's @context on the way out, like entities.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from urbanos.http.context import link_url, request_context, services
from urbanos.http.negotiation import RequestContext, read_body
from urbanos.http.params import check_params, paging, uri_in_path
from urbanos.http.respond import add_paging_links, empty, json_response
from urbanos.services.subscriptions import SubscriptionService
from urbanos.types import JSON, JSONObject

PATH = "/ngsi-ld/v1/subscriptions"
_VERSION = re.compile(r"^\d+\.\d+$")


def _service(request: Request) -> SubscriptionService:
    service = services(request).subscriptions
    assert service is not None, "the subscription service is wired in the app lifespan"
    return service


def subscription_id_in_path(request: Request) -> str:
    return uri_in_path(request, "subscription_id", "subscription")


def tenant_headers(tenant: str) -> dict[str, str]:
    """The tenant echoed on a write's answer (clause 6.3.14), for every document family."""
    return {"NGSILD-Tenant": tenant} if tenant else {}


async def paged_documents(
    request: Request, ctx: RequestContext,
    query: Callable[..., Awaitable[tuple[list[JSONObject], int]]],
) -> Response:
    """A Query over one family of documents (subscriptions, csource subscriptions): the
    page ``query`` gives, its count when asked, and the paging Links."""
    limit, offset, count = paging(request.query_params, services(request).settings)
    data, total = await query(ctx.tenant, ctx.terms, limit=limit, offset=offset,
                              guard=ctx.guard)
    headers = {"NGSILD-Results-Count": str(total)} if count else {}
    response = json_response(ctx, data, link_url=await link_url(request, ctx), headers=headers)
    return add_paging_links(response, request, ctx, limit=limit, offset=offset, total=total)


async def read_json_body(request: Request) -> tuple[JSON, RequestContext]:
    """A JSON body (merge-patch accepted as JSON) and the request's context for it."""
    s = services(request).settings
    body, ctype = await read_body(request, s.max_body_bytes, s.max_json_depth)
    if ctype == "application/merge-patch+json":
        ctype = "application/json"
    ctx = await request_context(request, body=body, ctype=ctype)
    return body, ctx


def preferred_version(header: str | None) -> str | None:
    """The ``ngsi-ld`` preference of a Prefer header (RFC 7240, clause 6.3.6), as
    ``ngsi-ld=X.Y``: the name in any case, the value bare or quoted, parameters ignored."""
    if not header:
        return None
    for preference in header.split(","):
        head = preference.split(";", 1)[0]
        name, sep, value = head.partition("=")
        value = value.strip().strip('"')
        if sep and name.strip().lower() == "ngsi-ld" and _VERSION.match(value):
            return f"ngsi-ld={value}"
    return None


async def create_subscription(request: Request) -> Response:
    """Create Subscription (clause 5.8.1, binding 6.10.3.1): 201 with Location."""
    check_params(request.query_params, set())
    body, ctx = await read_json_body(request)
    sub_id = await _service(request).create(ctx.tenant, body, ctx.terms, ctx.context,
                                            guard=ctx.guard)
    headers = {"Location": f"{PATH}/{quote(sub_id, safe=':')}"}
    return empty(201, headers | tenant_headers(ctx.tenant))


async def query_subscriptions(request: Request) -> Response:
    """Query Subscriptions (clause 5.8.4, binding 6.10.3.2): paged, with a count."""
    params = request.query_params
    check_params(params, {"limit", "offset", "count"})
    ctx = await request_context(request)
    return await paged_documents(request, ctx, _service(request).query)


async def retrieve_subscription(request: Request) -> Response:
    """Retrieve Subscription (clause 5.8.3, binding 6.11.3.1).

    A version preference (clause 4.3.6.8) changes entity data only: a subscription is
    returned as it is, and the preference reported as applied.
    """
    check_params(request.query_params, set())
    sub_id = subscription_id_in_path(request)
    ctx = await request_context(request)
    data = await _service(request).retrieve(ctx.tenant, sub_id, ctx.terms, guard=ctx.guard)
    headers: dict[str, str] = {}
    applied = preferred_version(request.headers.get("prefer"))
    if applied is not None:
        headers["Preference-Applied"] = applied
    return json_response(ctx, data, link_url=await link_url(request, ctx), headers=headers)


async def update_subscription(request: Request) -> Response:
    """Update Subscription (clause 5.8.2, binding 6.11.3.2): 204."""
    check_params(request.query_params, set())
    sub_id = subscription_id_in_path(request)
    body, ctx = await read_json_body(request)
    await _service(request).update(ctx.tenant, sub_id, body, ctx.terms, ctx.context,
                                   guard=ctx.guard)
    return empty(204, tenant_headers(ctx.tenant))


async def delete_subscription(request: Request) -> Response:
    """Delete Subscription (clause 5.8.5, binding 6.11.3.3): 204."""
    check_params(request.query_params, set())
    sub_id = subscription_id_in_path(request)
    ctx = await request_context(request)
    await _service(request).delete(ctx.tenant, sub_id, guard=ctx.guard)
    return empty(204, tenant_headers(ctx.tenant))
