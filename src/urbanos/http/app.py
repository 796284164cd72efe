"""create_app(settings) -> the ASGI app; the lifespan opens the store and wires services."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from urbanos.errors import NgsiLdError
from urbanos.http import metrics
from urbanos.http.auth import Authenticate
from urbanos.http.context import Services
from urbanos.http.endpoints.info import source_alias
from urbanos.http.fast_paths import FastRetrieve
from urbanos.http.problems import handle_http_error, handle_ngsi_error, handle_unexpected
from urbanos.http.ratelimit import RateLimit
from urbanos.http.routes import ROUTES
from urbanos.outbound import OutboundPolicy
from urbanos.services.access import AccessService
from urbanos.services.auth import Authenticator
from urbanos.services.cluster import (
    ACCESS,
    CONTEXTS,
    REGISTRATIONS,
    SUBSCRIPTIONS,
    Invalidations,
    listen,
)
from urbanos.services.contexts import ContextService
from urbanos.services.csource_subscriptions import CSOURCE, CsourceSubscriptionService
from urbanos.services.entities import EntityService
from urbanos.services.expiry import ExpirySweeper
from urbanos.services.federated_discovery import FederatedDiscovery
from urbanos.services.federated_reads import FederatedReads
from urbanos.services.federated_subscriptions import FederatedSubscriptions
from urbanos.services.federated_temporal import FederatedTemporal
from urbanos.services.federation import Federation
from urbanos.services.notifications import SubscriptionSources
from urbanos.services.ratelimit import RateLimits
from urbanos.services.registrations import RegistrationService
from urbanos.services.snapshots import SnapshotService
from urbanos.services.stores import EntityStore, Stores, open_stores
from urbanos.services.subscriptions import SubscriptionService, own_origins
from urbanos.services.temporal import Retention, TemporalService
from urbanos.settings import Settings
from urbanos.workers import start_workers

log = logging.getLogger("urbanos")


def create_app(settings: Settings | None = None, stores: Stores | None = None) -> ASGIApp:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.started = time.monotonic()  # for contextSourceUptime (clause 5.2.40)
        opened = stores or open_stores(
            settings.store, readers=settings.workers_read, synchronous=settings.sqlite_synchronous
        )
        await opened.open()
        the_store = opened.entities
        policy = OutboundPolicy.from_strings(settings.outbound_policy, settings.outbound_allow)
        contexts = ContextService(
            policy,
            timeout=settings.context_timeout,
            max_bytes=settings.context_max_bytes,
            max_depth=settings.context_max_depth,
            failure_ttl=settings.context_failure_ttl,
            public_url=settings.base_url,
            store=opened.contexts,
        )
        subscriptions = SubscriptionService(
            opened.subscriptions, contexts, entities=the_store, own_origins=own_origins(settings)
        )
        access = AccessService(
            opened.access, entity=the_store.get, leader=the_store.try_lead,
            on_issuers=lambda: auth.reload_issuers() if auth is not None else None,
            audit_retention_days=settings.audit_retention_days,
        )
        modes = settings.auth_modes
        auth = Authenticator(
            modes, keys=access.verify_key, issuers=opened.access.issuers, policy=policy,
            platform_issuer=settings.oidc_issuer, audience=settings.oidc_audience,
            claims=settings.oidc_claims, clock_skew=settings.oidc_clock_skew,
            anonymous_role=settings.anonymous_role,
        ) if modes else None
        if auth is not None:
            subscriptions.grants = access.grants
            subscriptions.owners = access.current
        app.state.services = Services(
            settings=settings, store=the_store, entities=EntityService(the_store),
            contexts=contexts, subscriptions=subscriptions, access=access, auth=auth,
        )
        federation = Federation(
            opened.registrations, policy,
            alias=lambda tenant: source_alias(settings.base_url, tenant),
            timeout=settings.federation_timeout, max_bytes=settings.federation_max_bytes,
            cooldown=settings.federation_cooldown,
        )
        app.state.services.federation = federation
        app.state.services.federated = FederatedReads(
            federation, contexts, app.state.services.entities)
        app.state.services.discovery = FederatedDiscovery(federation, contexts)
        app.state.services.temporal_sources = FederatedTemporal(federation, contexts)
        registrations = app.state.services.registrations = RegistrationService(
            federation.watch(opened.registrations), policy=policy,
            own_origins=own_origins(settings), entities=the_store)
        csubs = app.state.services.csource_subscriptions = CsourceSubscriptionService(
            opened.subscriptions.of_kind(CSOURCE), opened.registrations, contexts,
            own_origins=own_origins(settings))
        registrations.on_change = csubs.registration_changed
        distributed = app.state.federated_subscriptions = FederatedSubscriptions(
            federation, subscriptions, csubs, the_store, contexts, settings.base_url)
        subscriptions.federated = distributed
        app.state.services.snapshots = SnapshotService(
            opened.snapshots, app.state.services.entities
        )
        app.state.services.temporal = TemporalService(
            the_store, opened.temporal, instance_limit=settings.temporal_instance_limit,
            retention=Retention.parse(settings.temporal_retention_days),
        )
        # listen first, then load: no change made elsewhere falls in between
        leave_cluster = await _join_cluster(the_store, subscriptions, contexts, access, auth,
                                            federation)
        await contexts.open()
        if auth is not None:
            await auth.open()
        await subscriptions.open()
        # before serving: the outbox has recorded every write since it was built
        app.state.workers = await start_workers(
            settings, opened.outbox, SubscriptionSources(subscriptions, csubs), policy,
            leader=the_store.try_lead,
        )
        if app.state.workers.engine is not None:
            subscriptions.outcomes = app.state.workers.engine.settled
            csubs.outcomes = app.state.workers.engine.settled
            csubs.notify = app.state.workers.engine.notify
            distributed.notify = app.state.workers.engine.notify
        app.state.services.notifications = app.state.workers.engine
        app.state.workers.run("contexts.uses", contexts.run_flush)
        app.state.workers.run("access.keys", access.run_flush)
        app.state.workers.run("federation.uses", federation.run_flush)
        if settings.audit_retention_days > 0:
            app.state.workers.run("access.audit-retention", access.run_retention)
        sweeper = ExpirySweeper(the_store, opened.temporal, leader=the_store.try_lead)
        app.state.workers.run("entities.expiry", sweeper.run)
        temporal = app.state.services.temporal
        if temporal is not None and temporal.retention.active:
            app.state.workers.run("temporal.retention", temporal.run_retention)
        try:
            yield
        finally:
            await app.state.workers.stop()  # first: lets sends in progress finish
            await leave_cluster()
            await access.aclose()
            if auth is not None:
                await auth.aclose()
            await contexts.aclose()
            await federation.aclose()
            await opened.close()

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={
            NgsiLdError: handle_ngsi_error,
            HTTPException: handle_http_error,
            Exception: handle_unexpected,
        },
    )
    app.router.redirect_slashes = False
    limits = RateLimits.parse(settings.rate_limit)
    inner: ASGIApp = FastRetrieve(app)
    if limits.active:
        inner = RateLimit(inner, limits)
    authenticated = Authenticate(inner, lambda: getattr(app.state, "services", None),
                                 limits if limits.active else None)
    return PathNormalizer(metrics.Instrument(authenticated))


async def _join_cluster(
    store: EntityStore, subscriptions: SubscriptionService, contexts: ContextService,
    access: AccessService, auth: Authenticator | None, federation: Federation,
) -> Callable[[], Awaitable[None]]:
    """This process as one node among several (on PostgreSQL): another node's change to a
    tenant's subscriptions drops this node's index of that tenant (reloaded on next use),
    one to its @context registry reloads this node's cache of it; after a lost connection
    every index and cache is reloaded (``services.cluster``). Call before the caches load.
    Returns the shutdown step."""
    bus = Invalidations()
    reloads: set[asyncio.Task[None]] = set()

    def changed(tenant: str | None) -> None:
        if tenant is not None:
            subscriptions.invalidate(tenant)
            return
        task = asyncio.ensure_future(subscriptions.open())
        reloads.add(task)
        task.add_done_callback(reloads.discard)
        task.add_done_callback(_log_reload_failure)

    def access_changed(tenant: str | None) -> None:
        access.invalidate(tenant)
        if auth is not None:  # an issuer may have been added or removed
            auth.reload_issuers()

    bus.subscribe(SUBSCRIPTIONS, changed)
    bus.subscribe(CONTEXTS, contexts.invalidate)
    bus.subscribe(ACCESS, access_changed)
    bus.subscribe(REGISTRATIONS, federation.invalidate)
    return await listen(store, bus)


def _log_reload_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("reloading the subscriptions after a lost connection failed",
                  exc_info=task.exception())


class PathNormalizer:
    """Route on the raw path: ``%2F`` inside an id stays inside its segment, and a trailing
    slash is ignored, so ``/entities/`` and ``/entities`` are the same resource."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path") or scope["path"].encode()
            path = raw.decode("latin-1").split("?", 1)[0]
            if len(path) > 1 and path.endswith("/"):
                path = path.rstrip("/") or "/"
            if "%" in path:  # without one, every segment unquotes to itself
                path = "/".join(unquote(s).replace("/", "%2F") for s in path.split("/"))
            scope = dict(scope)
            scope["path"] = path
            scope["ngsi_start"] = time.perf_counter()
        await self.app(scope, receive, send)
