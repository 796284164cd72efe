"""The expiry sweeper (clause 4.22) end to end: an expired entity or attribute instance is
deleted from the store by the background worker, its deletion is notified through the
outbox like a client's delete, and the history follows the spec's split (an expired
entity's history stays, an expired instance's history goes).

Stores: every one (``store_url``). An already-past ``expiresAt`` is set with Merge Entity
(allowed there, unlike on creation), so nothing waits for a clock: the tests only wait for
the worker's notification, as the notification tests do.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.receiver import Receiver
from urbanos.core.expiry import EXPIRY_KEY
from urbanos.services.entities import EntityService
from urbanos.services.expiry import ExpirySweeper
from urbanos.settings import Settings
from urbanos.storage import open_stores

PAST = "2020-01-01T00:00:00Z"
TEMPORAL = {"timerel": "after", "timeAt": "2000-01-01T00:00:00Z", "timeproperty": "modifiedAt",
            "options": "temporalValues"}


@pytest.fixture
def settings(store_url: str) -> Settings:
    return Settings(store=store_url, notify_backoff=0.1, notify_timeout=2.0)


def lamp(n: int, **attrs: Any) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:Lamp:{n}", "type": "Lamp",
            "level": {"type": "Property", "value": 1}, **attrs}


async def subscribe(client: httpx.AsyncClient, uri: str) -> None:
    body = {"id": "urn:s:expiry", "type": "Subscription", "entities": [{"type": "Lamp"}],
            "notificationTrigger": ["entityDeleted", "attributeDeleted"],
            "notification": {"endpoint": {"uri": uri, "accept": "application/json"}}}
    r = await client.post("subscriptions", json=body)
    assert r.status_code == 201, r.text


async def test_an_expired_entity_is_deleted_and_notified(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await subscribe(client, f"{receiver.base}/gone")
    for n in (1, 2):
        assert (await client.post("entities", json=lamp(n))).status_code == 201
    r = await client.patch("entities/urn:ngsi-ld:Lamp:1", json={"expiresAt": PAST})
    assert r.status_code == 204
    [got] = await receiver.await_("/gone")
    note = got.json()
    assert note["data"][0]["id"] == "urn:ngsi-ld:Lamp:1"
    assert "deletedAt" in note["data"][0]
    # its history outlives it, exactly as it was: no deletion instance is added
    r = await client.get("temporal/entities/urn:ngsi-ld:Lamp:1", params=TEMPORAL)
    assert r.status_code == 200, r.text
    assert [v[0] for v in r.json()["level"]["values"]] == [1]
    # a client's delete, in contrast, records the deletion
    assert (await client.delete("entities/urn:ngsi-ld:Lamp:2")).status_code == 204
    r = await client.get("temporal/entities/urn:ngsi-ld:Lamp:2", params=TEMPORAL)
    assert [v[0] for v in r.json()["level"]["values"]] == [1, "urn:ngsi-ld:null"]
    await receiver.await_("/gone", 2)  # Lamp:2's deletion, notified after Lamp:1's
    assert [n.json()["data"][0]["id"] for n in receiver.on("/gone")] == [
        "urn:ngsi-ld:Lamp:1", "urn:ngsi-ld:Lamp:2"]


async def test_an_expired_instance_is_removed_with_its_history(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await subscribe(client, f"{receiver.base}/attr")
    body = lamp(1, colour={"type": "Property", "value": "red"})
    assert (await client.post("entities", json=body)).status_code == 201
    r = await client.patch("entities/urn:ngsi-ld:Lamp:1/attrs/colour",
                           json={"expiresAt": PAST})
    assert r.status_code == 204
    [got] = await receiver.await_("/attr")
    data = got.json()["data"][0]
    assert data["id"] == "urn:ngsi-ld:Lamp:1"
    assert "colour" in data  # the attribute the notification reports as deleted
    r = await client.get("temporal/entities/urn:ngsi-ld:Lamp:1", params=TEMPORAL)
    assert r.status_code == 200, r.text
    assert "colour" not in r.json()
    assert "level" in r.json()  # the durable attribute's history stays
    got_entity = (await client.get("entities/urn:ngsi-ld:Lamp:1")).json()
    assert "colour" not in got_entity and got_entity["level"]["value"] == 1


async def test_the_sweep_deletes_exactly_what_is_due(store_url: str) -> None:
    """The sweeper against the store alone, with a clock it is handed: what is due goes,
    what is not stays, and what is written away from expiry is left alone."""
    stores = open_stores(store_url)
    await stores.open()
    store = stores.entities
    try:
        now = ["2030-01-01T00:00:00.000Z"]
        service = EntityService(store, clock=lambda: now[0])
        sweeper = ExpirySweeper(store, clock=lambda: now[0], batch=2)
        for n, at in ((1, "2030-01-01T00:00:10Z"), (2, "2030-01-01T00:00:20Z"),
                      (3, "2030-01-01T00:00:05Z"), (4, None)):
            entity = {"id": f"urn:e:{n}", "type": ["urn:T"], "attrs": {},
                      "createdAt": now[0], "modifiedAt": now[0]}
            if at:
                entity["expiresAt"] = at
            await service.create("", entity)
        assert await sweeper.sweep() == 0
        now[0] = "2030-01-01T00:00:15.000Z"
        assert sorted(e for _, e in await store.expiring("2030-01-01T00:00:15.000000Z", 9)) \
            == ["urn:e:1", "urn:e:3"]
        assert await sweeper.sweep() == 2
        assert await store.get("", "urn:e:1") is None and await store.get("", "urn:e:3") is None
        left = await store.get("", "urn:e:2")
        assert left is not None and left[EXPIRY_KEY].startswith("2030-01-01T00:00:20")
        await service.merge("", "urn:e:2", {"id": "urn:e:2", "attrs": {}, "expiresAt": None})
        now[0] = "2031-01-01T00:00:00.000Z"
        assert await sweeper.sweep() == 0
        kept = await store.get("", "urn:e:2")
        assert kept is not None and EXPIRY_KEY not in kept and "expiresAt" not in kept
        assert await store.get("", "urn:e:4") is not None
    finally:
        await stores.close()
