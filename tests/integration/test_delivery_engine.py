"""The delivery engine on real stores, with real HTTP receivers on 127.0.0.1.

The subscription side is a small stand-in (``fake_subscriptions``); the outbox, the
workers, the senders and the receivers are the real ones. Every store with an outbox runs
them: memory, SQLite and PostgreSQL (skipped with ``URBANOS_TEST_POSTGRES=0``; one database
per session, emptied after each test as in tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests.conftest import reset_postgres
from tests.integration.fake_subscriptions import FakeSubscriptions
from tests.integration.receiver import WAIT, Receiver, entity_ids
from urbanos.errors import AlreadyExists
from urbanos.outbound import OutboundPolicy
from urbanos.services.entities import EntityService
from urbanos.settings import Settings
from urbanos.storage import Stores, open_stores
from urbanos.storage.base import EntityStore, Write
from urbanos.types import JSONObject
from urbanos.workers import Workers, start_workers

X = "https://ex.org/"
FAST = Settings(notify_backoff=0.05, notify_backoff_max=0.2, notify_timeout=2.0,
                notify_max_attempts=4)


def entity(n: int, value: object = 1) -> JSONObject:
    return {"id": f"urn:e:{n}", "type": [X + "T"],
            "attrs": {X + "v": [{"type": "Property", "value": value}]}}


@dataclass
class Rig:
    store: EntityStore
    subs: FakeSubscriptions
    workers: Workers
    entities: EntityService

    @property
    def engine(self):  # noqa: ANN201 - the engine the workers run
        assert self.workers.engine is not None
        return self.workers.engine


#: opens new stores on the same data each call (a restart of the process)
Reopen = Callable[[], Stores]


def store_factory(request: pytest.FixtureRequest, kind: str, path: Path) -> Iterator[Reopen]:
    """Stores of ``kind`` that share their data; PostgreSQL's is emptied afterwards."""
    if kind == "memory":
        yield lambda: open_stores("memory://")
    elif kind == "sqlite":
        yield lambda: open_stores(f"sqlite:///{path}/u.db")
    else:
        url: str = request.getfixturevalue("postgres_database")
        yield lambda: open_stores(url)
        reset_postgres(url)


@pytest.fixture(params=["sqlite", "postgres"])
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Reopen]:
    """A store that keeps its outbox across a restart."""
    yield from store_factory(request, request.param, tmp_path)


async def start(stores: Stores, subs: FakeSubscriptions, settings: Settings = FAST,
                policy: OutboundPolicy | None = None) -> Rig:
    for tenant in ("", "city"):  # the SQL outboxes record only subscribed tenants' writes
        with contextlib.suppress(AlreadyExists):
            await stores.subscriptions.insert(
                tenant, {"id": "urn:ngsi-ld:Subscription:rig", "type": "Subscription"}
            )
    workers = await start_workers(settings, stores.outbox, subs, policy or OutboundPolicy())
    return Rig(stores.entities, subs, workers, EntityService(stores.entities))


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Reopen]:
    yield from store_factory(request, request.param, tmp_path)


@pytest.fixture
async def rig(reopen: Reopen) -> AsyncIterator[Rig]:
    store = reopen()
    await store.open()
    r = await start(store, FakeSubscriptions())
    yield r
    await r.workers.stop()
    await store.close()


async def test_a_write_is_notified_with_its_headers(rig: Rig, receiver: Receiver) -> None:
    rig.subs.add("urn:s:1", f"{receiver.base}/ok", tenant="city",
                 receiver_info=(("X-Key", "v"),))
    await rig.entities.create("city", entity(1))
    [got] = await receiver.await_("/ok")
    body = got.json()
    assert body["subscriptionId"] == "urn:s:1" and body["data"][0]["id"] == "urn:e:1"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["NGSILD-Tenant"] == "city"
    assert got.headers["X-Key"] == "v"
    assert 'rel="http://www.w3.org/ns/json-ld#context"' in got.headers["Link"]
    assert await rig.engine.idle()
    assert rig.subs.of("urn:s:1") == [True]


async def test_every_kind_of_write_is_a_change(rig: Rig, receiver: Receiver) -> None:
    rig.subs.add("urn:s:1", f"{receiver.base}/all")
    await rig.entities.create("", entity(1))
    await rig.entities.replace("", "urn:e:1", entity(1, 2))
    await rig.store.apply("", [Write("put", f"urn:e:{n}", entity(n)) for n in (2, 3)])
    await rig.entities.delete("", "urn:e:1")
    got = await receiver.await_("/all", 5)
    assert [r.json()["data"][0]["id"] for r in got] == [f"urn:e:{n}" for n in (1, 1, 2, 3, 1)]
    assert got[-1].json()["data"][0].get("deleted") is True


