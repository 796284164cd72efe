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
from urbanos.http.context import Services
from urbanos.http.fast_paths import FastRetrieve
from urbanos.http.problems import handle_http_error, handle_ngsi_error, handle_unexpected
from urbanos.http.routes import ROUTES
from urbanos.outbound import OutboundPolicy
from urbanos.services.contexts import ContextService
from urbanos.services.entities import EntityService
from urbanos.services.subscriptions import SubscriptionService, own_origins
from urbanos.services.temporal import Retention, TemporalService
from urbanos.settings import Settings
from urbanos.storage import open_store
from urbanos.storage.base import EntityStore
from urbanos.storage.subscriptions import subscription_store_for
from urbanos.storage.temporal import temporal_store_for
from urbanos.workers import start_workers

log = logging.getLogger("urbanos")


def create_app(settings: Settings | None = None, store: EntityStore | None = None) -> ASGIApp:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.started = time.monotonic()  # for contextSourceUptime (clause 5.2.40)
        the_store = store or open_store(
            settings.store, readers=settings.workers_read, synchronous=settings.sqlite_synchronous
        )
        await the_store.open()
        policy = OutboundPolicy.from_strings(settings.outbound_policy, settings.outbound_allow)
        contexts = ContextService(
            policy,
            timeout=settings.context_timeout,
            max_bytes=settings.context_max_bytes,
            max_depth=settings.context_max_depth,
            failure_ttl=settings.context_failure_ttl,
            public_url=settings.base_url,
            store=the_store.contexts,
        )
        await contexts.open()
        app.state.services = Services(
            settings=settings, store=the_store, entities=EntityService(the_store),
            contexts=contexts,
        )
        subscription_store = subscription_store_for(the_store)
        await subscription_store.open()
        subscriptions = SubscriptionService(
            subscription_store, contexts, entities=the_store, own_origins=own_origins(settings)
        )
        await subscriptions.open()
        app.state.services.subscriptions = subscriptions
        history = temporal_store_for(the_store)  # registers the history write hook
        if history is not None:
            await history.open()
            app.state.services.temporal = TemporalService(
                the_store, history, instance_limit=settings.temporal_instance_limit,
                retention=Retention.parse(settings.temporal_retention_days),
            )
        leave_cluster = await _join_cluster(the_store, subscriptions, contexts)
        # after every store is open and before serving: no change escapes the outbox
        app.state.workers = await start_workers(
            settings, the_store, subscriptions, policy, leader=the_store.try_lead
        )
        if app.state.workers.engine is not None:
            subscriptions.outcomes = app.state.workers.engine.settled
        app.state.workers.run("contexts.uses", contexts.run_flush)
        temporal = app.state.services.temporal
        if temporal is not None and temporal.retention.active:
            app.state.workers.run("temporal.retention", temporal.run_retention)
        try:
            yield
        finally:
            await app.state.workers.stop()  # first: lets sends in progress finish
            await leave_cluster()
            await subscription_store.close()
            await contexts.aclose()
            await the_store.close()

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
    return PathNormalizer(metrics.Instrument(FastRetrieve(app)))


async def _join_cluster(
    store: EntityStore, subscriptions: SubscriptionService, contexts: ContextService
) -> Callable[[], Awaitable[None]]:
    """On PostgreSQL, this process is one node among several: another node's change to a
    tenant's subscriptions drops this node's index of that tenant (reloaded on next use),
    one to its @context registry reloads this node's cache of it; after a lost
    connection every index and cache is reloaded. Returns the shutdown step."""
    from urbanos.storage.postgres import PostgresStore

    if not isinstance(store, PostgresStore):
        return _nothing
    from urbanos.storage.postgres import listen

    node = listen.node_for(store)
    reloads: set[asyncio.Task[None]] = set()

    def changed(payload: str) -> None:
        origin, tenant = listen.parse_subscription_payload(payload)
        if tenant is not None:
            if origin != node.node_id:  # this node's own writes keep its index current
                subscriptions.invalidate(tenant)
            return
        task = asyncio.ensure_future(subscriptions.open())
        reloads.add(task)
        task.add_done_callback(reloads.discard)
        task.add_done_callback(_log_reload_failure)

    def contexts_changed(payload: str) -> None:
        origin, tenant = listen.parse_announcement(payload)
        if origin != node.node_id:  # this node's own writes keep its cache current
            contexts.invalidate(tenant)

    node.on(listen.SUBSCRIPTIONS_CHANNEL, changed)
    node.on(listen.CONTEXTS_CHANNEL, contexts_changed)
    await node.start()
    contexts.invalidate(None)  # what was written between loading the cache and LISTEN
    return node.stop


async def _nothing() -> None:
    return None


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
