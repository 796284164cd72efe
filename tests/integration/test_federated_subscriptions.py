"""Two real broker processes (clauses 5.8.1.4, 5.8.6): a subscription on broker A over a
type registered to broker B is copied to B; an update on B reaches A's subscriber, as A's
subscription, merged with what A holds of the entity; the link survives a restart of A;
deleting the subscription on A deletes the copy on B."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.broker_process import Broker
from tests.integration.receiver import Receiver

SUB = "urn:ngsi-ld:Subscription:onA"
V = "urn:ngsi-ld:Vehicle:"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Broker, Broker]]:
    a = Broker(f"sqlite:///{tmp_path}/a.db", tmp_path / "a.log")
    b = Broker(f"sqlite:///{tmp_path}/b.db", tmp_path / "b.log")
    for node in (a, b):
        node.env["URBANOS_BASE_URL"] = f"http://127.0.0.1:{node.port}"
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        for node in (a, b):
            node.stop()
            node.client.close()


def test_an_update_on_the_source_broker_reaches_the_subscriber_of_the_front(
        pair: tuple[Broker, Broker], receiver: Receiver) -> None:
    a, b = pair
    r = a.call("POST", "csourceRegistrations", {
        "type": "ContextSourceRegistration", "operations": ["federationOps"],
        "endpoint": b.url.removesuffix("/ngsi-ld/v1/"),
        "information": [{"entities": [{"type": "Vehicle"}]}]})
    assert r.status_code == 201, r.text
    # A holds the brand of the vehicle, B its speed
    assert a.call("POST", "entities", {
        "id": V + "1", "type": "Vehicle",
        "brandName": {"type": "Property", "value": "Tesla"}}).status_code == 201
    r = a.call("POST", "subscriptions", {
        "id": SUB, "type": "Subscription", "entities": [{"type": "Vehicle"}],
        "q": 'speed>50;brandName=="Tesla"', "splitEntities": True,
        "notification": {"endpoint": {"uri": f"{receiver.base}/notify",
                                      "accept": "application/json"}}})
    assert r.status_code == 201, r.text

    copies = _wait_for_copy(b)
    assert copies[0]["notification"]["endpoint"]["uri"] == \
        f"http://127.0.0.1:{a.port}/ngsi-ld/ex/remote-notify"
    assert "q" not in copies[0]

    assert b.call("POST", "entities", {
        "id": V + "1", "type": "Vehicle",
        "speed": {"type": "Property", "value": 99}}).status_code == 201
    [note] = receiver.wait("/notify")
    body = note.json()
    assert body["subscriptionId"] == SUB
    [entity] = body["data"]
    assert entity["speed"]["value"] == 99 and entity["brandName"]["value"] == "Tesla"

    # too slow once merged: A's q drops it
    assert b.call("PATCH", f"entities/{V}1/attrs", {
        "speed": {"type": "Property", "value": 10}}).status_code == 204

    # the link survives a restart of A
    a.stop()
    a.start()
    assert b.call("PATCH", f"entities/{V}1/attrs", {
        "speed": {"type": "Property", "value": 120}}).status_code == 204
    notes = receiver.wait("/notify", 2)
    assert len(notes) == 2 and notes[1].json()["data"][0]["speed"]["value"] == 120
    assert notes[1].json()["subscriptionId"] == SUB

    assert len(a.call("GET", "csourceSubscriptions").json()) == 1
    assert a.call("DELETE", f"subscriptions/{SUB}").status_code == 204
    _wait_for_copy(b, 0)
    assert a.call("GET", "csourceSubscriptions").json() == []


def _wait_for_copy(b: Broker, count: int = 1, timeout: float = 15.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        found = b.call("GET", "subscriptions").json()
        if len(found) == count or time.monotonic() > deadline:
            assert len(found) == count, found
            return list(found)
        time.sleep(0.1)