async def test_a_failed_write_records_no_change(rig: Rig, receiver: Receiver) -> None:
    rig.subs.add("urn:s:1", f"{receiver.base}/x")
    await rig.entities.create("", entity(1))
    with pytest.raises(AlreadyExists):
        await rig.entities.create("", entity(1))
    await receiver.await_("/x", 1)
    assert await rig.engine.idle()
    assert len(receiver.on("/x")) == 1


async def test_failures_are_retried_with_backoff(rig: Rig, receiver: Receiver) -> None:
    rig.subs.add("urn:s:1", f"{receiver.base}/flaky/2/a")
    await rig.entities.create("", entity(1))
    got = await receiver.await_("/flaky", 3)
    assert len(got) == 3
    assert await rig.engine.idle()
    assert rig.subs.of("urn:s:1") == [False, False, True]
    gaps = [b.at - a.at for a, b in zip(got, got[1:], strict=False)]
    assert all(g >= 0.03 for g in gaps)


async def test_give_up_after_max_attempts(rig: Rig, receiver: Receiver) -> None:
    rig.subs.add("urn:s:1", f"{receiver.base}/fail")
    await rig.entities.create("", entity(1))
    assert await rig.engine.idle()
    assert len(receiver.on("/fail")) == FAST.notify_max_attempts
    assert rig.subs.of("urn:s:1") == [False] * FAST.notify_max_attempts


@pytest.mark.parametrize("status", [400, 302])
async def test_client_errors_and_redirects_are_not_retried(
    rig: Rig, receiver: Receiver, status: int
) -> None:
    rig.subs.add("urn:s:1", f"{receiver.base}/status/{status}")
    await rig.entities.create("", entity(1))
    assert await rig.engine.idle()
    assert len(receiver.on("/status")) == 1
    [report] = rig.subs.reports
    assert not report.ok and str(status) in (report.error or "")


async def test_a_deleted_subscription_gets_no_retries(rig: Rig, receiver: Receiver) -> None:
    rig.subs.add("urn:s:1", f"{receiver.base}/fail")
    await rig.entities.create("", entity(1))
    await receiver.await_("/fail", 1)
    del rig.subs.subs[("", "urn:s:1")]
    assert await rig.engine.idle()
    assert len(receiver.on("/fail")) <= 2


async def test_a_hanging_receiver_delays_neither_writes_nor_others(
    reopen: Reopen, receiver: Receiver, other: Receiver
) -> None:
    """While one receiver holds every request (and its sends never time out), the writes
    are acknowledged and the other receiver gets all its notifications; released, the
    held one gets its own."""
    store = reopen()
    await store.open()
    rig = await start(store, FakeSubscriptions(), replace(FAST, notify_timeout=600.0))
    try:
        rig.subs.add("urn:s:held", f"{receiver.base}/held")
        rig.subs.add("urn:s:ok", f"{other.base}/ok")
        await rig.entities.create("", entity(0))
        assert await receiver.await_("/held", 1, timeout=WAIT), "nothing was sent"
        async with asyncio.timeout(WAIT):  # a write waiting for the held send never ends
            for n in range(1, 20):
                await rig.entities.create("", entity(n))
        got = await other.await_("/ok", 20, timeout=WAIT)
        assert entity_ids(got) == {f"urn:e:{n}" for n in range(20)}
        # the held endpoint has at most `concurrency` sends open
        assert len(receiver.on("/held")) <= FAST.notify_concurrency
        receiver.release()  # only now: the writes and the other's notifications came first
        assert entity_ids(await receiver.await_("/held", 20, timeout=WAIT)) == entity_ids(got)
    finally:
        receiver.release()
        await rig.workers.stop()
        await store.close()


async def test_memory_holds_a_bounded_number_per_endpoint(durable: Reopen) -> None:
    store = durable()
    await store.open()
    subs = FakeSubscriptions()
    settings = Settings(notify_queue=3, notify_concurrency=1, notify_timeout=30.0)
    with Receiver() as hang, Receiver() as ok:
        subs.add("urn:s:hang", f"{hang.base}/hang")
        subs.add("urn:s:ok", f"{ok.base}/ok")
        rig = await start(store, subs, settings)
        for n in range(10):
            await rig.entities.create("", entity(n))
        assert len(await ok.await_("/ok", 10)) == 10
        lanes = rig.engine._lanes  # noqa: SLF001 - the bound is internal by nature
        assert max(lane.held for lane in lanes.values()) <= 3
        outbox = rig.workers.outbox
        assert outbox is not None
        for _ in range(100):  # the last "ok" may still be being marked done
            if (await outbox.counts())[1] == 10:
                break
            await asyncio.sleep(0.02)
        assert await outbox.counts() == (0, 10)  # the hanging endpoint's wait on disk
        hang.stop()
        await rig.workers.stop()
    await store.close()


