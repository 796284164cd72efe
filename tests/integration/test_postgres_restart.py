"""A broker outlives a restart of its PostgreSQL server, clean (``-m fast``) or a crash
(``-m immediate``): once the server is back, every request is answered as before, nothing
committed is lost, and notifications flow again."""

from __future__ import annotations

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
