"""Two real broker processes on one PostgreSQL database behave as one broker: a subscription
created through node A fires for a write through node B, exactly once; the outbox is
drained by both nodes without double delivery; a subscription deleted through A stops
firing for writes through B (cross-node index invalidation). Fresh database per test.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import PG_ADMIN, postgres_enabled
from tests.integration.broker_process import Broker
from tests.integration.receiver import Receiver

#: how long to keep counting after the expected notifications arrived (duplicates show up)
SETTLE = 1.0


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database with PostGIS for one test."""
    if not postgres_enabled():
        pytest.skip("URBANOS_TEST_POSTGRES=0")
    name = f"urbanos_nodes_{os.getpid()}_{time.monotonic_ns()}"
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    yield url
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def nodes(pg_url: str, tmp_path: Path) -> Iterator[tuple[Broker, Broker]]:
    a, b = Broker(pg_url, tmp_path / "a.log"), Broker(pg_url, tmp_path / "b.log")
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        for node in (a, b):
            node.stop()
            node.client.close()


def subscription(sid: str, uri: str) -> dict[str, Any]:
    return {"id": sid, "type": "Subscription", "entities": [{"type": "Lamp"}],
            "notification": {"endpoint": {"uri": uri, "accept": "application/json"}}}


def lamp(n: int) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:Lamp:{n}", "type": "Lamp",
            "level": {"type": "Property", "value": n}}


def notified_ids(receiver: Receiver, prefix: str) -> Counter[str]:
    return Counter(e["id"] for r in receiver.on(prefix) for e in r.json()["data"])


def settle(receiver: Receiver, prefix: str, count: int, timeout: float = 15) -> Counter[str]:
    """Wait for ``count`` notifications, keep listening ``SETTLE`` more seconds, count."""
    receiver.wait(prefix, count, timeout=timeout)
    time.sleep(SETTLE)
    return notified_ids(receiver, prefix)


def test_subscription_on_a_fires_once_for_a_write_on_b(nodes: tuple[Broker, Broker]) -> None:
    a, b = nodes
    with Receiver() as receiver:
        r = a.call("POST", "subscriptions", subscription("urn:s:1", f"{receiver.base}/n"))
        assert r.status_code == 201, r.text
        time.sleep(0.2)  # the invalidation travels by NOTIFY, after the commit
        assert b.call("POST", "entities", lamp(1)).status_code == 201
        assert settle(receiver, "/n", 1) == Counter({"urn:ngsi-ld:Lamp:1": 1})
        # the statistics are shared too: whichever node sent it, both show it
        shown = b.call("GET", "subscriptions/urn:s:1").json()
        assert shown["notification"]["timesSent"] == 1


def test_a_subscription_created_on_a_reaches_the_index_b_already_had(
    nodes: tuple[Broker, Broker],
) -> None:
    """B has matched a change of the tenant (its index is loaded, empty) before A creates
    the subscription; A then stops, so only B can match the next write: it fires only if
    A's NOTIFY dropped B's stale index."""
    a, b = nodes
    with Receiver() as receiver:
        a.stop()
        assert b.call("POST", "entities", lamp(0)).status_code == 201
        deadline = time.monotonic() + 5
        while b.call("GET", "entities/urn:ngsi-ld:Lamp:0").status_code != 200:
            assert time.monotonic() < deadline
        time.sleep(0.3)  # B's changes loop has matched Lamp:0 against no subscription
        a.start()
        r = a.call("POST", "subscriptions", subscription("urn:s:4", f"{receiver.base}/i"))
        assert r.status_code == 201, r.text
        a.stop()
        time.sleep(0.2)
        assert b.call("POST", "entities", lamp(1)).status_code == 201
        assert settle(receiver, "/i", 1) == Counter({"urn:ngsi-ld:Lamp:1": 1})


def test_writes_over_both_nodes_are_each_delivered_once(nodes: tuple[Broker, Broker]) -> None:
    a, b = nodes
    with Receiver() as receiver:
        assert b.call("POST", "subscriptions",
                      subscription("urn:s:2", f"{receiver.base}/m")).status_code == 201
        time.sleep(0.2)
        for n in range(50):
            node = a if n % 2 else b
            assert node.call("POST", "entities", lamp(n)).status_code == 201
        got = settle(receiver, "/m", 50)
        assert got == Counter({f"urn:ngsi-ld:Lamp:{n}": 1 for n in range(50)})


def test_a_subscription_deleted_on_a_stops_firing_on_b(nodes: tuple[Broker, Broker]) -> None:
    a, b = nodes
    with Receiver() as receiver:
        assert a.call("POST", "subscriptions",
                      subscription("urn:s:3", f"{receiver.base}/d")).status_code == 201
        time.sleep(0.2)
        assert b.call("POST", "entities", lamp(1)).status_code == 201
        assert receiver.wait("/d", 1, timeout=10)
        assert a.call("DELETE", "subscriptions/urn:s:3").status_code == 204
        time.sleep(0.2)
        for n in range(2, 6):  # both nodes' delivery loops see these changes
            assert b.call("POST", "entities", lamp(n)).status_code == 201
        time.sleep(SETTLE)
        assert notified_ids(receiver, "/d") == Counter({"urn:ngsi-ld:Lamp:1": 1})
