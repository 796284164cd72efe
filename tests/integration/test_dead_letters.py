"""A change is never dropped: a subscription whose matching fails does not hold back the
others, and its notification is kept as a dead letter (listed at /admin/dead-letters,
counted in /metrics) and retried with backoff until it is sent. Nor is a notification: one
whose sends are exhausted, or refused with a 4xx, is kept as a ``delivery`` dead letter
with what would have been sent, until an operator retries or discards it.

The app runs in-process on every store (``store_url``) with a real HTTP receiver; the
matching fault is injected into the store: reading the entities a ``join`` subscription
links to raises while the target's id is in ``broken``. The delivery faults are the
receiver's own answers (``/fail``: 500, ``/flaky/N``: 503 N times, ``/status/NNN``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import _lifespan
from tests.integration.receiver import Receiver
from urbanos.http.app import create_app
from urbanos.settings import Settings
from urbanos.storage import open_stores
from urbanos.storage.outbox import DeadDelivery, Envelope, NewDelivery
from urbanos.types import JSONObject

BROKEN = "urn:ngsi-ld:Pole:broken"
ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"


@dataclass
class Broker:
    client: httpx.AsyncClient
    admin: httpx.AsyncClient
    broken: set[str] = field(default_factory=set)
    #: reads of a broken entity: one per matching attempt of the failing subscription
    failed_reads: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def open_broker(store_url: str, **settings: Any) -> AsyncIterator[Broker]:
    """An app on ``store_url`` whose store fails to read the entities in ``broken``."""
    stores = open_stores(store_url)
    store = stores.entities
    get_many = store.get_many
    broken: set[str] = set()
    failed_reads: list[str] = []

    async def failing_get_many(tenant: str, ids: list[str]) -> dict[str, JSONObject]:
        hit = broken.intersection(ids)
        if hit:
            failed_reads.extend(hit)
            raise RuntimeError(f"injected: reading {sorted(hit)} failed")
        return await get_many(tenant, ids)

    store.get_many = failing_get_many  # type: ignore[method-assign]
    app = create_app(Settings(store=store_url, **settings), stores=stores)
    transport = httpx.ASGITransport(app=app)
    async with _lifespan(app), \
            httpx.AsyncClient(transport=transport, base_url="http://broker/ngsi-ld/v1/") as api, \
            httpx.AsyncClient(transport=transport, base_url="http://broker/") as admin:
        yield Broker(api, admin, broken, failed_reads)


@pytest.fixture
async def broker(store_url: str) -> AsyncIterator[Broker]:
    """Dead letters retried after ~20 s at the earliest: the test requeues them itself."""
    async with open_broker(store_url, notify_backoff=5.0) as b:
        yield b


@pytest.fixture
async def fast_broker(store_url: str) -> AsyncIterator[Broker]:
    """Dead letters retried after a fraction of a second, then ever more slowly."""
    async with open_broker(store_url, notify_backoff=0.05, notify_backoff_max=0.5) as b:
        yield b


def subscription(sid: str, uri: str, **extra: Any) -> dict[str, Any]:
    notification: dict[str, Any] = {"endpoint": {"uri": uri, "accept": "application/json"}}
    notification.update(extra.pop("notification", {}))
    return {"id": sid, "type": "Subscription", "entities": [{"type": "Lamp"}],
            "notification": notification, **extra}


def lamp(n: int) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:Lamp:{n}", "type": "Lamp",
            "level": {"type": "Property", "value": n},
            "on": {"type": "Relationship", "object": BROKEN}}


async def subscribe(b: Broker, body: dict[str, Any]) -> None:
    r = await b.client.post("subscriptions", json=body)
    assert r.status_code == 201, r.text


async def dead_letters(b: Broker, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The listing once it has ``count`` entries (or the timeout has passed)."""
    deadline = time.monotonic() + timeout
    while True:
        r = await b.admin.get("admin/dead-letters")
        assert r.status_code == 200, r.text
        if len(r.json()) == count or time.monotonic() > deadline:
            return r.json()  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)


async def gauge(b: Broker, kind: str = "matching") -> float:
    r = await b.admin.get("metrics")
    assert r.status_code == 200
    [line] = [x for x in r.text.splitlines()
              if x.startswith(f'urbanos_notification_dead_letters{{kind="{kind}"}} ')]
    return float(line.split()[1])


