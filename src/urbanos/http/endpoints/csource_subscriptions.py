"""/csourceSubscriptions (clauses 5.11.2 - 5.11.6, bindings 6.12 - 6.13): create, query,
retrieve, update and delete context source registration subscriptions.

Shaped like /subscriptions: names are expanded with the request's @context on the way in
and compacted with the caller's on the way out.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from urbanos.http.context import link_url, request_context, services
from urbanos.http.endpoints.subscriptions import (
    paged_documents,
    read_json_body,
    subscription_id_in_path,
    tenant_headers,
)
from urbanos.http.params import check_params
from urbanos.http.respond import empty, json_response
from urbanos.services.csource_subscriptions import CsourceSubscriptionService

PATH = "/ngsi-ld/v1/csourceSubscriptions"


def _service(request: Request) -> CsourceSubscriptionService:
    service = services(request).csource_subscriptions
    assert service is not None, "the csource subscription service is wired in the app lifespan"
    return service


async def create_csource_subscription(request: Request) -> Response:
    """Create Csource Registration Subscription (clause 5.11.2, binding 6.12.3.1): 201
    with Location."""
    check_params(request.query_params, set())
    body, ctx = await read_json_body(request)
    sub_id = await _service(request).create(ctx.tenant, body, ctx.terms, ctx.context,
                                            guard=ctx.guard)
    headers = {"Location": f"{PATH}/{quote(sub_id, safe=':')}"}
    return empty(201, headers | tenant_headers(ctx.tenant))


async def query_csource_subscriptions(request: Request) -> Response:
    """Query Csource Registration Subscriptions (clause 5.11.5, binding 6.12.3.2): paged,
    with a count."""
    params = request.query_params
    check_params(params, {"limit", "offset", "count"})
    ctx = await request_context(request)
    return await paged_documents(request, ctx, _service(request).query)


async def retrieve_csource_subscription(request: Request) -> Response:
    """Retrieve Csource Registration Subscription (clause 5.11.4, binding 6.13.3.1)."""
    check_params(request.query_params, set())
    sub_id = subscription_id_in_path(request)
    ctx = await request_context(request)
    data = await _service(request).retrieve(ctx.tenant, sub_id, ctx.terms, guard=ctx.guard)
    return json_response(ctx, data, link_url=await link_url(request, ctx))


async def update_csource_subscription(request: Request) -> Response:
    """Update Csource Registration Subscription (clause 5.11.3, binding 6.13.3.2): 204."""
    check_params(request.query_params, set())
    sub_id = subscription_id_in_path(request)
    body, ctx = await read_json_body(request)
    await _service(request).update(ctx.tenant, sub_id, body, ctx.terms, guard=ctx.guard)
    return empty(204, tenant_headers(ctx.tenant))


async def delete_csource_subscription(request: Request) -> Response:
    """Delete Csource Registration Subscription (clause 5.11.6, binding 6.13.3.3): 204."""
    check_params(request.query_params, set())
    sub_id = subscription_id_in_path(request)
    ctx = await request_context(request)
    await _service(request).delete(ctx.tenant, sub_id, guard=ctx.guard)
    return empty(204, tenant_headers(ctx.tenant))
