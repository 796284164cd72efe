"""Distributed subscriptions on every store (clauses 5.8.1.4, 5.8.5.4, 5.8.6): a
subscription over registered entities is copied to the source with this broker as its
notification endpoint; the source's notifications are merged with the local entity,
filtered by the local q and delivered to the subscriber under the local id; a delete is
forwarded. A real HTTP source receives the copies and, here, the notifications too."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.http.context_source import ContextSource, Request

REMOTE = "/ngsi-ld/ex/remote-notify"
SUB = "urn:ngsi-ld:Subscription:dist"


@pytest.fixture
def source() -> Iterator[ContextSource]:
    with ContextSource() as s:
        s.answer("POST", "/ngsi-ld/v1/subscriptions", 201)
        yield s


async def arrived(source: ContextSource, method: str, prefix: str, count: int = 1,
                  wait: float = 10.0) -> list[Request]:
    for _ in range(int(wait / 0.05)):
        found = source.on(method, prefix)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {method} {prefix} within {wait} s: {source.requests}")


async def setup(client: httpx.AsyncClient, source: ContextSource, **sub: Any) -> str:
    """A Vehicle registration of ``source``, a subscription over Vehicle: the remote id."""
    r = await client.post("csourceRegistrations", json={
        "type": "ContextSourceRegistration", "endpoint": source.base,
        "information": [{"entities": [{"type": "Vehicle"}]}],
        "operations": ["federationOps"]})
    assert r.status_code == 201, r.text
    body = {"id": SUB, "type": "Subscription", "entities": [{"type": "Vehicle"}],
            "notification": {"endpoint": {"uri": f"{source.base}/notify"}}, **sub}
    r = await client.post("subscriptions", json=body)
    assert r.status_code == 201, r.text
    [copy] = await arrived(source, "POST", "/ngsi-ld/v1/subscriptions")
    return str(copy.json()["id"])


async def notify(client: httpx.AsyncClient, remote: str, *entities: dict[str, Any],
                 **params: str) -> httpx.Response:
    return await client.post(f"http://broker{REMOTE}", params=params, json={
        "id": "urn:ngsi-ld:Notification:1", "type": "Notification", "subscriptionId": remote,
        "notifiedAt": "2026-01-01T00:00:00Z", "data": list(entities)})


async def test_the_copy_notifies_this_broker_and_the_delete_follows(
        client: httpx.AsyncClient, source: ContextSource) -> None:
    remote = await setup(client, source, q="speed>50")
    copy = source.on("POST", "/ngsi-ld/v1/subscriptions")[0]
    body = copy.json()
    assert body["id"] == remote and remote != SUB
    assert body["notification"]["endpoint"]["uri"].endswith(REMOTE)
    assert f"{source.base}/notify" not in copy.body.decode()
    assert body["q"] == "speed>50"  # not split: the source filters
    assert copy.header("Via") is not None
    shown = (await client.get("csourceSubscriptions")).json()
    assert len(shown) == 1 and shown[0]["entities"] == [{"type": "Vehicle"}]

    assert (await client.delete(f"subscriptions/{SUB}")).status_code == 204
    [gone] = await arrived(source, "DELETE", "/ngsi-ld/v1/subscriptions/")
    assert gone.path == f"/ngsi-ld/v1/subscriptions/{remote}"
    assert (await client.get("csourceSubscriptions")).json() == []
    # the remote id is no longer known
    r = await notify(client, remote, {"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle"})
    assert r.status_code == 404 and r.json()["type"].endswith("ResourceNotFound")


async def test_split_entities_are_merged_and_filtered_here(
        client: httpx.AsyncClient, source: ContextSource) -> None:
    remote = await setup(client, source, q='speed>50;brandName=="Tesla"',
                         splitEntities=True)
    copy = source.on("POST", "/ngsi-ld/v1/subscriptions")[0].json()
    assert "q" not in copy and copy["splitEntities"] is True
    eid = "urn:ngsi-ld:Vehicle:split"
    r = await client.post("entities", json={
        "id": eid, "type": "Vehicle", "brandName": {"type": "Property", "value": "Tesla"}})
    assert r.status_code == 201

    r = await notify(client, remote, {"id": eid, "type": "Vehicle",
                                      "speed": {"type": "Property", "value": 99}})
    assert r.status_code == 200, r.text
    [sent] = await arrived(source, "POST", "/notify")
    note = sent.json()
    assert note["subscriptionId"] == SUB
    [entity] = note["data"]
    assert entity["id"] == eid
    assert entity["speed"]["value"] == 99 and entity["brandName"]["value"] == "Tesla"

    # failing q once merged: nothing is delivered
    r = await notify(client, remote, {"id": eid, "type": "Vehicle",
                                      "speed": {"type": "Property", "value": 10}})
    assert r.status_code == 200
    await asyncio.sleep(1.0)
    assert len(source.on("POST", "/notify")) == 1


async def test_bad_inbound_notifications(client: httpx.AsyncClient,
                                         source: ContextSource) -> None:
    remote = await setup(client, source)
    r = await notify(client, "urn:ngsi-ld:Subscription:unknown",
                     {"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle"})
    assert r.status_code == 404
    assert r.json()["type"].endswith("ResourceNotFound")
    r = await client.post(f"http://broker{REMOTE}", content=b"{not json",
                          headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    r = await client.post(f"http://broker{REMOTE}", json={"subscriptionId": remote})
    assert r.status_code == 400
    r = await notify(client, remote, {"id": "not a uri", "type": "Vehicle"})
    assert r.status_code == 400
    r = await notify(client, remote, {"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle",
                                      "speed": {"type": "Nonsense"}})
    assert r.status_code == 400


async def test_local_only_and_unregistered_types_stay_here(
        client: httpx.AsyncClient, source: ContextSource) -> None:
    await setup(client, source)
    before = len(source.requests)
    for n, body in enumerate(({"entities": [{"type": "Building"}]},
                              {"entities": [{"type": "Vehicle"}], "localOnly": True})):
        r = await client.post("subscriptions", json={
            "id": f"{SUB}:{n}", "type": "Subscription", **body,
            "notification": {"endpoint": {"uri": f"{source.base}/notify"}}})
        assert r.status_code == 201, r.text
    await asyncio.sleep(0.5)
    assert len(source.requests) == before
    assert len((await client.get("csourceSubscriptions")).json()) == 1


async def test_an_update_follows_and_a_new_source_gets_a_copy(
        client: httpx.AsyncClient, source: ContextSource) -> None:
    remote = await setup(client, source)
    r = await client.patch(f"subscriptions/{SUB}", json={"q": "speed>70"})
    assert r.status_code == 204
    [patched] = await arrived(source, "PATCH", "/ngsi-ld/v1/subscriptions/")
    assert patched.path == f"/ngsi-ld/v1/subscriptions/{remote}"
    assert patched.json()["q"] == "speed>70"
    assert patched.json()["notification"]["endpoint"]["uri"].endswith(REMOTE)

    with ContextSource() as other:
        other.answer("POST", "/ngsi-ld/v1/subscriptions", 201)
        r = await client.post("csourceRegistrations", json={
            "type": "ContextSourceRegistration", "endpoint": other.base,
            "information": [{"entities": [{"type": "Vehicle"}]}],
            "operations": ["federationOps"]})
        assert r.status_code == 201
        # what the internal csource subscription is notified of (newlyMatching)
        [internal] = (await client.get("csourceSubscriptions")).json()
        r = await client.post(f"http://broker{REMOTE}", json={
            "id": "urn:ngsi-ld:Notification:2", "type": "ContextSourceNotification",
            "subscriptionId": internal["id"], "triggerReason": "newlyMatching",
            "notifiedAt": "2026-01-01T00:00:00Z", "data": []})
        assert r.status_code == 200, r.text
        [copy] = await arrived(other, "POST", "/ngsi-ld/v1/subscriptions")
        assert copy.json()["id"] not in (remote, SUB)
        # both copies are deleted with the subscription
        assert (await client.delete(f"subscriptions/{SUB}")).status_code == 204
        await arrived(other, "DELETE", "/ngsi-ld/v1/subscriptions/")
        await arrived(source, "DELETE", "/ngsi-ld/v1/subscriptions/")


async def test_a_copy_made_by_another_broker_is_not_copied_on(
        client: httpx.AsyncClient, source: ContextSource) -> None:
    """Two brokers registering each other: a copy must not travel back and forth."""
    await setup(client, source)
    before = len(source.requests)
    r = await client.post("subscriptions", json={
        "id": f"{SUB}:copy", "type": "Subscription", "entities": [{"type": "Vehicle"}],
        "notification": {"endpoint": {"uri": f"{source.base}{REMOTE}"}}})
    assert r.status_code == 201, r.text
    await asyncio.sleep(0.5)
    assert len(source.requests) == before
