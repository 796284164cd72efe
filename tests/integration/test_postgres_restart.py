"""A broker outlives a restart of its PostgreSQL server, clean (``-m fast``) or a crash
(``-m immediate``): once the server is back, every request is answered as before, nothing
committed is lost, and notifications flow again."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.broker_process import Broker, lamp, subscription
from tests.integration.private_postgres import PrivatePostgres
from tests.integration.receiver import Receiver


def answer(broker: Broker, method: str, path: str, body: Any = None) -> int | str:
    """The status, or what went wrong on the connection."""
    try:
        return broker.call(method, path, body).status_code
    except httpx.HTTPError as exc:
        return type(exc).__name__


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_broker_serves_as_before_once_its_database_is_back(
    private_pg: PrivatePostgres, receiver: Receiver, tmp_path: Path, mode: str,
) -> None:
    broker = Broker(private_pg.create_database("urbanos"), tmp_path / "broker.log")
    try:
        broker.start()
        r = broker.call("POST", "subscriptions", subscription("urn:s:r", f"{receiver.base}/r"))
        assert r.status_code == 201, r.text
        for n in range(8):  # uses several pooled connections
            assert broker.call("POST", "entities", lamp(n)).status_code == 201
        assert len(receiver.wait("/r", 8)) == 8
        private_pg.restart(mode)
        answers = [answer(broker, "GET", f"entities/urn:ngsi-ld:Lamp:{n}") for n in range(8)]
        answers += [answer(broker, "POST", "entities", lamp(n)) for n in range(8, 16)]
        assert answers == [200] * 8 + [201] * 8, answers
        got = receiver.wait("/r", 16, timeout=15)
        assert {e["id"] for r in got for e in r.json()["data"]} == {
            f"urn:ngsi-ld:Lamp:{n}" for n in range(16)}
    finally:
        broker.stop()
        broker.client.close()


def test_while_the_database_is_down_requests_get_503_and_the_broker_recovers_alone(
    private_pg: PrivatePostgres, receiver: Receiver, tmp_path: Path,
) -> None:
    """No 500 and no hang while the server is stopped: a 503 ProblemDetails saying when to
    try again; once the server is back the same process serves and notifies again."""
    log = tmp_path / "broker.log"
    broker = Broker(private_pg.create_database("urbanos"), log)
    try:
        broker.start()
        r = broker.call("POST", "subscriptions", subscription("urn:s:r", f"{receiver.base}/r"))
        assert r.status_code == 201, r.text
        assert broker.call("POST", "entities", lamp(0)).status_code == 201
        assert len(receiver.wait("/r", 1)) == 1
        private_pg.stop("fast")
        try:
            down = [broker.call("GET", "entities/urn:ngsi-ld:Lamp:0"),
                    broker.call("POST", "entities", lamp(1)),
                    broker.call("GET", "entities?type=Lamp")]
        finally:
            private_pg.start()
        for r in down:
            assert r.status_code == 503, r.text
            assert r.headers["content-type"] == "application/json"
            assert int(r.headers["Retry-After"]) > 0
            problem = r.json()
            assert problem["type"] == "https://uri.etsi.org/ngsi-ld/errors/InternalError"
            assert problem["status"] == 503
            assert problem["title"] and "unavailable" in problem["detail"]
        seen = []
        deadline = time.monotonic() + 60
        while not seen or seen[-1] != 200:  # the pool reconnects on its own schedule
            assert time.monotonic() < deadline, seen
            seen.append(answer(broker, "GET", "entities/urn:ngsi-ld:Lamp:0"))
            assert seen[-1] in (200, 503), seen
        assert broker.call("GET", "entities/urn:ngsi-ld:Lamp:1").status_code == 404
        assert broker.call("POST", "entities", lamp(2)).status_code == 201
        got = receiver.wait("/r", 2, timeout=30)
        assert [e["id"] for e in got[-1].json()["data"]] == ["urn:ngsi-ld:Lamp:2"]
        text = log.read_text()
        assert text.count("database unavailable") == 1, text
        assert "unhandled error" not in text, text
    finally:
        broker.stop()
        broker.client.close()
