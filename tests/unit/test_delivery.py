"""Delivery building blocks: retry policy, envelopes, lanes, and the outbox contract that
the memory and SQLite outboxes share."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from urbanos.core.subscription import Endpoint, Outgoing
from urbanos.services.notifications import DeliveryConfig, backoff_delay, envelope_of
from urbanos.services.senders import lane_of
from urbanos.storage import open_stores
from urbanos.storage.base import EntityStore, Write
from urbanos.storage.outbox import Envelope, NewDelivery, Outbox, Room

BODY = {"id": "urn:n:1", "type": "Notification", "subscriptionId": "urn:s:1", "data": []}


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    config = DeliveryConfig(backoff=1.0, backoff_max=10.0)
    assert [backoff_delay(n, config, lambda: 0.5) for n in (1, 2, 3, 4, 5, 9)] == [
        1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff_delay(1, config, lambda: 0.0) == pytest.approx(0.8)
    assert backoff_delay(1, config, lambda: 1.0) == pytest.approx(1.2)


def test_http_envelope_is_the_notification_with_its_headers() -> None:
    out = Outgoing("t", "urn:s:1", Endpoint("http://r.example/n"), BODY,
                   {"Content-Type": "application/json", "NGSILD-Tenant": "t"})
    env = envelope_of(out)
    assert json.loads(env.payload) == BODY
    assert env.headers == {"Content-Type": "application/json", "NGSILD-Tenant": "t"}


def test_content_type_defaults_to_the_accepted_type() -> None:
    out = Outgoing("", "urn:s:1", Endpoint("http://r/n", accept="application/ld+json"), BODY)
    assert envelope_of(out).headers["Content-Type"] == "application/ld+json"


def test_mqtt_envelope_wraps_metadata_and_body() -> None:
    endpoint = Endpoint("mqtt://b:1883/city/lamps", mqtt_qos=1, mqtt_version="mqtt3.1.1")
    env = envelope_of(Outgoing("", "urn:s:1", endpoint, BODY, {"Link": "<x>"}))
    assert json.loads(env.payload) == {
        "metadata": {"Link": "<x>", "Content-Type": "application/json"}, "body": BODY}
    assert (env.qos, env.mqtt_version) == (1, "mqtt3.1.1")


def test_lanes_are_per_origin() -> None:
    assert lane_of("http://a.example/x") == lane_of("http://a.example:80/y") == "http://a.example:80"
    assert lane_of("https://a.example/x") == "https://a.example:443"
    assert lane_of("mqtt://u:p@b/t") == "mqtt://u@b:1883"
    assert lane_of("http://[::1") == "invalid:"


def test_room_counts_per_lane_and_in_all() -> None:
    room = Room(3, {"a": 1}, 2)
    assert [room.take(x) for x in ("a", "a", "b", "b", "b")] == [True, False, True, True, False]


@pytest.fixture(params=["memory", "sqlite"])
async def pair(request: pytest.FixtureRequest, tmp_path: Path
               ) -> AsyncIterator[tuple[EntityStore, Outbox]]:
    stores = open_stores("memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/o.db")
    await stores.open()
    for tenant in ("", "t"):  # SQLite's outbox records only subscribed tenants' writes
        await stores.subscriptions.insert(tenant, {"id": "urn:s:1", "type": "Subscription"})
    yield stores.entities, stores.outbox
    await stores.close()


def new(lane: str, claimed: bool = False, sid: str = "urn:s:1") -> NewDelivery:
    return NewDelivery("", sid, lane, Envelope(f"{lane}/n", {"A": "b"}, b"{}"), claimed)


async def test_writes_become_changes_in_order(pair: tuple[EntityStore, Outbox]) -> None:
    store, outbox = pair
    doc = {"id": "urn:e:1", "type": ["T"], "attrs": {}}
    await store.apply("t", [Write("put", "urn:e:1", doc)])
    await store.apply("t", [Write("delete", "urn:e:1", before=doc)])
    first, second = await outbox.changes(10)
    assert first.created and first.after == doc and first.tenant == "t"
    assert second.deleted and second.before == doc and second.seq > first.seq
    assert first.at.endswith("Z")


async def test_consume_records_deliveries_and_drops_changes(
    pair: tuple[EntityStore, Outbox]
) -> None:
    store, outbox = pair
    await store.apply("", [Write("put", "urn:e:1", {"id": "urn:e:1", "type": [], "attrs": {}})])
    [change] = await outbox.changes(10)
    claimed = await outbox.consume([change.seq], [new("http://a:80", True), new("http://b:80")],
                                   now=100.0)
    assert [d.lane for d in claimed] == ["http://a:80"]
    assert claimed[0].envelope == Envelope("http://a:80/n", {"A": "b"}, b"{}")
    assert await outbox.changes(10) == []
    assert await outbox.counts() == (0, 2)
    # the unclaimed one is due; the claimed one is not handed out twice
    due = await outbox.claim_due(100.0, Room(10, {}, 10), ())
    assert [d.lane for d in due] == ["http://b:80"]
    assert await outbox.claim_due(100.0, Room(10, {}, 10), ()) == []


async def test_claims_respect_room_skip_and_due_time(pair: tuple[EntityStore, Outbox]) -> None:
    _, outbox = pair
    await outbox.add([new("http://a:80") for _ in range(3)] + [new("http://b:80")], now=10.0)
    assert await outbox.claim_due(9.0, Room(10, {}, 10), ()) == []  # not yet due
    got = await outbox.claim_due(10.0, Room(10, {}, 2), ["http://b:80"])
    assert [d.lane for d in got] == ["http://a:80", "http://a:80"]
    got = await outbox.claim_due(10.0, Room(10, {}, 2), ())
    assert sorted(d.lane for d in got) == ["http://a:80", "http://b:80"]


async def test_retry_release_done_and_restart(pair: tuple[EntityStore, Outbox]) -> None:
    _, outbox = pair
    a, b, c = await outbox.add([new("http://a:80", True) for _ in range(3)], now=0.0)
    await outbox.retry(a.id, 1, 50.0, "HTTP 500")
    await outbox.release([b.id])
    await outbox.done([c.id])
    assert await outbox.counts() == (0, 2)
    [again] = await outbox.claim_due(10.0, Room(10, {}, 10), ())
    assert again.id == b.id and again.attempts == 0
    [retried] = await outbox.claim_due(50.0, Room(10, {}, 10), ())
    assert retried.id == a.id and retried.attempts == 1
    await outbox.open()  # a new process: claims of the old one are pending again
    assert {d.id for d in await outbox.claim_due(50.0, Room(10, {}, 10), ())} == {a.id, b.id}
