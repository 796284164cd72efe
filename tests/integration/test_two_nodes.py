"""Two real broker processes on one PostgreSQL database behave as one broker: a subscription
created through node A fires for a write through node B, exactly once; the outbox is
drained by both nodes without double delivery; a subscription deleted through A stops
firing for writes through B (cross-node index invalidation); the @context registry is one
registry; periodic notifications are sent by one node at a time, and by the other once it
is killed; a node's subscription indexes survive a lost listener session and a start while
the other node creates subscriptions. Fresh database per test.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.broker_process import Broker, lamp, subscription
from tests.integration.receiver import Received, Receiver
from urbanos.services.notifications import PERIODIC_JOB
from urbanos.storage.postgres.listen import LEAD_LOCK, _job_key

#: how long to keep counting after the expected notifications arrived (duplicates show up)
SETTLE = 1.0


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


CTX = {"@context": {"A1": "urn:ngsi-ld:attributes:A1"}}
ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"


def link(url: str) -> dict[str, str]:
    return {"Link": f'<{url}>; rel="http://www.w3.org/ns/json-ld#context"'}


def test_the_context_registry_is_one_registry(nodes: tuple[Broker, Broker]) -> None:
    """Added on A: served, listed and used by B at once; its counts add up over the nodes;
    deleted on B: gone on A, which also stops expanding terms with it."""
    a, b = nodes
    r = a.call("POST", "jsonldContexts", CTX)
    assert r.status_code == 201, r.text
    path = r.headers["location"].removeprefix("/ngsi-ld/v1/")
    assert b.call("GET", path).json() == CTX  # read from the store: no wait for NOTIFY
    url = b.call("GET", path + "?details=true").json()["URL"]  # a use counted by B
    assert b.call("GET", "jsonldContexts?kind=Hosted").json() == [url]
    entity = {"id": "urn:ngsi-ld:T:1", "type": "T", "A1": {"type": "Property", "value": 1}}
    r = b.client.post(b.url + "entities", json=entity, headers=link(url))  # B uses it
    assert r.status_code == 201, r.text
    r = a.client.get(a.url + "entities/urn:ngsi-ld:T:1", headers=link(url))  # A uses it
    assert r.json()["A1"]["value"] == 1
    b.stop()  # a stopping node adds its counts to the stored ones
    details = a.call("GET", path + "?details=true").json()
    assert details["numberOfHits"] == 4  # B: served, described, written with; A: read with
    b.start()
    assert b.call("DELETE", path).status_code == 204
    r = a.call("GET", path)
    assert r.status_code == 404 and r.json()["type"] == ERRORS + "ResourceNotFound"
    assert a.call("GET", "jsonldContexts?kind=Hosted").json() == []
    time.sleep(0.3)  # A drops the terms it built from the document when B's NOTIFY arrives
    r = a.client.get(a.url + "entities/urn:ngsi-ld:T:1", headers=link(url))
    assert r.status_code == 504 and r.json()["type"] == ERRORS + "LdContextNotAvailable"


def periodic(sid: str, uri: str, interval: float) -> dict[str, Any]:
    return {"id": sid, "type": "Subscription", "entities": [{"type": "Lamp"}],
            "timeInterval": interval,
            "notification": {"endpoint": {"uri": uri, "accept": "application/json"}}}


def leader_pid(pg_url: str, job: str = PERIODIC_JOB) -> int:
    """The broker process that holds the lead lock of ``job`` (its session is named after
    its pid); other jobs (the expiry sweeper) have their own leaders."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(
            """SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)
               WHERE l.locktype = 'advisory' AND l.classid = %s::bigint::oid
               AND l.objid = %s::bigint::oid AND l.granted
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
            (LEAD_LOCK, _job_key(job) & 0xFFFFFFFF),
        ).fetchall()
    assert len(rows) == 1, rows
    return int(rows[0][0].rsplit("pid=", 1)[1])


def arrivals(receiver: Receiver, prefix: str, start: float, end: float) -> list[Received]:
    return [r for r in receiver.on(prefix) if start <= r.at < end]


def assert_one_sender(got: list[Received], interval: float, window: float) -> None:
    """The rate of one node: about window / interval notifications, never two at once."""
    expected = window / interval
    assert expected - 2 <= len(got) <= expected + 1, [round(r.at, 2) for r in got]
    gaps = [later.at - earlier.at for earlier, later in zip(got, got[1:], strict=False)]
    assert all(g > interval / 2 for g in gaps), gaps


def test_periodic_notifications_come_from_one_node_then_from_the_other(
    nodes: tuple[Broker, Broker], pg_url: str,
) -> None:
    a, b = nodes
    interval, window = 2.0, 10.0
    with Receiver() as receiver:
        assert b.call("POST", "entities", lamp(1)).status_code == 201
        r = a.call("POST", "subscriptions", periodic("urn:s:p", f"{receiver.base}/p", interval))
        assert r.status_code == 201, r.text
        start = time.time()
        time.sleep(window + 0.5)
        assert_one_sender(arrivals(receiver, "/p", start, start + window), interval, window)
        assert a.proc is not None
        leader, other = (a, b) if leader_pid(pg_url) == a.proc.pid else (b, a)
        leader.kill()
        killed = time.time()
        time.sleep(window + 0.5)
        after = arrivals(receiver, "/p", killed, killed + window)
        assert after and after[0].at - killed < interval + 2.5  # taken over within a beat
        assert_one_sender(after, interval, window)
        assert other.proc is not None and leader_pid(pg_url) == other.proc.pid


def node_backends(pg_url: str, node: Broker) -> list[int]:
    """The listener sessions of a broker process (named after its pid)."""
    assert node.proc is not None
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
            " AND datname = current_database()", (f"urbanos node pid={node.proc.pid}",),
        ).fetchall()
    return [int(r[0]) for r in rows]


def test_a_subscription_deleted_while_b_reconnects_never_fires_on_b(
    nodes: tuple[Broker, Broker], pg_url: str,
) -> None:
    """B's listener session is cut and A deletes a subscription before B listens again:
    B missed the announcement, and its reload after reconnecting drops the subscription."""
    a, b = nodes
    with Receiver() as receiver:
        for sid, path in (("urn:s:gone", "/g"), ("urn:s:kept", "/k")):
            r = a.call("POST", "subscriptions", subscription(sid, f"{receiver.base}{path}"))
            assert r.status_code == 201, r.text
        time.sleep(0.2)
        assert b.call("POST", "entities", lamp(1)).status_code == 201
        receiver.wait("/g", 1)
        [cut] = node_backends(pg_url, b)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (cut,))
        assert a.call("DELETE", "subscriptions/urn:s:gone").status_code == 204
        deadline = time.monotonic() + 15
        while node_backends(pg_url, b) in ([], [cut]):
            assert time.monotonic() < deadline, "B did not listen again"
            time.sleep(0.05)
        a.stop()  # only B matches the next changes
        time.sleep(0.5)  # B's reload after reconnecting
        for n in range(2, 5):
            assert b.call("POST", "entities", lamp(n)).status_code == 201
        settle(receiver, "/k", 4)
        assert notified_ids(receiver, "/g") == Counter({"urn:ngsi-ld:Lamp:1": 1})


def test_a_node_started_while_another_creates_subscriptions_has_them_all(
    pg_url: str, tmp_path: Path,
) -> None:
    """A creates subscriptions without pause while B starts; then only B is left: every
    subscription A created fires for B's write, once."""
    a, b = Broker(pg_url, tmp_path / "a.log"), Broker(pg_url, tmp_path / "b.log")
    created: list[str] = []
    stop = threading.Event()
    try:
        a.start()
        with Receiver() as receiver:

            def create() -> None:
                while not stop.is_set():
                    sid = f"urn:s:{len(created)}"
                    r = a.call("POST", "subscriptions", subscription(sid, f"{receiver.base}/c"))
                    assert r.status_code == 201, r.text
                    created.append(sid)

            creating = threading.Thread(target=create)
            creating.start()
            try:
                b.start()
            finally:
                stop.set()
                creating.join()
            a.stop()
            time.sleep(0.5)  # the last announcements reach B
            assert b.call("POST", "entities", lamp(1)).status_code == 201
            got = settle(receiver, "/c", len(created))
            assert got == Counter({"urn:ngsi-ld:Lamp:1": len(created)})
            fired = sorted(r.json()["subscriptionId"] for r in receiver.on("/c"))
            assert fired == sorted(created)
    finally:
        for node in (a, b):
            node.stop()
            node.client.close()