async def test_strict_policy_refuses_at_send_time(tmp_path: Path, receiver: Receiver) -> None:
    store = open_stores("memory://")
    subs = FakeSubscriptions()
    subs.add("urn:s:1", f"{receiver.base}/local")
    subs.add("urn:s:2", "http://169.254.169.254/latest")
    rig = await start(store, subs, policy=OutboundPolicy(mode="strict"))
    await rig.entities.create("", entity(1))
    assert await rig.engine.idle()
    assert receiver.on("/local") == []
    assert [r.ok for r in subs.reports] == [False, False]
    assert all("refused" in (r.error or "") for r in subs.reports)
    await rig.workers.stop()


async def test_the_broker_never_notifies_itself(receiver: Receiver) -> None:
    subs = FakeSubscriptions()
    subs.add("urn:s:1", f"http://localhost:{receiver.port}/self")
    rig = await start(open_stores("memory://"), subs, Settings(port=receiver.port))
    await rig.entities.create("", entity(1))
    assert await rig.engine.idle()
    assert receiver.on("/self") == []
    assert "itself" in (subs.reports[0].error or "")
    await rig.workers.stop()


async def test_periodic_notifications_are_sent(rig: Rig, receiver: Receiver) -> None:
    rig.subs.add("urn:s:p", f"{receiver.base}/periodic")
    rig.subs.periodic.append(("", "urn:s:p"))
    [got] = await receiver.await_("/periodic", 1, timeout=3)
    assert got.json()["data"][0]["id"] == "urn:periodic"


async def test_pending_work_survives_a_restart(durable: Reopen) -> None:
    """Stopped while the receiver is down: the next process delivers it."""
    with Receiver() as first:
        port = first.port
    store = durable()
    await store.open()
    subs = FakeSubscriptions()
    subs.add("urn:s:1", f"http://127.0.0.1:{port}/later")
    slow = Settings(notify_backoff=0.3, notify_backoff_max=0.3, notify_max_attempts=100)
    rig = await start(store, subs, slow)
    await rig.entities.create("", entity(1))
    await asyncio.sleep(0.5)
    await rig.workers.stop()
    await store.close()

    with Receiver(port) as back:
        store = durable()
        await store.open()
        rig = await start(store, subs, slow)
        got = await back.await_("/later", 1)
        assert got and got[0].json()["data"][0]["id"] == "urn:e:1"
        assert await rig.engine.idle()
        await rig.workers.stop()
        await store.close()


async def test_changes_recorded_before_start_are_picked_up(durable: Reopen) -> None:
    """A change that committed but was never matched (crash) is matched after restart."""
    store = durable()
    await store.open()
    subs = FakeSubscriptions()
    rig = await start(store, subs)
    await rig.workers.stop()  # the outbox hook stays registered: writes still record
    await rig.entities.create("", entity(7))
    await store.close()
    with Receiver() as receiver:
        subs.add("urn:s:1", f"{receiver.base}/late")
        store = durable()
        await store.open()
        rig = await start(store, subs)
        assert len(await receiver.await_("/late", 1)) == 1
        await rig.workers.stop()
        await store.close()


async def test_unfinished_sends_that_cannot_be_released_are_logged(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """At shutdown, sends still in progress are handed back to the store; when the store is
    gone that fails, and says so (the next process's open returns them to pending)."""
    stores = open_stores(f"sqlite:///{tmp_path}/u.db")
    await stores.open()
    store = stores.entities
    rig = await start(stores, FakeSubscriptions(), Settings(notify_timeout=30.0))
    try:
        rig.subs.add("urn:s:1", f"{receiver.base}/hang")
        await rig.entities.create("", entity(1))
        await receiver.await_("/hang", 1)
        await store.close()  # the store goes away under the send in progress
        with caplog.at_level(logging.ERROR, logger="urbanos.notifications"):
            await rig.engine.aclose(grace=0.1)
        assert any(r.getMessage() == "releasing 1 unfinished notifications failed"
                   and r.exc_info for r in caplog.records)
    finally:
        await rig.workers.stop()
        await store.close()
