"""Per-request wiring: the services of the app and the caller's tenant, @context and Accept."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request

from urbanos.core.policy import OPEN, Principal
from urbanos.http.negotiation import (
    JSON_MT,
    JSONLD_MT,
    RequestContext,
    body_context,
    choose_accept,
    parse_link_context,
    prefers_json_body,
    tenant_from,
)
from urbanos.services.guard import OPEN_GUARD, Guard, guard_for
from urbanos.types import JSON

if TYPE_CHECKING:
    from urbanos.services.access import AccessService
    from urbanos.services.auth import Authenticator
    from urbanos.services.contexts import ContextService
    from urbanos.services.csource_subscriptions import CsourceSubscriptionService
    from urbanos.services.entities import EntityService
    from urbanos.services.federated_discovery import FederatedDiscovery
    from urbanos.services.federated_reads import FederatedReads
    from urbanos.services.federated_temporal import FederatedTemporal
    from urbanos.services.federation import Federation
    from urbanos.services.notifications import NotificationEngine
    from urbanos.services.registrations import RegistrationService
    from urbanos.services.snapshots import SnapshotService
    from urbanos.services.stores import EntityStore
    from urbanos.services.subscriptions import SubscriptionService
    from urbanos.services.temporal import TemporalService
    from urbanos.settings import Settings


@dataclass(slots=True)
class Services:
    settings: Settings
    store: EntityStore
    entities: EntityService
    contexts: ContextService
    subscriptions: SubscriptionService | None = None
    temporal: TemporalService | None = None
    notifications: NotificationEngine | None = None
    snapshots: SnapshotService | None = None
    access: AccessService | None = None  # None: URBANOS_AUTH=none, no grants, no audit
    registrations: RegistrationService | None = None
    csource_subscriptions: CsourceSubscriptionService | None = None
    auth: Authenticator | None = None
    federation: Federation | None = None  # distributed operations (clause 4.3.6)
    federated: FederatedReads | None = None  # reads merged with the context sources'
    discovery: FederatedDiscovery | None = None  # /types and /attributes, likewise
    temporal_sources: FederatedTemporal | None = None  # temporal retrieve, likewise


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


async def request_context(
    request: Request,
    *,
    body: JSON = None,
    ctype: str | None = None,
    offered: tuple[str, ...] = (JSON_MT, JSONLD_MT),
) -> RequestContext:
    """Tenant, @context (Link header or inline), the response media type and the
    caller's rights, validated."""
    principal = request.scope.get("principal", OPEN)
    endpoint = request.scope.get("endpoint")
    return await context_of(
        services(request), request.headers, body=body, ctype=ctype, offered=offered,
        principal=principal,
        operation=getattr(endpoint, "__name__", request.method),
        request_id=request.scope.get("request_id"),
    )


async def context_of(
    svc: Services,
    headers: Mapping[str, str],
    *,
    body: JSON = None,
    ctype: str | None = None,
    offered: tuple[str, ...] = (JSON_MT, JSONLD_MT),
    principal: Principal = OPEN,
    operation: str = "",
    request_id: str | None = None,
) -> RequestContext:
    """``request_context`` from the request's headers (lower-case names, first value each)."""
    tenant = tenant_from(headers.get("ngsild-tenant"))
    guard = OPEN_GUARD
    if principal is not OPEN and svc.access is not None:
        guard = await guard_for(svc.access, principal, tenant, operation, request_id)
    accept = choose_accept(headers.get("accept"), offered)
    if ctype is None:
        context = parse_link_context(headers.get("link"))
    else:
        context = body_context(body, ctype, headers.get("link"))
    terms = await svc.contexts.term_map(context, tenant=tenant)
    return RequestContext(
        tenant=tenant, context=context, terms=terms, accept=accept,
        prefer_json_body=prefers_json_body(headers.get("prefer")), guard=guard,
    )


async def guard_of(request: Request, tenant: str) -> Guard:
    """The caller's guard in ``tenant``, for endpoints that need no @context."""
    principal = request.scope.get("principal", OPEN)
    svc = services(request)
    if principal is OPEN or svc.access is None:
        return OPEN_GUARD
    endpoint = request.scope.get("endpoint")
    return await guard_for(svc.access, principal, tenant,
                           getattr(endpoint, "__name__", request.method),
                           request.scope.get("request_id"))


async def link_url(request: Request, ctx: RequestContext) -> str:
    """The URL to put in a Link header for the request's @context (stored first when the
    broker has to create one)."""
    return await services(request).contexts.link_url(ctx.context, tenant=ctx.tenant)
