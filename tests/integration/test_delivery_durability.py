"""The broker as a real process: killed with SIGKILL between a write and its delivery, it
delivers after a restart (at least once, never zero times); a hanging receiver does not
delay another subscriber. Everything goes through the HTTP API.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.broker_process import Broker, free_port, lamp, subscription
from tests.integration.receiver import WAIT, Receiver, entity_ids


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    env = {**os.environ, "URBANOS_NOTIFY_BACKOFF": "0.5", "URBANOS_NOTIFY_BACKOFF_MAX": "1",
           "URBANOS_NOTIFY_TIMEOUT": "3", "URBANOS_NOTIFY_MAX_ATTEMPTS": "1000"}
    b = Broker(f"sqlite:///{tmp_path}/broker.db", tmp_path / "broker.log", env=env)
    yield b
    b.stop()
    b.client.close()


def times_failed(broker: Broker, sid: str) -> int:
    shown = broker.call("GET", f"subscriptions/{sid}").json()
    return int(shown["notification"].get("timesFailed", 0))


def test_killed_after_a_failed_attempt_delivers_after_restart(broker: Broker) -> None:
    """The delivery row was written and tried once (receiver down); kill -9; restart."""
    port = free_port()  # the receiver is down at first
    broker.start()
    r = broker.call("POST", "subscriptions", subscription("urn:s:d", f"http://127.0.0.1:{port}/n"))
    assert r.status_code == 201, r.text
    assert broker.call("POST", "entities", lamp(1)).status_code == 201
    deadline = time.monotonic() + 10
    while times_failed(broker, "urn:s:d") == 0:
        assert time.monotonic() < deadline, "the broker never tried"
        time.sleep(0.05)
    broker.kill()
    with Receiver(port) as receiver:
        broker.start()
        got = receiver.wait("/n", 1, timeout=15)
        assert got, "the notification was lost"
        assert got[0].json()["data"][0]["id"] == "urn:ngsi-ld:Lamp:1"


def test_killed_right_after_the_write_delivers_after_restart(broker: Broker) -> None:
    """Killed as soon as the writes answered: whatever stage each change had reached
    (recorded, matched, being sent), every one is delivered once or more."""
    port = free_port()
    broker.start()
    r = broker.call("POST", "subscriptions", subscription("urn:s:d", f"http://127.0.0.1:{port}/n"))
    assert r.status_code == 201
    for n in range(20):
        assert broker.call("POST", "entities", lamp(n)).status_code == 201
    broker.kill()
    with Receiver(port) as receiver:
        broker.start()
        got = receiver.wait("/n", 20, timeout=20)
        ids = {r.json()["data"][0]["id"] for r in got}
        assert ids == {f"urn:ngsi-ld:Lamp:{n}" for n in range(20)}


def test_a_hanging_receiver_does_not_delay_another(broker: Broker) -> None:
    """While one receiver holds its notifications (and the sends never time out), the
    writes are answered and the other receiver gets all of its own; released, the held
    one gets its own."""
    broker.env["URBANOS_NOTIFY_TIMEOUT"] = "600"
    broker.start()
    with Receiver() as held, Receiver() as fine:
        for sid, uri in (("urn:s:held", f"{held.base}/held"), ("urn:s:ok", f"{fine.base}/ok")):
            assert broker.call("POST", "subscriptions", subscription(sid, uri)).status_code == 201
        assert broker.call("POST", "entities", lamp(0)).status_code == 201
        assert held.wait("/held", 1, timeout=WAIT), "nothing was sent"
        for n in range(1, 30):  # a write waiting for the held send would never be answered
            assert broker.call("POST", "entities", lamp(n)).status_code == 201
        got = fine.wait("/ok", 30, timeout=WAIT)
        assert entity_ids(got) == {f"urn:ngsi-ld:Lamp:{n}" for n in range(30)}
        held.release()  # only now: the writes and the other's notifications came first
        assert entity_ids(held.wait("/held", 30, timeout=WAIT)) == entity_ids(got)
        broker.stop()
