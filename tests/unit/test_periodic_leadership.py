"""Periodic notifications on several nodes: only the leader fires them, and a node that
takes over continues the schedule the stored lastNotification records (two services on
shared memory stores stand for two nodes on one database)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from tests.integration.fake_subscriptions import FakeSubscriptions
from urbanos.core.entity import expand_entity
from urbanos.core.jsonld import core_term_map
from urbanos.outbound import OutboundPolicy
from urbanos.services.contexts import ContextService
from urbanos.services.notifications import PERIODIC_JOB, NotificationEngine
from urbanos.services.senders import HttpSender
from urbanos.services.subscriptions import SubscriptionService
from urbanos.storage.base import Write
from urbanos.storage.memory import MemoryStore
from urbanos.storage.memory_outbox import MemoryOutbox
from urbanos.storage.subscriptions import MemorySubscriptionStore

TERMS = core_term_map()


def at(seconds: float) -> str:
    return f"2030-01-01T00:00:{seconds:06.3f}Z"


async def building(store: MemoryStore) -> None:
    body = {"id": "urn:b:1", "type": "Building"}
    await store.apply("", [Write("put", "urn:b:1", expand_entity(body, TERMS, at(0)))])


@dataclass
class Cluster:
    a: SubscriptionService
    b: SubscriptionService


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    store, subs = MemoryStore(), MemorySubscriptionStore()
    contexts = ContextService(OutboundPolicy())

    def node() -> SubscriptionService:
        return SubscriptionService(subs, contexts, lambda: at(0), entities=store)

    a = node()
    await building(store)
    await a.create("", {"id": "urn:s:p", "type": "Subscription", "timeInterval": 5,
                        "entities": [{"type": "Building"}],
                        "notification": {"endpoint": {"uri": "http://receiver/p"}}},
                   TERMS, None)
    b = node()
    await b.open()
    yield Cluster(a, b)
    await contexts.aclose()


async def test_a_node_taking_over_continues_from_the_stored_last_notification(
    cluster: Cluster,
) -> None:
    a, b = cluster.a, cluster.b
    assert len(await a.periodic_due(at(5))) == 1
    await a.delivered("", "urn:s:p", ok=True, at=at(5.5))
    # A dies; B leads from now on: its first due time is lastNotification + timeInterval
    assert await b.periodic_due(at(6)) == []
    assert await b.periodic_due(at(10)) == []
    assert len(await b.periodic_due(at(10.5))) == 1


async def test_after_a_gap_the_schedule_in_memory_is_not_trusted(cluster: Cluster) -> None:
    """A fired at 5 and then lost the lead; B fired at 15. A, leading again at 17, must not
    fire on its own stale schedule (due at 10): the next one is due at 20."""
    a, b = cluster.a, cluster.b
    assert len(await a.periodic_due(at(5))) == 1
    await a.delivered("", "urn:s:p", ok=True, at=at(5))
    await b.delivered("", "urn:s:p", ok=True, at=at(15))
    assert await a.periodic_due(at(17)) == []
    assert len(await a.periodic_due(at(20))) == 1


async def test_a_subscription_another_node_created_is_fired_by_this_one() -> None:
    """The tenant's subscriptions were never loaded here: the invalidation (NOTIFY) that
    announced them is enough for the leader to fire them."""
    store, subs = MemoryStore(), MemorySubscriptionStore()
    async with ContextService(OutboundPolicy()) as contexts:
        here = SubscriptionService(subs, contexts, lambda: at(0), entities=store)
        elsewhere = SubscriptionService(subs, contexts, lambda: at(0), entities=store)
        await here.open()
        await building(store)
        await elsewhere.create("", {"type": "Subscription", "timeInterval": 2,
                                    "entities": [{"type": "Building"}],
                                    "notification": {"endpoint": {"uri": "http://r/p"}}},
                               TERMS, None)
        assert await here.periodic_due(at(3)) == []
        here.invalidate("")
        assert len(await here.periodic_due(at(3))) == 1


async def test_only_the_leader_runs_periodic_notifications() -> None:
    leading = False
    asked: list[str] = []

    async def leader(job: str) -> bool:
        asked.append(job)
        return leading

    fake = FakeSubscriptions()
    fake.add("urn:s:p", "http://receiver/p")
    fake.periodic.append(("", "urn:s:p"))
    sender = HttpSender(OutboundPolicy(), timeout=1)
    engine = NotificationEngine(MemoryOutbox(MemoryStore()), fake, sender, leader=leader)
    task = asyncio.create_task(engine.run_periodic())
    try:
        await asyncio.sleep(0.2)
        assert asked == [PERIODIC_JOB] and fake.periodic  # asked, and not run
        leading = True
        await asyncio.sleep(1.0)
        assert len(asked) == 2 and not fake.periodic  # the next tick ran it
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sender.aclose()
