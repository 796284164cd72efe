"""A change is never dropped: a subscription whose matching fails does not hold back the
others, and its notification is kept as a dead letter (listed at /admin/dead-letters,
counted in /metrics) and retried with backoff until it is sent.

The app runs in-process on every store (``store_url``) with a real HTTP receiver; the
fault is injected into the store: reading the entities a ``join`` subscription links to
raises while the target's id is in ``broken``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.conftest import _lifespan
from tests.integration.receiver import Receiver
from urbanos.http.app import create_app
from urbanos.settings import Settings
from urbanos.storage import open_stores
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


async def gauge(b: Broker) -> float:
    r = await b.admin.get("metrics")
    assert r.status_code == 200
    [line] = [x for x in r.text.splitlines()
              if x.startswith("urbanos_notification_dead_letters ")]
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
    assert letter["subscriptionId"] == "urn:s:join"
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
