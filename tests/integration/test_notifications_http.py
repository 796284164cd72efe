"""Notifications end to end through the API: subscribe, write, a real HTTP receiver gets them.

The app runs in-process (its lifespan starts the delivery workers); the receivers are
HTTP servers on 127.0.0.1. Stores: every one (``store_url`` of tests/conftest.py), each
with its own outbox; PostgreSQL is skipped with ``URBANOS_TEST_POSTGRES=0``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.integration.receiver import WAIT, Receiver, entity_ids
from urbanos.settings import Settings

LD = "application/ld+json"
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
LINK_REL = 'rel="http://www.w3.org/ns/json-ld#context"'


#: ``@held``: sends that never time out (a held receiver holds them until the test releases it)
held = pytest.mark.parametrize("settings", [600.0], indirect=True)


@pytest.fixture
def settings(store_url: str, request: pytest.FixtureRequest) -> Settings:
    """``request.param`` (``@held``): the send timeout, 2 s unless given."""
    return Settings(store=store_url, notify_backoff=0.1, notify_backoff_max=0.5,
                    notify_timeout=getattr(request, "param", 2.0), notify_max_attempts=3)


def subscription(sid: str, uri: str, **notification: Any) -> dict[str, Any]:
    return {
        "id": sid,
        "type": "Subscription",
        "entities": [{"type": "Lamp"}],
        "notification": {"endpoint": {"uri": uri, "accept": "application/json"},
                         **notification},
    }


def lamp(n: int, level: float = 1.0) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:Lamp:{n}", "type": "Lamp",
            "level": {"type": "Property", "value": level}}


async def subscribe(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> None:
    r = await client.post("subscriptions", json=body, headers=headers)
    assert r.status_code == 201, r.text


async def test_a_change_is_notified_as_json_with_link(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    body = subscription("urn:s:json", f"{receiver.base}/json")
    body["notification"]["endpoint"]["receiverInfo"] = [{"key": "X-City", "value": "Gent"}]
    await subscribe(client, body, **{"NGSILD-Tenant": "gent"})
    r = await client.post("entities", json=lamp(1, 3.5), headers={"NGSILD-Tenant": "gent"})
    assert r.status_code == 201
    [got] = await receiver.await_("/json")
    note = got.json()
    assert note["type"] == "Notification" and note["subscriptionId"] == "urn:s:json"
    assert note["data"][0]["id"] == "urn:ngsi-ld:Lamp:1"
    assert note["data"][0]["level"]["value"] == 3.5
    assert "@context" not in note["data"][0]
    assert got.headers["Content-Type"] == "application/json"
    assert LINK_REL in got.headers["Link"]
    assert got.headers["NGSILD-Tenant"] == "gent"
    assert got.headers["X-City"] == "Gent"


async def test_ld_json_carries_the_context_in_the_body(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    body = subscription("urn:s:ld", f"{receiver.base}/ld")
    body["notification"]["endpoint"]["accept"] = LD
    await subscribe(client, body)
    assert (await client.post("entities", json=lamp(1))).status_code == 201
    [got] = await receiver.await_("/ld")
    assert got.headers["Content-Type"] == LD
    assert "Link" not in got.headers
    assert "@context" in got.json()["data"][0]


async def test_every_write_path_notifies(client: httpx.AsyncClient, receiver: Receiver) -> None:
    body = subscription("urn:s:all", f"{receiver.base}/all")
    body["notificationTrigger"] = ["entityCreated", "entityUpdated", "entityDeleted",
                                   "attributeCreated", "attributeUpdated", "attributeDeleted"]
    await subscribe(client, body)
    steps = [
        client.post("entities", json=lamp(1)),
        client.patch("entities/urn:ngsi-ld:Lamp:1/attrs",
                     json={"level": {"type": "Property", "value": 2}}),
        client.post("entities/urn:ngsi-ld:Lamp:1/attrs",
                    json={"colour": {"type": "Property", "value": "red"}}),
        client.patch("entities/urn:ngsi-ld:Lamp:1",
                     json={"level": {"type": "Property", "value": 3}}),
        client.put("entities/urn:ngsi-ld:Lamp:1", json={"type": "Lamp",
                   "level": {"type": "Property", "value": 4}}),
        client.delete("entities/urn:ngsi-ld:Lamp:1/attrs/level"),
        client.post("entityOperations/upsert", json=[lamp(2), lamp(3)]),
        client.post("entityOperations/delete", json=["urn:ngsi-ld:Lamp:2"]),
        client.delete("entities/urn:ngsi-ld:Lamp:1"),
    ]
    for step in steps:
        r = await step
        assert r.status_code < 300, r.text
    got = await receiver.await_("/all", 10)
    ids = [r.json()["data"][0]["id"][-1] for r in got]
    assert sorted(ids) == sorted("1111112321")
    # one subscription's notifications arrive in the order of the writes
    assert ids[:6] == list("111111")


async def test_failures_show_in_the_subscription(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await subscribe(client, subscription("urn:s:fail", f"{receiver.base}/fail"))
    assert (await client.post("entities", json=lamp(1))).status_code == 201
    await receiver.await_("/fail", 3)
    for _ in range(50):
        shown = (await client.get("subscriptions/urn:s:fail")).json()["notification"]
        if shown.get("timesFailed") == 3:
            break
        await asyncio.sleep(0.05)
    assert shown["status"] == "failed"
    assert shown["timesFailed"] == 3 and "lastFailure" in shown
    assert len(receiver.on("/fail")) == 3  # abandoned after notify_max_attempts


async def test_success_after_retry_shows_ok(client: httpx.AsyncClient, receiver: Receiver) -> None:
    await subscribe(client, subscription("urn:s:flaky", f"{receiver.base}/flaky/1/x"))
    assert (await client.post("entities", json=lamp(1))).status_code == 201
    await receiver.await_("/flaky", 2)
    for _ in range(50):
        shown = (await client.get("subscriptions/urn:s:flaky")).json()["notification"]
        if shown.get("status") == "ok":
            break
        await asyncio.sleep(0.05)
    assert shown["status"] == "ok" and shown["timesSent"] >= 1 and "lastSuccess" in shown


async def test_a_receiver_that_has_answered_sees_its_answer_in_the_subscription(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    """A read of a subscription waits (bounded) for the outcome of its notifications being
    sent, so a receiver that reads it right after answering finds timesSent and status."""
    await subscribe(client, subscription("urn:s:slow", f"{receiver.base}/slow/200/x"))
    assert (await client.post("entities", json=lamp(1))).status_code == 201
    await receiver.await_("/slow")  # sent; the answer comes 200 ms later
    shown = (await client.get("subscriptions/urn:s:slow")).json()["notification"]
    assert shown["timesSent"] == 1 and shown["status"] == "ok" and "lastSuccess" in shown


@held
async def test_a_hanging_receiver_delays_reads_of_its_subscription_a_bounded_time(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    """The read waits for the outcome of a send in progress only so long: it answers
    while the receiver still holds the notification."""
    await subscribe(client, subscription("urn:s:stuck", f"{receiver.base}/held"))
    assert (await client.post("entities", json=lamp(1))).status_code == 201
    assert await receiver.await_("/held", timeout=WAIT)
    async with asyncio.timeout(WAIT):  # an unbounded wait lasts until the release
        r = await client.get("subscriptions/urn:s:stuck")
    assert r.status_code == 200 and "timesSent" not in r.json()["notification"]
    receiver.release()  # only now: the read was answered while the send was held


async def test_a_deleted_subscription_stops_retrying(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await subscribe(client, subscription("urn:s:gone", f"{receiver.base}/fail"))
    assert (await client.post("entities", json=lamp(1))).status_code == 201
    await receiver.await_("/fail", 1)
    assert (await client.delete("subscriptions/urn:s:gone")).status_code == 204
    await asyncio.sleep(1.0)
    assert len(receiver.on("/fail")) <= 2


@held
async def test_a_hanging_receiver_delays_no_one(
    client: httpx.AsyncClient, receiver: Receiver, other: Receiver
) -> None:
    """While one receiver holds its notifications, the writes are acknowledged and the
    other subscriber gets all of its own; released, the held one gets its own."""
    await subscribe(client, subscription("urn:s:hang", f"{receiver.base}/held"))
    await subscribe(client, subscription("urn:s:fine", f"{other.base}/fine"))
    assert (await client.post("entities", json=lamp(0))).status_code == 201
    assert await receiver.await_("/held", timeout=WAIT), "nothing was sent"
    async with asyncio.timeout(WAIT):  # a write waiting for the held send never ends
        for n in range(1, 10):
            assert (await client.post("entities", json=lamp(n))).status_code == 201
    got = await other.await_("/fine", 10, timeout=WAIT)
    assert entity_ids(got) == {f"urn:ngsi-ld:Lamp:{n}" for n in range(10)}
    receiver.release()  # only now: the other got its notifications while these were held
    assert entity_ids(await receiver.await_("/held", 10, timeout=WAIT)) == entity_ids(got)


async def test_the_broker_refuses_to_notify_itself(client: httpx.AsyncClient) -> None:
    body = subscription("urn:s:self", "http://127.0.0.1:1026/ngsi-ld/v1/entities")
    r = await client.post("subscriptions", json=body)
    assert r.status_code == 400  # refused when created; the sender refuses again at send time