async def test_a_failing_subscription_is_dead_lettered_and_the_others_are_notified(
    broker: Broker, receiver: Receiver, other: Receiver
) -> None:
    await subscribe(broker, subscription("urn:s:join", f"{receiver.base}/join",
                                         notification={"join": "inline"}))
    await subscribe(broker, subscription("urn:s:plain", f"{other.base}/plain"))
    broker.broken.add(BROKEN)
    assert (await broker.client.post("entities", json=lamp(1))).status_code == 201

    [plain] = await other.await_("/plain", 1)
    assert plain.json()["data"][0]["id"] == "urn:ngsi-ld:Lamp:1"
    [letter] = await dead_letters(broker, 1)
    assert letter["subscriptionId"] == "urn:s:join" and letter["kind"] == "matching"
    assert letter["entityId"] == "urn:ngsi-ld:Lamp:1" and letter["tenant"] == ""
    assert letter["attempts"] == 3 and "injected" in letter["lastError"]
    assert broker.failed_reads == [BROKEN] * 3  # tried three times, then dead-lettered
    assert receiver.on("/join") == []
    assert await gauge(broker) == 1

    broker.broken.clear()
    r = await broker.admin.post(f"admin/dead-letters/{letter['id']}/retry")
    assert r.status_code == 204, r.text
    [joined] = await receiver.await_("/join", 1)
    data = joined.json()["data"][0]
    assert data["id"] == "urn:ngsi-ld:Lamp:1" and data["level"]["value"] == 1
    assert await dead_letters(broker, 0) == []
    assert await gauge(broker) == 0
    assert len(other.on("/plain")) == 1  # the retry notified the failing one only

    r = await broker.admin.post(f"admin/dead-letters/{letter['id']}/retry")
    assert r.status_code == 404 and r.json()["type"] == ERRORS + "ResourceNotFound"
    r = await broker.admin.post("admin/dead-letters/x/retry")
    assert r.status_code == 400 and r.json()["type"] == ERRORS + "BadRequestData"


async def test_a_dead_letter_is_retried_with_backoff_until_it_is_sent(
    fast_broker: Broker, receiver: Receiver
) -> None:
    """Throttled too: the failed attempts did not count as notifications, so the retry
    is not held back by them."""
    b = fast_broker
    await subscribe(b, subscription("urn:s:t", f"{receiver.base}/t", throttling=60,
                                    notification={"join": "inline"}))
    b.broken.add(BROKEN)
    assert (await b.client.post("entities", json=lamp(2))).status_code == 201
    [letter] = await dead_letters(b, 1)
    retried = letter
    deadline = time.monotonic() + 15
    while retried["attempts"] <= 3 and time.monotonic() < deadline:  # the first retry
        [retried] = await dead_letters(b, 1)
        await asyncio.sleep(0.05)
    assert retried["attempts"] == 6 and retried["id"] == letter["id"]
    assert retried["nextAttemptAt"] > letter["nextAttemptAt"]
    b.broken.clear()
    [got] = await receiver.await_("/t", 1, timeout=15)
    assert got.json()["data"][0]["id"] == "urn:ngsi-ld:Lamp:2"
    assert await dead_letters(b, 0) == []


async def test_the_listing_pages_and_checks_its_parameters(broker: Broker) -> None:
    r = await broker.admin.get("admin/dead-letters?limit=2&offset=1")
    assert r.status_code == 200 and r.json() == []
    r = await broker.admin.get("admin/dead-letters?limit=x")
    assert r.status_code == 400 and r.json()["type"] == ERRORS + "BadRequestData"
    r = await broker.admin.get("admin/dead-letters?colour=red")
    assert r.status_code == 400


# --- notifications not delivered -------------------------------------------------------------

@pytest.fixture
async def sending_broker(store_url: str) -> AsyncIterator[Broker]:
    """Two sends per notification, retried after a fraction of a second."""
    async with open_broker(store_url, notify_max_attempts=2, notify_backoff=0.05,
                           notify_backoff_max=0.1) as b:
        yield b


async def write_lamp(b: Broker, n: int) -> None:
    body = {"id": f"urn:ngsi-ld:Lamp:{n}", "type": "Lamp",
            "level": {"type": "Property", "value": n}}
    r = await b.client.post("entities", json=body)
    assert r.status_code == 201, r.text


