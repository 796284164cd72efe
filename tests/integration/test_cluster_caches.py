"""A node's subscription indexes stay true to the database while other nodes change it and
while its own listener connection is lost (``services.cluster``): one rule for every cache.

Nodes run in this process on one real PostgreSQL database: a node is the app (its real
lifespan, listener and workers) on a ``PostgresStore`` of its own. The moment that matters
(a node reading the subscriptions) is held open by letting the store's read wait for the
test, so the interleavings below happen every time, not by chance.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import psycopg
import pytest

from tests.conftest import _lifespan, postgres_enabled
from urbanos.core.change import Change
from urbanos.core.entity import expand_entity
from urbanos.core.jsonld import core_term_map
from urbanos.http.app import create_app
from urbanos.http.context import Services
from urbanos.outbound import OutboundPolicy
from urbanos.services.contexts import ContextService
from urbanos.services.subscriptions import SubscriptionService
from urbanos.settings import Settings
from urbanos.storage import Stores, open_stores
from urbanos.storage.postgres import PostgresStore, listen
from urbanos.storage.postgres.subscriptions import PostgresSubscriptionStore

pytestmark = pytest.mark.skipif(not postgres_enabled(), reason="needs PostgreSQL")

TERMS = core_term_map()
WAIT = 20.0  # an upper bound for what happens at once: never reached when the code is right


def subscription(sid: str) -> dict[str, Any]:
    return {"id": sid, "type": "Subscription", "entities": [{"type": "Lamp"}],
            "notification": {"endpoint": {"uri": "http://127.0.0.1:9/n"}}}


def lamp_change() -> Change:
    lamp = expand_entity({"id": "urn:ngsi-ld:Lamp:1", "type": "Lamp",
                          "level": {"type": "Property", "value": 1}}, TERMS,
                         "2030-01-01T00:00:00.000Z")
    return Change("", lamp["id"], None, lamp, "2030-01-01T00:00:00.000Z")


async def fired(subs: SubscriptionService) -> set[str]:
    return {o.subscription_id for o in await subs.notifications_for(lamp_change())}


class HeldRead:
    """The next read of every subscription (``load()``) returns only once released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.task: asyncio.Task[Any] | None = None
        original = PostgresSubscriptionStore.load
        held = self

        async def load(store: PostgresSubscriptionStore, tenant: str | None = None) -> Any:
            rows = await original(store, tenant)
            if tenant is None and held.task is None:
                held.task = asyncio.current_task()
                held.entered.set()
                await held.release.wait()
            return rows

        monkeypatch.setattr(PostgresSubscriptionStore, "load", load)

    async def finish(self) -> None:
        """Let the held read return and wait for the task that read to end."""
        self.release.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, WAIT)


class Node:
    """Another node, reduced to what writes subscriptions (its NOTIFYs are real)."""

    def __init__(self, url: str) -> None:
        self.stores: Stores = open_stores(url, readers=1)
        self.store = cast(PostgresStore, self.stores.entities)
        self.subs: SubscriptionService | None = None

    async def __aenter__(self) -> SubscriptionService:
        await self.stores.open()
        settings = Settings()
        contexts = ContextService(
            OutboundPolicy.from_strings(settings.outbound_policy, settings.outbound_allow),
            store=self.store.contexts,
        )
        self.subs = SubscriptionService(self.stores.subscriptions, contexts,
                                        entities=self.store)
        return self.subs

    async def __aexit__(self, *exc: object) -> None:
        assert self.subs is not None
        await self.subs.contexts.aclose()
        await self.stores.close()


def heard_on(store: PostgresStore) -> asyncio.Event:
    """Set once ``store``'s node has handled another node's subscription announcement
    (handlers run in order: the node's own cache handler registered later has run too)."""
    heard = asyncio.Event()
    node = listen.node_for(store)

    def handle(payload: str) -> None:
        origin, tenant = listen.parse_announcement(payload)
        if tenant is not None and origin != node.node_id:
            heard.set()

    node.on(listen.SUBSCRIPTIONS_CHANNEL, handle)
    return heard


def services_of(app: Any) -> Services:
    while not hasattr(app, "state"):
        app = app.app
    return app.state.services  # type: ignore[no-any-return]


@pytest.fixture
async def node_b(pg_url: str) -> AsyncIterator[tuple[PostgresStore, Callable[[], Any]]]:
    """Node B's store and a function that starts B (the app's lifespan) on it."""
    stores = open_stores(pg_url)
    store = cast(PostgresStore, stores.entities)
    app = create_app(Settings(store=pg_url), stores=stores)
    life = _lifespan(app)
    started: list[bool] = []

    async def start() -> Services:
        await life.__aenter__()
        started.append(True)
        return services_of(app)

    yield store, start
    if started:
        await life.__aexit__(None, None, None)


def listener_pid(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
            " AND datname = current_database()",
            (f"urbanos node pid={os.getpid()}",),
        ).fetchall()
    assert len(rows) == 1, rows
    return int(rows[0][0])


async def test_a_node_started_while_another_creates_a_subscription_has_it(
    pg_url: str, node_b: tuple[PostgresStore, Callable[[], Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A creates S1 after B has read the subscriptions at start and before B serves: B
    hears of it (it listens before reading), and its index has S1."""
    store_b, start_b = node_b
    async with Node(pg_url) as a:
        await a.create("", subscription("urn:s:0"), TERMS, None)
        heard = heard_on(store_b)
        held = HeldRead(monkeypatch)
        starting = asyncio.create_task(start_b())
        await asyncio.wait_for(held.entered.wait(), WAIT)
        await a.create("", subscription("urn:s:1"), TERMS, None)
        await asyncio.wait_for(heard.wait(), WAIT)
        held.release.set()  # the read was B's start's
        b = await asyncio.wait_for(starting, WAIT)
        assert b.subscriptions is not None
        assert await fired(b.subscriptions) == {"urn:s:0", "urn:s:1"}


@pytest.mark.parametrize("where", ["here", "elsewhere"])
async def test_a_subscription_deleted_during_a_reconnection_never_fires_again(
    pg_url: str, node_b: tuple[PostgresStore, Callable[[], Any]],
    monkeypatch: pytest.MonkeyPatch, where: str,
) -> None:
    """B's listener connection is cut; B listens again and reloads every index; the
    subscription is deleted (on B, or on A) while that reload reads the old rows."""
    store_b, start_b = node_b
    heard = heard_on(store_b)
    b = await start_b()
    subs = b.subscriptions
    assert subs is not None
    await subs.create("", subscription("urn:s:gone"), TERMS, None)
    await subs.create("", subscription("urn:s:kept"), TERMS, None)
    assert await fired(subs) == {"urn:s:gone", "urn:s:kept"}
    held = HeldRead(monkeypatch)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (listener_pid(pg_url),))
    await asyncio.wait_for(held.entered.wait(), WAIT)  # B reconnected and reloads
    if where == "here":
        await subs.delete("", "urn:s:gone")
    else:
        async with Node(pg_url) as a:
            await a.delete("", "urn:s:gone")
        await asyncio.wait_for(heard.wait(), WAIT)
    await held.finish()
    assert await fired(subs) == {"urn:s:kept"}
    assert await fired(subs) == {"urn:s:kept"}  # and after the index is read again
