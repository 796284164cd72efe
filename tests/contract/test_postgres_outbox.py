"""The PostgreSQL outbox shared by several nodes: a change or a delivery is claimed by one
node at a time, and a dead node's claims are taken over at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from tests.conftest import reset_postgres
from urbanos.storage.base import Write
from urbanos.storage.outbox import Envelope, NewDelivery, Room
from urbanos.storage.postgres import PostgresStore
from urbanos.storage.postgres.listen import node_for
from urbanos.storage.postgres.outbox import PostgresOutbox

Node = tuple[PostgresStore, PostgresOutbox]


@pytest.fixture
async def make_node(postgres_database: str) -> AsyncIterator[Callable[[], object]]:
    opened: list[Node] = []

    async def make() -> Node:
        store = PostgresStore(postgres_database, pool_size=2)
        await store.open()
        if not opened:  # someone to notify: the default tenant's changes are recorded
            await subscribe(store, "")
        outbox = PostgresOutbox(store)
        await outbox.open()
        opened.append((store, outbox))
        return store, outbox

    yield make
    for store, _ in opened:
        await node_for(store).stop()
        await store.close()
    reset_postgres(postgres_database)


async def subscribe(store: PostgresStore, tenant: str) -> None:
    async with store.db.transaction() as conn:
        await conn.execute(
            "INSERT INTO urbanos.subscriptions (tenant, id, doc) VALUES (%s, %s, '{}')",
            (tenant, f"urn:ngsi-ld:Subscription:{tenant or 'default'}"),
        )


def lamp(n: int) -> Write:
    return Write("put", f"urn:ngsi-ld:Lamp:{n}", {"id": f"urn:ngsi-ld:Lamp:{n}", "type": ["T"], "attrs": {}})


def new(n: int, *, claimed: bool = False) -> NewDelivery:
    return NewDelivery("", f"urn:s:{n}", "http://r", Envelope("http://r/n", {"A": "b"}, b"{}"),
                       claimed)


def room() -> Room:
    return Room(100, {}, 100)


async def test_changes_are_claimed_by_one_node(make_node: Callable[[], object]) -> None:
    (store, a), (_, b) = await make_node(), await make_node()  # type: ignore[misc]
    await store.apply("", [lamp(1), lamp(2)])
    got = await a.changes(10)
    assert [c.entity_id for c in got] == ["urn:ngsi-ld:Lamp:1", "urn:ngsi-ld:Lamp:2"]
    assert got[1].after == lamp(2).entity and got[0].before is None
    assert await b.changes(10) == []
    assert [c.seq for c in await a.changes(10)] == [c.seq for c in got]  # not consumed yet
    claimed = await a.consume([c.seq for c in got], [new(1, claimed=True), new(2)], 0.0)
    assert [d.subscription_id for d in claimed] == ["urn:s:1"]
    assert claimed[0].envelope == Envelope("http://r/n", {"A": "b"}, b"{}")
    assert await a.changes(10) == [] and await a.counts() == (0, 2)
    taken = await b.claim_due(1.0, room(), ())
    assert [d.subscription_id for d in taken] == ["urn:s:2"]
    assert await a.claim_due(1.0, room(), ()) == []


async def test_a_dead_nodes_claims_are_taken_over(make_node: Callable[[], object]) -> None:
    (store, a), (_, b) = await make_node(), await make_node()  # type: ignore[misc]
    await store.apply("", [lamp(1)])
    assert len(await a.changes(10)) == 1
    await a.add([new(1, claimed=True)], 0.0)
    await node_for(store).stop()  # a's liveness lock goes with its connection...
    taken: list[str] = []
    for _ in range(100):  # ...once the server has ended that session, a moment later
        taken = [c.entity_id for c in await b.changes(10)]
        if taken:
            break
        await asyncio.sleep(0.05)
    assert taken == ["urn:ngsi-ld:Lamp:1"]
    assert [d.subscription_id for d in await b.claim_due(1.0, room(), ())] == ["urn:s:1"]


async def test_retry_release_and_done(make_node: Callable[[], object]) -> None:
    (_, a), (_, b) = await make_node(), await make_node()  # type: ignore[misc]
    [d] = await a.add([new(1, claimed=True)], 0.0)
    await a.retry(d.id, 1, 5.0, "503")
    assert await b.claim_due(1.0, room(), ()) == []  # not due yet
    [again] = await b.claim_due(5.0, room(), ["other"])
    assert again.attempts == 1
    assert await b.claim_due(5.0, room(), ()) == []
    await b.release([again.id])
    assert await a.claim_due(5.0, room(), ["http://r"]) == []  # lane skipped
    [last] = await a.claim_due(5.0, room(), ())
    await a.done([last.id])
    assert await a.counts() == (0, 0)


async def test_a_tenant_without_subscriptions_records_no_change(
    make_node: Callable[[], object],
) -> None:
    """Nobody could be notified of them: the writes of a tenant with no subscription leave
    no change behind, and once it has one its writes are recorded again."""
    store, outbox = await make_node()  # type: ignore[misc]
    await store.apply("quiet", [lamp(1)])
    assert await outbox.changes(10) == []
    await subscribe(store, "quiet")
    await store.apply("quiet", [lamp(2)])
    [change] = await outbox.changes(10)
    assert (change.tenant, change.entity_id) == ("quiet", "urn:ngsi-ld:Lamp:2")


async def test_done_and_retry_leave_a_claim_taken_over_alone(
    make_node: Callable[[], object],
) -> None:
    """A node that lost its liveness lock (its listener reconnected) while another took
    its claim over: its late outcome neither deletes the row nor counts as recorded."""
    (store, a), (_, b) = await make_node(), await make_node()  # type: ignore[misc]
    [d] = await a.add([new(1, claimed=True)], 0.0)
    await node_for(store).stop()
    taken: list[int] = []
    for _ in range(100):
        taken = [x.id for x in await b.claim_due(1.0, room(), ())]
        if taken:
            break
        await asyncio.sleep(0.05)
    assert taken == [d.id]
    assert await a.done([d.id]) == []
    assert await a.retry(d.id, 1, 5.0, "503") is False
    assert await b.counts() == (0, 1)
    assert await b.retry(d.id, 1, 0.5, "503") is True
    [again] = await b.claim_due(1.0, room(), ())
    assert await b.done([again.id]) == [again.id]


async def test_one_node_at_a_time_holds_a_subscriptions_deliveries(
    make_node: Callable[[], object],
) -> None:
    (_, a), (_, b) = await make_node(), await make_node()  # type: ignore[misc]
    [first] = await a.add([new(1, claimed=True)], 0.0)
    # b records the next one of the same subscription: a holds one, so b may not claim it
    added = await b.add([new(1, claimed=True), new(2, claimed=True)], 0.0)
    assert [d.subscription_id for d in added] == ["urn:s:2"]
    assert await b.claim_due(1.0, room(), ()) == []
    assert await a.done([first.id]) == [first.id]
    [second] = await b.claim_due(1.0, room(), ())
    assert second.subscription_id == "urn:s:1" and second.id > first.id
    # and now a may not record one claimed while b holds the subscription's
    assert await a.add([new(1, claimed=True)], 2.0) == []


async def test_changes_are_claimed_in_order_across_nodes(
    make_node: Callable[[], object],
) -> None:
    (store, a), (_, b) = await make_node(), await make_node()  # type: ignore[misc]
    await store.apply("", [lamp(1)])
    await store.apply("", [lamp(2)])
    [one] = await a.changes(1)
    assert one.entity_id == "urn:ngsi-ld:Lamp:1"
    assert await b.changes(10) == []  # not past a change a holds
    await a.consume([one.seq], [], 0.0)
    assert [c.entity_id for c in await b.changes(10)] == ["urn:ngsi-ld:Lamp:2"]
