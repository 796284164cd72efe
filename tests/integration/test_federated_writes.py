"""Two real broker processes, one the context source of the other (clauses 4.3.6.3,
6.3.18): writes through the front broker reach the source broker per registration mode,
and a request sent round in a circle stops with 508 instead of going on for ever."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.broker_process import Broker

V = "urn:ngsi-ld:Vehicle:"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Broker, Broker]]:
    """The front broker and the source broker, each on its own SQLite file and with its
    own public URL (so their Via pseudonyms differ)."""
    front = Broker(f"sqlite:///{tmp_path}/front.db", tmp_path / "front.log")
    source = Broker(f"sqlite:///{tmp_path}/source.db", tmp_path / "source.log")
    for node in (front, source):
        node.env["URBANOS_BASE_URL"] = f"http://127.0.0.1:{node.port}"
    try:
        front.start()
        source.start()
        yield front, source
    finally:
        for node in (front, source):
            node.stop()
            node.client.close()


def vehicle(eid: str, **attrs: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": eid, "type": "Vehicle"}
    for name, value in attrs.items():
        body[name] = {"type": "Property", "value": value}
    return body


def register(at: Broker, to: Broker, mode: str, eid: str, *more_ops: str, **info: Any) -> None:
    r = at.call("POST", "csourceRegistrations", {
        "type": "ContextSourceRegistration", "mode": mode,
        "operations": ["redirectionOps", *more_ops],
        "endpoint": to.url.removesuffix("/ngsi-ld/v1/"),
        "information": [{"entities": [{"id": eid, "type": "Vehicle"}], **info}]})
    assert r.status_code == 201, r.text


def local(node: Broker, eid: str) -> Any:
    r = node.client.get(node.url + f"entities/{eid}", params={"local": "true"})
    return r.json() if r.status_code == 200 else r.status_code


def test_exclusive_attributes_are_written_at_the_source_broker(
        pair: tuple[Broker, Broker]) -> None:
    front, source = pair
    register(front, source, "exclusive", V + "1", propertyNames=["speed"])
    r = front.call("POST", "entities", vehicle(V + "1", speed=50, brand="acme"))
    assert r.status_code == 201, r.text
    mine, theirs = local(front, V + "1"), local(source, V + "1")
    assert "speed" not in mine and mine["brand"]["value"] == "acme"
    assert theirs["speed"]["value"] == 50 and "brand" not in theirs

    r = front.call("PATCH", f"entities/{V}1/attrs", {"speed": {"type": "Property", "value": 60},
                                                     "brand": {"type": "Property", "value": "b"}})
    assert r.status_code == 204, r.text
    assert local(source, V + "1")["speed"]["value"] == 60
    assert local(front, V + "1")["brand"]["value"] == "b"
    assert "speed" not in local(front, V + "1")

    # the source refuses what it cannot do: 207 naming the registration
    r = front.call("POST", f"entities/{V}1/attrs?options=noOverwrite",
                   {"speed": {"type": "Property", "value": 70}})
    assert r.status_code == 207, r.text
    assert r.json()["notUpdated"][0]["registrationId"].startswith("urn:")
    assert local(source, V + "1")["speed"]["value"] == 60

    r = front.call("DELETE", f"entities/{V}1")
    assert r.status_code == 204, r.text
    assert local(front, V + "1") == 404 and local(source, V + "1") == 404


def test_redirect_writes_only_at_the_source_broker(pair: tuple[Broker, Broker]) -> None:
    front, source = pair
    register(front, source, "redirect", V + "2", "upsertBatch", "deleteBatch")
    r = front.call("POST", "entityOperations/upsert", [vehicle(V + "2", speed=1)])
    assert r.status_code == 201, r.text
    assert r.json() == [V + "2"]
    assert local(front, V + "2") == 404
    assert local(source, V + "2")["speed"]["value"] == 1
    r = front.call("POST", "entityOperations/delete", [V + "2"])
    assert r.status_code == 204, r.text
    assert local(source, V + "2") == 404


def test_a_circle_of_redirects_ends_in_loop_detected(pair: tuple[Broker, Broker]) -> None:
    front, source = pair
    register(front, source, "redirect", V + "3")
    register(source, front, "redirect", V + "3")
    r = front.call("POST", "entities", vehicle(V + "3", speed=1))
    # the source broker forwarded it back; the front broker saw itself in Via: 508 there,
    # which the source reported back as a failure of its part
    assert r.status_code == 207, r.text
    [error] = r.json()["errors"]
    assert error["error"]["status"] == 508
    assert local(front, V + "3") == 404 and local(source, V + "3") == 404
