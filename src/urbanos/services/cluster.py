"""How changes made elsewhere reach this process's caches: one rule for every cache.

Several processes may share one database (broker nodes on PostgreSQL, later worker
processes on SQLite). Each keeps caches of shared state in memory: the subscription
indexes, the @context registry, and whatever comes next. They all follow one rule:

1. *Listen first, then load.* The feed of announcements (``Invalidations``) is running
   before a cache first reads the store, so no change falls between the read and the
   listening.
2. *Every change bumps a generation, before anything reloads.* An announcement from
   another process (``Invalidations.changed``), a lost feed (tenant None: anything may have
   changed meanwhile, for every tenant) and this process's own writes all call
   ``Generations.bump`` for the tenant (or for all), synchronously.
3. *A load is installed only if its generation is still current.* A cache takes
   ``Generations.token()`` before it reads the store and installs what it read only if
   ``Generations.fresh(token, tenant)`` holds afterwards; otherwise the rows may predate a
   change and are dropped (used at most for the call that read them), and the cache reads
   again: lazily on next use (subscriptions) or at once (@contexts, whose lookups are
   synchronous).

So a subscription deleted during a reload can never be re-added by that reload, and a
reconnection cannot resurrect what was deleted while the feed was down.

The feed is backend-neutral: ``Invalidations`` takes ``changed(topic, tenant)`` from
whatever carries the announcements. ``listen`` connects it to PostgreSQL
LISTEN/NOTIFY (``storage.postgres.listen``); a single process needs no feed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from urbanos.storage.base import EntityStore

__all__ = ["ACCESS", "CONTEXTS", "REGISTRATIONS", "SUBSCRIPTIONS", "Generations", "Invalidations", "listen"]

#: topics of the announcements: which shared state changed
SUBSCRIPTIONS = "subscriptions"
CONTEXTS = "contexts"
ACCESS = "access"  # a tenant's grants, API keys and identity providers
REGISTRATIONS = "registrations"  # a tenant's context source registrations

#: ``listener(tenant)``: the tenant's state changed elsewhere; None: any tenant's may have
Listener = Callable[[str | None], None]


class Generations:
    """Change counters of one cache: one sequence, the last change per tenant and the last
    change of everything. A token is the sequence when a load began."""

    def __init__(self) -> None:
        self._seq = 0
        self._all = 0
        self._tenants: dict[str, int] = {}

    def bump(self, tenant: str | None) -> None:
        """Something of ``tenant`` (None: of every tenant) changed: loads begun before are
        stale."""
        self._seq += 1
        if tenant is None:
            self._all = self._seq
        else:
            self._tenants[tenant] = self._seq

    def token(self) -> int:
        """Take before reading the store."""
        return self._seq

    def fresh(self, token: int, tenant: str | None) -> bool:
        """Whether what was read for ``tenant`` (None: for every tenant) since ``token``
        may be installed: nothing of it changed meanwhile."""
        if self._all > token:
            return False
        if tenant is None:
            return all(at <= token for at in self._tenants.values())
        return self._tenants.get(tenant, 0) <= token

    def tenants(self) -> set[str]:
        """The tenants ever bumped (they may hold state this process never loaded)."""
        return set(self._tenants)


class Invalidations:
    """The one path by which changes made by other processes reach this one's caches.

    Each cache subscribes to a topic; its listener bumps its ``Generations`` and drops or
    reloads what is stale. Listeners run synchronously, in the order they subscribed."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {}

    def subscribe(self, topic: str, listener: Listener) -> None:
        self._listeners.setdefault(topic, []).append(listener)

    def changed(self, topic: str, tenant: str | None) -> None:
        """Another process changed ``topic`` state of ``tenant`` (None: of any tenant)."""
        for listener in self._listeners.get(topic, []):
            listener(tenant)


async def _nothing() -> None:
    return None


async def listen(store: EntityStore, bus: Invalidations) -> Callable[[], Awaitable[None]]:
    """Start feeding ``bus`` with the announcements of the other processes on ``store``'s
    database, before any cache loads (rule 1). Returns the step that stops it.

    On PostgreSQL each node announces its writes with NOTIFY (``storage.postgres.listen``);
    a node skips its own, which its writes already applied. After a lost connection the
    node reports ``"*"`` on every channel: every tenant of every topic. Other stores serve one
    process: nothing to listen to."""
    from urbanos.storage.postgres import PostgresStore

    if not isinstance(store, PostgresStore):
        return _nothing
    from urbanos.storage.postgres import listen as pg

    node = pg.node_for(store)

    def feed(topic: str) -> Callable[[str], None]:
        def handle(payload: str) -> None:
            origin, tenant = pg.parse_announcement(payload)
            if tenant is None:
                bus.changed(topic, None)
            elif origin != node.node_id:  # this node's own writes keep its caches current
                bus.changed(topic, tenant)

        return handle

    node.on(pg.SUBSCRIPTIONS_CHANNEL, feed(SUBSCRIPTIONS))
    node.on(pg.CONTEXTS_CHANNEL, feed(CONTEXTS))
    node.on(pg.ACCESS_CHANNEL, feed(ACCESS))
    node.on(pg.REGISTRATIONS_CHANNEL, feed(REGISTRATIONS))
    await node.start()
    return node.stop