async def test_an_exhausted_notification_is_dead_lettered_with_what_was_not_sent(
    sending_broker: Broker, receiver: Receiver
) -> None:
    b = sending_broker
    await subscribe(b, subscription("urn:s:fail", f"{receiver.base}/fail/x"))
    await write_lamp(b, 1)
    [letter] = await dead_letters(b, 1)
    assert len(receiver.on("/fail/x")) == 2  # both attempts answered 500, then no more
    assert letter["kind"] == "delivery" and letter["subscriptionId"] == "urn:s:fail"
    assert letter["endpoint"] == f"{receiver.base}/fail/x" and letter["tenant"] == ""
    assert letter["attempts"] == 2 and "500" in letter["lastError"]
    assert letter["failedAt"].endswith("Z")
    sent = receiver.on("/fail/x")[-1].json()
    assert letter["notification"] == sent  # the very body that was refused
    assert sent["subscriptionId"] == "urn:s:fail"
    assert [e["id"] for e in sent["data"]] == ["urn:ngsi-ld:Lamp:1"]
    assert letter["headers"]["Content-Type"] == "application/json"
    assert await gauge(b, "delivery") == 1 and await gauge(b, "matching") == 0
    r = await b.client.get("subscriptions/urn:s:fail")
    assert r.json()["notification"]["timesFailed"] == 2
    assert r.json()["notification"]["status"] == "failed"

    # it waits for an operator: no retry on its own
    await write_lamp(b, 2)
    assert len(await dead_letters(b, 2)) == 2
    assert len(receiver.on("/fail/x")) == 4

    first = letter["id"]
    r = await b.admin.delete(f"admin/dead-letters/{first}")
    assert r.status_code == 204, r.text
    [left] = await dead_letters(b, 1)
    assert left["id"] != first and left["notification"]["data"][0]["id"].endswith(":2")
    assert await gauge(b, "delivery") == 1
    r = await b.admin.delete(f"admin/dead-letters/{first}")
    assert r.status_code == 404 and r.json()["type"] == ERRORS + "ResourceNotFound"
    r = await b.admin.delete("admin/dead-letters/x")
    assert r.status_code == 400 and r.json()["type"] == ERRORS + "BadRequestData"
    assert len(receiver.on("/fail/x")) == 4  # discarding sends nothing


async def test_a_retried_dead_notification_is_sent_afresh_once_the_receiver_recovered(
    sending_broker: Broker, receiver: Receiver
) -> None:
    """/flaky/2 answers 503 twice (the two attempts), then 204."""
    b = sending_broker
    await subscribe(b, subscription("urn:s:flaky", f"{receiver.base}/flaky/2/y"))
    await write_lamp(b, 3)
    [letter] = await dead_letters(b, 1)
    assert letter["kind"] == "delivery" and letter["attempts"] == 2
    assert [r.status for r in receiver.on("/flaky/2/y")] == [503, 503]

    r = await b.admin.post(f"admin/dead-letters/{letter['id']}/retry")
    assert r.status_code == 204, r.text
    got = await receiver.await_("/flaky/2/y", 3)
    assert [r.status for r in got] == [503, 503, 204]
    assert got[2].json() == letter["notification"]
    assert await dead_letters(b, 0) == []
    assert await gauge(b, "delivery") == 0
    r = await b.admin.post(f"admin/dead-letters/{letter['id']}/retry")
    assert r.status_code == 404


async def test_a_refused_notification_is_dead_lettered_at_once(
    sending_broker: Broker, receiver: Receiver
) -> None:
    """A 4xx is not retried: the receiver said no. It is kept all the same."""
    b = sending_broker
    await subscribe(b, subscription("urn:s:gone", f"{receiver.base}/status/410"))
    await write_lamp(b, 4)
    [letter] = await dead_letters(b, 1)
    assert letter["kind"] == "delivery" and letter["attempts"] == 1
    assert "410" in letter["lastError"]
    assert len(receiver.on("/status/410")) == 1


async def test_a_sqlite_file_from_before_delivery_dead_letters_keeps_its_dead_letters(
    tmp_path: Path,
) -> None:
    """The table is rebuilt (its NOT NULLs go), rows and ids kept, and both kinds work."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE outbox_dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " tenant TEXT NOT NULL, subscription_id TEXT, entity_id TEXT NOT NULL, before BLOB,"
            " after BLOB, at TEXT NOT NULL, attempts INTEGER NOT NULL, next_at REAL NOT NULL,"
            " first_failed REAL NOT NULL, last_error TEXT NOT NULL)")
        conn.execute(
            "INSERT INTO outbox_dead_letters VALUES (7, '', 'urn:s:1', 'urn:e:1', NULL,"
            " '{\"id\": \"urn:e:1\"}', '2026-01-01T00:00:00Z', 3, 10.0, 1.0, 'boom')")
    stores = open_stores(f"sqlite:///{path}")
    await stores.open()
    try:
        outbox = stores.outbox
        [old] = await outbox.dead_letters(10, due_by=10.0)
        assert (old.id, old.subscription_id, old.change.after) == (7, "urn:s:1", {"id": "urn:e:1"})
        [delivery] = await outbox.add(
            [NewDelivery("", "urn:s:2", "l", Envelope("http://x/", {}, b"{}"), claimed=True)], 0)
        letter = DeadDelivery("", "urn:s:2", "l", delivery.envelope, "HTTP 500", 10, 20.0)
        assert await outbox.bury_delivery(letter, delivery.id)
        [dead] = await outbox.dead_deliveries(10)
        assert dead.id > 7 and dead.envelope == delivery.envelope and dead.error == "HTTP 500"
        assert await outbox.counts() == (0, 0)
        assert (await outbox.dead_letter_count("matching"),
                await outbox.dead_letter_count("delivery")) == (1, 1)
        # a delivery dead letter is never due for the automatic retries
        assert [d.id for d in await outbox.dead_letters(10, due_by=1e12)] == [7]
    finally:
        await stores.close()
