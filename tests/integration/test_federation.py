"""Distributed reads between real broker processes (clause 4.3.6): each broker registers
the others as context sources. Inclusive merge, auxiliary fallback, redirect, a ring of
three brokers registered to each other, and a source that never answers."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.broker_process import Broker

V1 = "urn:ngsi-ld:Vehicle:1"


@pytest.fixture(scope="module")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Broker, Broker, Broker]]:
    """Three brokers on SQLite files of their own, for the whole module; each test works in
    a tenant of its own."""
    root: Path = tmp_path_factory.mktemp("federation")
    nodes = tuple(Broker(f"sqlite:///{root}/{n}.db", root / f"{n}.log") for n in "abc")
    try:
        for node in nodes:
            node.start()
        yield nodes  # type: ignore[misc]
    finally:
        for node in nodes:
            node.stop()
            node.client.close()


@pytest.fixture
def tenant() -> str:
    return f"fed{uuid.uuid4().hex[:10]}"


def call(broker: Broker, tenant: str, method: str, path: str, body: Any = None,
         **kwargs: Any) -> httpx.Response:
    return broker.client.request(method, broker.url + path, json=body,
                                 headers={"NGSILD-Tenant": tenant}, **kwargs)


def vehicle(eid: str, **attrs: Any) -> dict[str, Any]:
    return {"id": eid, "type": "Vehicle",
            **{k: {"type": "Property", "value": v} for k, v in attrs.items()}}


def register(at: Broker, tenant: str, endpoint: str, *, mode: str = "inclusive",
             rid: str | None = None, **extra: Any) -> None:
    body = {"id": rid or f"urn:ngsi-ld:R:{uuid.uuid4().hex}", "type": "ContextSourceRegistration",
            "endpoint": endpoint, "information": [{"entities": [{"type": "Vehicle"}]}],
            "mode": mode, "tenant": tenant, **extra}  # the same tenant at the source
    r = call(at, tenant, "POST", "csourceRegistrations", body)
    assert r.status_code == 201, r.text


def root(broker: Broker) -> str:
    return f"http://127.0.0.1:{broker.port}"


def test_inclusive_sources_are_merged(brokers: tuple[Broker, Broker, Broker],
                                      tenant: str) -> None:
    a, b, _ = brokers
    assert call(a, tenant, "POST", "entities", vehicle(V1, speed=10)).status_code == 201
    assert call(b, tenant, "POST", "entities",
                vehicle(V1, brand="Volvo")).status_code == 201
    assert call(b, tenant, "POST", "entities",
                vehicle("urn:ngsi-ld:Vehicle:2", brand="Seat")).status_code == 201
    register(a, tenant, root(b))
    one = call(a, tenant, "GET", f"entities/{V1}")
    assert one.status_code == 200, one.text
    assert one.json()["speed"]["value"] == 10 and one.json()["brand"]["value"] == "Volvo"
    many = call(a, tenant, "GET", "entities", params={"type": "Vehicle", "count": "true"})
    assert many.headers["NGSILD-Results-Count"] == "2"
    assert sorted(e["id"] for e in many.json()) == [V1, "urn:ngsi-ld:Vehicle:2"]
    local = call(a, tenant, "GET", "entities", params={"type": "Vehicle", "local": "true"})
    assert [e["id"] for e in local.json()] == [V1]


def test_auxiliary_sources_only_fill_gaps(brokers: tuple[Broker, Broker, Broker],
                                          tenant: str) -> None:
    a, b, _ = brokers
    assert call(a, tenant, "POST", "entities", vehicle(V1, brand="here")).status_code == 201
    assert call(b, tenant, "POST", "entities",
                vehicle(V1, brand="there", colour="red")).status_code == 201
    register(a, tenant, root(b), mode="auxiliary")
    got = call(a, tenant, "GET", f"entities/{V1}").json()
    assert got["brand"]["value"] == "here" and got["colour"]["value"] == "red"


def test_redirect_sources_answer_for_the_broker(brokers: tuple[Broker, Broker, Broker],
                                                tenant: str) -> None:
    a, b, _ = brokers
    assert call(b, tenant, "POST", "entities", vehicle(V1, speed=7)).status_code == 201
    register(a, tenant, root(b), mode="redirect")
    got = call(a, tenant, "GET", f"entities/{V1}")
    assert got.status_code == 200 and got.json()["speed"]["value"] == 7
    assert call(a, tenant, "GET", f"entities/{V1}",
                params={"local": "true"}).status_code == 404


def test_a_ring_of_three_brokers_answers_once(brokers: tuple[Broker, Broker, Broker],
                                              tenant: str) -> None:
    a, b, c = brokers
    for n, node in enumerate(brokers):
        r = call(node, tenant, "POST", "entities", vehicle(f"urn:ngsi-ld:Vehicle:r{n}", speed=n))
        assert r.status_code == 201
    register(a, tenant, root(b))
    register(b, tenant, root(c))
    register(c, tenant, root(a))
    started = time.monotonic()
    r = call(a, tenant, "GET", "entities", params={"type": "Vehicle", "count": "true"})
    assert time.monotonic() - started < 5
    assert r.status_code == 200, r.text
    assert sorted(e["id"] for e in r.json()) == [f"urn:ngsi-ld:Vehicle:r{n}" for n in range(3)]
    assert r.headers["NGSILD-Results-Count"] == "3"
    assert "NGSILD-Warning" not in r.headers


class Silent:
    """A TCP server that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.held.append(conn)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        for conn in self.held:
            conn.close()
        self.sock.close()


def test_a_silent_source_delays_a_query_by_its_timeout_at_most(
    brokers: tuple[Broker, Broker, Broker], tenant: str
) -> None:
    a, b, _ = brokers
    assert call(b, tenant, "POST", "entities", vehicle(V1, speed=1)).status_code == 201
    silent = Silent()
    try:
        register(a, tenant, f"http://127.0.0.1:{silent.port}", management={"timeout": 800})
        register(a, tenant, root(b))
        started = time.monotonic()
        r = call(a, tenant, "GET", "entities", params={"type": "Vehicle"})
        took = time.monotonic() - started
        assert 0.7 < took < 3.0
        assert r.status_code == 200
        assert [e["id"] for e in r.json()] == [V1]
        assert r.headers["NGSILD-Warning"].startswith("199 ")
    finally:
        silent.close()
