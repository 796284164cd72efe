"""The inbound path of distributed subscriptions (clause 5.8.6): context sources notify
this broker of the copies it made of its subscriptions (``POST /ngsi-ld/ex/remote-notify``).

The notification is handed to ``services.federated_subscriptions``, which delivers what
it selects to the original subscriber. 200 when taken; 404 for a subscription id this
broker never made; 400 for a malformed notification.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from urbanos.http.endpoints.subscriptions import read_json_body
from urbanos.http.negotiation import tenant_from
from urbanos.http.respond import empty
from urbanos.services.federated_subscriptions import INBOUND_PATH, FederatedSubscriptions

PATH = INBOUND_PATH


async def remote_notify(request: Request) -> Response:
    """A source's Notification of a subscription copy: 200 once recorded for delivery."""
    service: FederatedSubscriptions | None = getattr(
        request.app.state, "federated_subscriptions", None)
    body, ctx = await read_json_body(request)
    if service is None:
        return empty(200, {})
    named = request.query_params.get("tenant")
    tenant = tenant_from(named) if named else ctx.tenant
    context = None
    if request.headers.get("link") or (isinstance(body, dict) and "@context" in body):
        context = ctx.context
    await service.inbound(tenant, body, context)
    return empty(200, {})
